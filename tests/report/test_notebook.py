"""notebooks/analysis.ipynb runs top to bottom on a small sweep and is committed clean."""

from __future__ import annotations

import re

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO
from tests.data.test_subgroup import write_subgroup_run
from tests.report.test_report import build_sweep

NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


def outputs_of(notebook: nbformat.NotebookNode, mime: str) -> list[str]:
    return [
        output.get("data", {}).get(mime, "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    ]


def test_notebook_runs_on_a_sweep(tmp_path, monkeypatch) -> None:
    # Where runs write by default: <RDD_LOG_DIR>/distill/multiruns (conf/paths/default.yaml).
    sweep = build_sweep(tmp_path / "logs" / "distill" / "multiruns" / "sweep")
    write_subgroup_run(sweep / "c" / "0", 0, 60.0, 20.0)  # the known rare subgroup benchmark
    monkeypatch.delenv("RDD_RUNS", raising=False)  # the kernel inherits this environment
    monkeypatch.setenv("RDD_LOG_DIR", str(tmp_path / "logs"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    # Cells padded to the widest one: compare with single spaces.
    markdown = re.sub(" +", " ", "\n".join(outputs_of(notebook, "text/markdown")))
    assert "| dataset | method | ipc | risk | seeds | clean" in markdown
    assert "52.00 ± 1.63" in markdown
    assert "| worst cluster | invert group | worst group |" in markdown
    assert "| digits+invert | dm | 10 | none | 1 | 60.00 ± 1.00 |" in markdown
    # grids at two IPCs, one base-vs-robust cluster plot, the IPC plot
    assert sum(bool(png) for png in outputs_of(notebook, "image/png")) == 4
    assert not (sweep / "report").exists()  # the notebook only reads


def test_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert notebook.cells[0].source.splitlines()[-2:] == [
        'LOG_DIR = os.environ.get("RDD_LOG_DIR", "logs")',
        'RUNS = os.environ.get("RDD_RUNS", os.path.join(LOG_DIR, "distill", "multiruns"))',
    ]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
        assert "execution" not in cell.metadata
    assert "widgets" not in notebook.metadata

"""Outputs are written atomically: a temporary file beside the target, then a rename; a torch
file that is refused is named for what it holds."""

from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path

import pytest
import torch

import rdd.utils.io
from rdd.config.errors import UserError
from rdd.run import run
from rdd.synset import SyntheticSet
from rdd.utils.io import atomic_write, write_text
from tests.conftest import TINY, compose_config


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    target = write_text(tmp_path / "metrics.json", "old")

    def half_then_crash(tmp):
        tmp.write_text("half of the new cont")
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_an_atomic_write_gets_the_usual_file_mode(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "report.md", "table")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0o600


def test_every_file_of_a_run_arrives_by_rename(tmp_path, monkeypatch) -> None:
    renamed = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renamed.append(os.path.basename(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(rdd.utils.io.os, "replace", recording_replace)
    run(compose_config(*TINY, "matching=dc", "logger=none", output_dir=tmp_path))
    written = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert written == {
        "synset.pt",
        "synset.png",
        "config.yaml",
        "metrics.json",
        "eval_details.json",
        "summary.txt",
    }
    assert written <= set(renamed)


class RunsCode:
    """Unpickling this would create a file: the loaders must refuse it unread."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def refused_files(tmp: Path) -> dict[str, Path]:
    """What a user may pass for a torch file, each refused for another reason."""
    tensors = {"images": torch.zeros(2, 1, 4, 4), "labels": torch.tensor([0, 1])}
    files = {name: tmp / f"{name}.pt" for name in REFUSALS}
    files["random bytes"].write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    code = {"images": RunsCode(tmp / "executed")}
    files["code in a pickle"].write_bytes(pickle.dumps(code))  # pickle.dump's protocol 4
    files["code in an old pickle"].write_bytes(pickle.dumps(code, protocol=0))
    torch.save(code, files["code in a torch.save archive"])
    torch.save(code, files["code in torch's legacy format"], _use_new_zipfile_serialization=False)
    torch.save(tensors, files["truncated archive"])
    whole = files["truncated archive"].read_bytes()
    files["truncated archive"].write_bytes(whole[: len(whole) // 2])
    files["tensors in a plain pickle"].write_bytes(pickle.dumps(tensors))
    return files


# What each refused file is called (rdd.utils.io.refusal).
REFUSALS = {
    "random bytes": "is neither a torch.save file nor a pickle (its bytes are random or damaged)",
    "code in a pickle": "holds code (",
    "code in an old pickle": "holds code (",
    "code in a torch.save archive": "holds code (",
    "code in torch's legacy format": "holds code (",
    "truncated archive": "is a damaged or truncated torch.save archive",
    "tensors in a plain pickle": "is a pickle, not a torch.save file",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_torch_file_is_named_for_what_it_holds(case, tmp_path) -> None:
    """One clause from the file's contents, never torch's cut-off advice to load it unsafely,
    and no torch warnings before it; the code is not run."""
    from rdd.imports.files import load_torch

    path = refused_files(tmp_path)[case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserError) as refused:
            load_torch(path)
    message = str(refused.value)
    assert message.startswith(f"'{path}' {REFUSALS[case]}"), message
    if "code" in case:  # named as the pickle names it: Path.touch, or getattr(Path, "touch")
        assert (
            "pathlib.Path" in message and "that loading would run, so it was not loaded;" in message
        )
    assert "PyTorch" not in message and "weights_only" not in message
    assert "\n" not in message
    assert [str(w.message) for w in caught] == []
    assert not (tmp_path / "executed").exists()


def test_a_synset_that_holds_code_is_refused_in_those_words(tmp_path) -> None:
    path = refused_files(tmp_path)["code in a torch.save archive"]
    with pytest.raises(UserError, match=r"holds code \(.*pathlib.Path.*not loaded"):
        SyntheticSet.load(path)
    assert not (tmp_path / "executed").exists()

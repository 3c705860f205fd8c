"""``matching.compile_nets``: what ``auto`` decides, and the refusals (no compilation here:
the backend's answer is stubbed; tests/nets/test_compiled.py compiles for real)."""

from __future__ import annotations

import pytest

from rdd.distill.fit import compile_where_it_repays
from rdd.matching.distribution import DistributionMatching
from rdd.matching.gradient import GradientMatching
from rdd.nets import compiled
from rdd.nets.compiled import AUTO_MIN_PASSES, first_order, resolve_compile
from tests.test_bad_input import call_cli, snapshot

FAILS = "CppCompileError: no C++ compiler"


@pytest.fixture
def backend(monkeypatch):
    """``backend(problem)``: torch.compile works (None) or fails with ``problem``."""

    def set_problem(problem: str | None) -> None:
        monkeypatch.setattr(compiled, "compile_problem", lambda: problem)

    return set_problem


def test_auto_compiles_cifar_size_runs_of_enough_passes_only(backend) -> None:
    backend(None)
    assert resolve_compile("auto", (32, 32), AUTO_MIN_PASSES) == (True, "")
    assert resolve_compile("auto", (16, 16), 10 * AUTO_MIN_PASSES) == (False, "")  # digits
    assert resolve_compile("auto", (32, 32), AUTO_MIN_PASSES - 1) == (False, "")
    assert resolve_compile(True, (8, 8), 1) == (True, "") and resolve_compile(
        False, (64, 64), 10**6
    ) == (False, "")


def test_auto_falls_back_to_eager_with_a_notice_where_compiling_fails(backend) -> None:
    backend(FAILS)
    on, notice = resolve_compile("auto", (32, 32), 10 * AUTO_MIN_PASSES)
    assert not on and FAILS in notice and "compile_nets=auto runs eager" in notice


def test_a_run_settles_auto_for_the_matcher_and_idms_queue(backend) -> None:
    backend(None)
    dc = GradientMatching(iterations=10)  # outer loop 10 at ipc 10: 100 passes
    compile_where_it_repays(dc, (32, 32), ipc=10)
    assert dc.compile_nets is True
    idm = DistributionMatching(name="idm", iterations=100, factor=2, queue_size=2)
    compile_where_it_repays(idm, (32, 32), ipc=10)
    assert idm.compile_nets is True and idm.queue.compile_nets is True
    small = DistributionMatching(iterations=300)
    compile_where_it_repays(small, (16, 16), ipc=10)
    assert small.compile_nets is False


def test_auto_runs_eager_on_a_gpu_where_compiling_was_slower(backend) -> None:
    """benchmarks/README.md "On a GPU": on one H100 every compiled item was slower."""
    backend(None)
    assert resolve_compile("auto", (32, 32), 10 * AUTO_MIN_PASSES, "cuda") == (False, "")
    assert resolve_compile(True, (32, 32), 1, "cuda") == (True, "")  # asked for: compiled
    idm = DistributionMatching(name="idm", iterations=100, factor=2, queue_size=2)
    compile_where_it_repays(idm, (32, 32), ipc=10, device_type="cuda")
    assert idm.compile_nets is False and idm.queue.compile_nets is False


def test_an_unsettled_auto_runs_eager() -> None:
    net = object()
    assert first_order(net, "auto") is net


def test_an_unknown_value_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    with pytest.raises(ValueError, match="true, false or auto"):
        GradientMatching(compile_nets="yes")
    code, lines = call_cli(
        "rdd.run",
        ["matching=dm", "matching.compile_nets=maybe", f"hydra.run.dir={tmp_path / 'run'}"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and len(lines) == 1 and "matching.compile_nets=auto" in lines[0]
    assert not (tmp_path / "run").exists()


def test_true_where_compiling_fails_is_refused_before_any_work(
    backend, tmp_path, monkeypatch, capsys
) -> None:
    backend(FAILS)
    (tmp_path / "keep.txt").write_text("written before\n")
    before = snapshot(tmp_path)
    code, lines = call_cli(
        "rdd.run",
        ["matching=dm", "matching.compile_nets=true", f"hydra.run.dir={tmp_path / 'run'}"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and len(lines) == 1, lines
    assert FAILS in lines[0] and "set matching.compile_nets=auto or false" in lines[0]
    assert snapshot(tmp_path) == before

"""Outputs are written atomically: a temporary file beside the target, then a rename."""

from __future__ import annotations

import os

import pytest

import rdd.io
from rdd.io import atomic_write, write_text
from rdd.run import run
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

    monkeypatch.setattr(rdd.io.os, "replace", recording_replace)
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

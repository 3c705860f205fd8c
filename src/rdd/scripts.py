"""Console scripts (pyproject.toml ``[project.scripts]``): ``rdd-run``, ``rdd-evaluate``,
``rdd-buffer``, ``rdd-report`` do what ``python -m rdd.<name>`` does, with the same one-line
errors. Each imports its entry point when called, so that ``rdd-report`` does not pay for
what ``rdd-run`` imports."""

from __future__ import annotations

import importlib

from rdd.config.cli import run_cli


def _hydra_entry(module: str) -> None:
    run_cli(importlib.import_module(module).main)


def run() -> None:
    _hydra_entry("rdd.run")


def evaluate() -> None:
    _hydra_entry("rdd.evaluate")


def buffer() -> None:
    _hydra_entry("rdd.buffer")


def report() -> None:
    importlib.import_module("rdd.report.__main__").main()

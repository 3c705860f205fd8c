"""trainer.keep_host_memory: freed host memory is reused, not faulted in afresh."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[2] / "src"

# Page faults of a 48 MiB tensor written once, after a 64 MiB one was written and freed:
# without the setting glibc maps a block this large afresh (12,288 pages to fault in); with
# it the block comes out of the freed one, whose pages are mapped already. "mapped": both
# inside mapped_while_long_lived; "mapped-then-kept": a mapped section first, then both after it.
PROBE = """
import contextlib, resource, sys, torch
from rdd.utils.host_memory import keep_freed_host_memory, mapped_while_long_lived
mode = sys.argv[1]
if mode != "release":
    assert keep_freed_host_memory()
def faults_of_a_fresh_tensor(mib):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(mib * 2**20 // 4)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
if mode == "mapped-then-kept":
    with mapped_while_long_lived():
        faults_of_a_fresh_tensor(64)
with mapped_while_long_lived() if mode == "mapped" else contextlib.nullcontext():
    faults_of_a_fresh_tensor(64)
    print(faults_of_a_fresh_tensor(48))
"""


def faults(mode: str) -> int:
    env = os.environ | {"PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting acts on glibc only")
def test_kept_host_memory_is_reused_without_page_faults() -> None:
    """A process in its own right (the setting is process-wide): kept, the second tensor
    reuses the first one's pages; given back, it faults in every one of its 12,288 pages."""
    assert faults("keep") < 1000
    assert faults("release") > 12_000


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting acts on glibc only")
def test_a_long_lived_section_maps_its_blocks_and_the_heap_is_kept_after_it() -> None:
    """Inside mapped_while_long_lived a freed block is given back, so the next one faults in
    afresh; after the section freed blocks are kept again."""
    assert faults("mapped") > 12_000
    assert faults("mapped-then-kept") < 1000


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting acts on glibc only")
def test_keeping_host_memory_leaves_the_synthetic_set_bitwise_unchanged(tmp_path) -> None:
    """Where memory comes from changes no value: a DM run gives the same set either way."""
    from rdd.synset import SyntheticSet
    from tests.conftest import TINY

    images = []
    for keep in ("true", "false"):
        out = tmp_path / keep
        cmd = [sys.executable, "-m", "rdd.run", *TINY, "matching=dm", "matching.iterations=3"]
        cmd += [f"trainer.keep_host_memory={keep}", "print_config=false", f"hydra.run.dir={out}"]
        env = os.environ | {"PYTHONPATH": str(SRC)}
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        images.append(SyntheticSet.load(out / "synset.pt").images)
    assert torch.equal(images[0], images[1])

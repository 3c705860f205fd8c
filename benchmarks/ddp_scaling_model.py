"""A scaling model on paper from bench_ddp_comm.py's measurements (issue 18.6).

    .venv/bin/python benchmarks/ddp_scaling_model.py /tmp/comm.json [more.json ...]

For each measured (problem, ipc, method, mode) row: what one iteration (a DC outer step, a DM
iteration) would spend communicating at 8, 64 and 512 GPUs, and the per-class compute time at
which that communication would equal the compute a GPU does per iteration.

The collectives are all-reduces, modelled as NCCL runs them: a latency of a tree,
``2 log2(N) alpha``, plus the bandwidth term of a ring, ``2 (N - 1) / N * bytes / B``, per
call (a pure ring's latency, ``2 (N - 1) alpha``, would be 50x worse at 512 GPUs), with the
call count and bytes per iteration measured on 2 ranks (neither depends on the number of
ranks: every rank reduces the same tensors). Assumed links (not measured: there is no cluster
here): 8 GPUs = one node, NVLink, B = 150 GB/s, alpha = 5 us; 64 and 512 GPUs = InfiniBand,
B = 25 GB/s per GPU, alpha = 10 us. ImageNet-1K rows measured on two subsets of the classes
are extrapolated to 1000: calls on the line through the two (one collective per class, plus
fixed ones), bytes on ``u K + v K^2`` through them (the image gradient and per-class sums
grow as K; DC's per-class network gradient holds the classifier, whose size grows with K).

Compute: batch-sharded ranks each work on every class with 256 / N real images; class-parallel
ranks on K / N classes with all 256 (more ranks than classes is refused). The break-even column
is the per-class compute time t at which (classes per rank) x t equals the communication time,
with batch-sharding counted as if its per-class time shrank as 1/N (optimistic for it).
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

LINKS = {8: (150e9, 5e-6), 64: (25e9, 10e-6), 512: (25e9, 10e-6)}  # N: (bytes/s, alpha)
CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def ring_seconds(calls: float, nbytes: float, n: int) -> float:
    bandwidth, alpha = LINKS[n]
    return calls * 2 * math.log2(n) * alpha + 2 * (n - 1) / n * nbytes / bandwidth


def extrapolated(rows: list[dict]) -> list[dict]:
    """ImageNet subsets -> 1000 classes: a line through the two measured class counts."""
    out, subsets = [], defaultdict(list)
    for row in rows:
        if row["shape"] == "imagenet" and row.get("classes"):
            subsets[(row["ipc"], row["method"], row["mode"])].append(row)
        else:
            out.append(row | {"classes": CLASSES[row["shape"]], "measured": True})
    for (ipc, method, mode), pair in subsets.items():
        pair.sort(key=lambda r: r["classes"])
        a, b = pair[0], pair[-1]
        span = b["classes"] - a["classes"] or 1

        def calls(a=a, b=b, span=span) -> float:  # a line: one collective per class + fixed
            return a["calls"] + (b["calls"] - a["calls"]) * (1000 - a["classes"]) / span

        def nbytes(a=a, b=b) -> float:
            # bytes = u K + v K^2 through the two points: per-class tensors whose size grows
            # with K (a network's classifier, in DC's per-class gradient) make it quadratic.
            k1, k2 = a["classes"], b["classes"]
            v = (b["bytes"] / k2 - a["bytes"] / k1) / (k2 - k1)
            u = a["bytes"] / k1 - v * k1
            return u * 1000 + v * 1000**2

        out.append(
            {"shape": "imagenet", "ipc": ipc, "method": method, "mode": mode, "classes": 1000,
             "calls": calls(), "bytes": nbytes(), "measured": False,
             "from": f"{a['classes']}/{b['classes']} classes: {a['calls']}/{b['calls']} calls, "
                     f"{a['bytes'] / 1e6:.2f}/{b['bytes'] / 1e6:.2f} MB"}
        )  # fmt: skip
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| problem | ipc | method | mode | calls / it | MB / it | comm ms at 8 / 64 / 512 GPUs | break-even per-class compute (ms) at 8 / 64 / 512 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {"cifar10": 0, "cifar100": 1, "imagenet": 2}
    for row in sorted(rows, key=lambda r: (order[r["shape"]], r["ipc"], r["method"], r["mode"])):
        comm, even = [], []
        for n in LINKS:
            if row["mode"] == "class_parallel" and n > row["classes"]:
                comm.append("-")
                even.append("-")
                continue
            seconds = ring_seconds(row["calls"], row["bytes"], n)
            per_rank = (
                math.ceil(row["classes"] / n)
                if row["mode"] == "class_parallel"
                else row["classes"] / n
            )
            comm.append(f"{seconds * 1e3:.2f}")
            even.append(f"{seconds / per_rank * 1e3:.3f}")
        name = row["shape"] + ("" if row["measured"] else " (extrapolated)")
        lines.append(
            f"| {name} | {row['ipc']} | {row['method']} | {row['mode']} | {row['calls']:.0f} | "
            f"{row['bytes'] / 1e6:.2f} | {' / '.join(comm)} | {' / '.join(even)} |"
        )
    notes = [
        f"- imagenet {r['ipc']}/{r['method']}/{r['mode']}: {r['from']}"
        for r in rows
        if not r["measured"]
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


def main() -> None:
    rows = [row for path in sys.argv[1:] for row in json.loads(Path(path).read_text())]
    print(table(extrapolated(rows)))


if __name__ == "__main__":
    main()

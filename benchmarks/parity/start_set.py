"""The set rdd.run's distillation starts from, for the given overrides, saved as a tensor file
(``accuracy.py --same-start`` gives it to the reference, so that both runs start alike).

    python benchmarks/parity/start_set.py <out.pt> <rdd.run overrides...>

It builds the learner the way ``rdd.run.distill`` does (the same checks, seeding, data and
generator) and saves its images, (K * ipc, C, H, W) in rdd's input space: for CIFAR-10 the
mean/std normalisation VICO-UoE/DatasetCondensation applies too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from rdd.config.compose import compose_or_explain
from rdd.config.errors import UserError
from rdd.distill.fit import build_learner
from rdd.run import init_generator, prepare


def start_images(cfg: DictConfig) -> torch.Tensor:
    prepared = prepare(cfg)
    learner = build_learner(
        cfg, prepared.data, prepared.matcher, prepared.make_net, prepared.ipc, init_generator(cfg)
    )
    return learner.images.detach().cpu().clone()


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: start_set.py <out.pt> <rdd.run overrides...>", file=sys.stderr)
        return 2
    try:
        cfg = compose_or_explain("run", argv[1:])
        torch.save(start_images(cfg), Path(argv[0]))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

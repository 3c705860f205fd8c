"""Checks of DDP's class-parallel mode (``trainer=ddp trainer.class_parallel=true``).

Batch-sharded DDP splits every class's real batch over the ranks (256 real images per class
on 8 GPUs: 32 each). Class-parallel gives each rank whole classes instead: rank r computes
the matching loss of the classes c with c % world == r on full real batches, every rank
still makes every random draw (so the replicas stay in step), and the image gradient, each
rank holding its classes' rows, is summed over ranks (``rdd.parallel.distributed``). What a class's
loss needs must then live in one class: the checks below refuse what does not.
"""

from __future__ import annotations

from typing import Any

import torch

from rdd.config.errors import UserError
from rdd.nets import has_batchnorm
from rdd.parallel.strategy import DDP_NAMES, launcher_world

# Methods whose loss is a sum of per-class terms.
CLASS_PARALLEL_METHODS = ("dc", "dsa", "dm", "idm")


def check_class_parallel(cfg: Any) -> bool:
    """Whether the run is class-parallel; refuses a setting the mode cannot honour."""
    if not cfg.trainer.get("class_parallel", False):
        return False
    if cfg.trainer.get("strategy") not in DDP_NAMES:
        raise UserError("trainer.class_parallel=true is a mode of DDP: use trainer=ddp with it")
    if cfg.matching.name not in CLASS_PARALLEL_METHODS:
        raise UserError(
            f"trainer.class_parallel needs a loss summed over classes ({', '.join(CLASS_PARALLEL_METHODS)}); "
            f"matching={cfg.matching.name} is not: drop trainer.class_parallel (batch-sharded DDP)"
        )
    if cfg.risk.name == "max_group" and cfg.risk.get("smooth", False):
        raise UserError(
            "risk=max_group risk.smooth=true keeps group weights per class, which class-parallel "
            "would update on the owning rank only: use batch-sharded DDP or risk.smooth=false"
        )
    return True


def check_ranks_for_classes(trainer_cfg: Any, num_classes: int) -> None:
    """A rank without a class would idle: at most one rank per class."""
    world = ranks_of(trainer_cfg)
    if world > num_classes:
        raise UserError(
            f"trainer.class_parallel with {world} ranks but {num_classes} classes: use at most "
            f"{num_classes} ranks (trainer.devices), or batch-sharded DDP"
        )


def check_one_forward_per_class(matcher: Any, net: Any, ctx: Any) -> None:
    """DM's BatchNorm branch matches every class in one forward: not splittable by class."""
    branch = getattr(matcher, "batchnorm_branch", None)
    if branch is not None and has_batchnorm(net) and branch(ctx):
        raise UserError(
            "trainer.class_parallel: DM with a BatchNorm net takes every class through one "
            "forward (BatchNorm statistics over all classes): use a net without BatchNorm or "
            "batch-sharded DDP"
        )


def ranks_of(trainer_cfg: Any) -> int:
    """The number of ranks a DDP run will have."""
    world = launcher_world()
    if world is not None:
        return world[1]
    devices, nodes = trainer_cfg.get("devices", 1), int(trainer_cfg.get("num_nodes", 1) or 1)
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    gpus = torch.cuda.device_count() if accelerator in ("gpu", "cuda", "auto") else 0
    return max(gpus, 1) * nodes

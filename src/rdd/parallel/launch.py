"""Runs started by a cluster launcher: torchrun (TorchElastic) or srun (SLURM).

Then every rank runs the whole command, Hydra included, so the ranks must agree on one run
directory (Hydra's default is a time stamp, different per process), and only global rank 0
writes into it: the set, the evaluation, Hydra's files and the log. The other ranks
distil and stop. Lightning joins the launcher's process group
(:class:`rdd.parallel.strategy.ReplicatedDDPStrategy` uses the "popen" launcher then).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rdd.config.errors import UserError
from rdd.parallel.strategy import launched_devices, launcher_local_world, launcher_world


def launcher_overrides(argv: Sequence[str]) -> list[str]:
    """The command line with what a launched rank needs added: a run directory shared by
    the ranks (``hydra.run.dir`` unless given) and, off rank 0, no Hydra files or log."""
    world = launcher_world()
    if world is None or world[1] == 1:
        return list(argv)
    rank, size = world
    if {"-m", "--multirun"} & set(argv) or any(a.startswith("hparams_search=") for a in argv):
        raise UserError(
            "a sweep cannot run under torchrun/srun (every rank would start the whole sweep): "
            "launch each job on its own, or sweep without the launcher (trainer=ddp spawns ranks)"
        )
    added = []
    if not any(a.split("=", 1)[0].lstrip("+~") == "hydra.run.dir" for a in argv):
        added.append(f"hydra.run.dir=${{paths.log_dir}}/${{task_name}}/runs/{launch_id()}")
    if rank > 0:
        # Rank 0 writes .hydra/ and the log; the others log warnings only, to the console.
        added += [
            "hydra.output_subdir=null",
            f"hydra.job_logging.handlers.file.filename={os.devnull}",
            "hydra.job_logging.root.level=WARNING",
        ]
    return [*argv, *added]


def launch_id() -> str:
    """A name every rank of this launch computes alike: SLURM's job and step, or torchrun's
    rendezvous id (random per launch with --standalone; --rdzv_id=<name> on several nodes)."""
    if "SLURM_JOB_ID" in os.environ and "TORCHELASTIC_RUN_ID" not in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_STEP_ID', '0')}"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if run_id in ("", "none"):  # torchrun's static rendezvous without --rdzv_id
        raise UserError(
            "torchrun gives this launch no id the ranks share: pass --rdzv_id=<unique name> "
            "(or --standalone on one machine), or hydra.run.dir=<a directory on a shared disk>"
        )
    return f"torchrun-{run_id}"


def is_launched_rank0() -> bool:
    """False only on the ranks other than 0 of an externally launched run."""
    world = launcher_world()
    return world is None or world[0] == 0


def check_num_nodes(trainer_cfg: Any) -> None:
    """trainer.num_nodes x devices must be the launcher's world (Lightning would hang)."""
    world = launcher_world()
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    if world is None:
        if nodes > 1:
            raise UserError(
                f"trainer.num_nodes={nodes} needs a launcher that starts the ranks on every "
                "node: run under torchrun --nnodes or srun (README: Clusters), or drop num_nodes"
            )
        return
    # devices=auto: the launcher's processes on this node (rdd.parallel.strategy.launched_devices).
    devices = launched_devices(trainer_cfg.get("devices", 1))
    count = device_count(devices)
    local = launcher_local_world() or 1
    if count is not None and count * nodes != world[1]:
        raise UserError(
            f"the launcher started {world[1]} processes ({local} on this node) but "
            f"trainer.num_nodes={nodes} x trainer.devices={devices} is {count * nodes}: set "
            f"trainer.devices={local} (or auto) and trainer.num_nodes={max(1, world[1] // local)}"
        )


def device_count(devices: Any) -> int | None:
    """How many devices a ``trainer.devices`` value names (3, [0, 1], "0,1"), or None for a
    value Lightning interprets itself."""
    if isinstance(devices, int) and not isinstance(devices, bool):
        return devices if devices > 0 else None
    if isinstance(devices, Sequence) and not isinstance(devices, str):  # also a ListConfig
        return len(devices)
    parts = str(devices).strip(",").split(",")
    if len(parts) > 1 and all(p.strip().isdigit() for p in parts):
        return len(parts)
    return int(parts[0]) if parts[0].strip().isdigit() and int(parts[0]) > 0 else None

"""Lightning DDP for synthetic-set learning (``trainer.strategy=ddp``).

Every rank holds the whole synthetic set and the same random streams; the matchers shard each
real batch and all-reduce per-group sums and counts (``rdd.parallel.distributed``), so every rank
computes the gradient of the *global* risk. What DDP's wrapper would add, bucketed gradient
averaging inside ``backward``, does not fit a training step that calls backward many times
(DC: once per outer loop, networks trained in between), so this strategy keeps Lightning's
launcher and process group but not the wrapper; the learner averages the images' gradient
over ranks itself before each image step (``rdd.parallel.distributed.average_grads``), which keeps the
replicas bitwise identical even where GPU kernels are not deterministic.

Processes are spawned (not re-launched from the command line), so Hydra multirun sweeps work:
each job spawns its ranks, and the main process gets rank 0's synthetic set back to save and
evaluate.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from omegaconf import OmegaConf

from rdd.checkpoint.preemption import defer_signals
from rdd.config.errors import ConfigError, Interrupted, UserError
from rdd.parallel.lifeline import die_with_parent
from rdd.utils.host_memory import keep_freed_host_memory

# Strategy names that select this strategy; other distributed strategies are refused.
DDP_NAMES = ("ddp", "ddp_spawn")
REFUSED_WORDS = ("ddp", "fsdp", "deepspeed", "xla")


class ReplicatedDDPStrategy(DDPStrategy):
    """DDP with replicated parameters whose gradients the LightningModule reduces itself.

    Ranks are spawned from this process, unless a launcher (torchrun, srun) started them:
    then every rank is already running this command, and Lightning's "popen" launcher only
    joins the process group the launcher's environment describes.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(start_method="popen" if launched_externally() else "spawn", **kwargs)

    def configure_ddp(self) -> None:
        # No DistributedDataParallel wrapper: see the module docstring.
        pass

    def _configure_launcher(self) -> None:
        if self._start_method == "popen":  # torchrun/srun started the ranks: join them
            super()._configure_launcher()
        else:
            self._launcher = StoppableLauncher(self, start_method=self._start_method)


def launched_externally() -> bool:
    """Whether torchrun (TorchElastic) or srun (SLURM, several tasks) started the ranks."""
    if TorchElasticEnvironment.detect():
        return True
    return SLURMEnvironment.detect() and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def launcher_world() -> tuple[int, int] | None:
    """(global rank, world size) set by an external launcher, or None."""
    if not launched_externally():
        return None
    env = TorchElasticEnvironment() if TorchElasticEnvironment.detect() else SLURMEnvironment()
    return env.global_rank(), env.world_size()


def launcher_local_world() -> int | None:
    """The processes an external launcher started on this node (torchrun: LOCAL_WORLD_SIZE;
    srun: its tasks over its nodes), or None without a launcher."""
    world = launcher_world()
    if world is None:
        return None
    if TorchElasticEnvironment.detect():
        return int(os.environ.get("LOCAL_WORLD_SIZE", world[1]))
    nodes = os.environ.get("SLURM_NNODES") or os.environ.get("SLURM_JOB_NUM_NODES") or 1
    return max(1, world[1] // int(nodes))


def launched_devices(devices: Any) -> Any:
    """``trainer.devices`` under a launcher: ``auto`` (and -1) is the launcher's processes on
    this node, one device each (Lightning's own auto counts GPUs, one on a CPU, and would then
    refuse the launcher's world); anything else, and every value without a launcher, as given."""
    local = launcher_local_world()
    if local is None or str(devices) not in ("auto", "-1"):
        return devices
    return local


class StoppableLauncher(_MultiProcessingLauncher):
    """Lightning's spawn launcher, through which the ranks' stop at a safe point
    (rdd.checkpoint.preemption: an ``Interrupted`` raised on every rank) reaches the main process as
    that ``Interrupted``, instead of a failed process and a main process waiting for results."""

    def _wrapping_function(
        self, process_idx, trainer, function, args, kwargs, return_queue, global_states=None
    ) -> None:
        die_with_parent()  # a killed main process leaves no rank behind (rdd.parallel.lifeline)
        defer_signals()  # before Lightning installs its handlers (see rdd.checkpoint.preemption)
        try:
            super()._wrapping_function(
                process_idx, trainer, function, args, kwargs, return_queue, global_states
            )
        except Interrupted as stop:  # every rank stops at the same safe point
            if process_idx == 0:
                return_queue.put(stop)  # in place of rank 0's results; a clean exit follows
        leave_process_group()

    def _recover_results_in_main_process(self, worker_output: Any, trainer: Any) -> None:
        if isinstance(worker_output, Interrupted):
            raise worker_output
        super()._recover_results_in_main_process(worker_output, trainer)


def leave_process_group() -> None:
    """Destroy this rank's process group once every rank is done with it (a barrier first).

    A spawned rank that exits with its gloo group alive can abort at interpreter shutdown
    (SIGABRT, "terminate called without an active exception": gloo's worker threads still
    hold work when the interpreter is torn down; pytorch/pytorch#190489), which fails a run
    that has finished. Lightning destroys the group at exit only for NCCL.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def distill_strategy(name: Any) -> Any:
    """The Lightning strategy for distillation from ``trainer.strategy``."""
    if not isinstance(name, str):
        return name
    if name in DDP_NAMES:
        return ReplicatedDDPStrategy()
    if any(word in name for word in REFUSED_WORDS):
        raise UserError(
            f"trainer.strategy={name} is not supported for distillation: use trainer=ddp "
            "(or trainer.strategy=auto for one device)"
        )
    return name


def trainer_kwargs(trainer_cfg: Any) -> dict[str, Any]:
    settings = dict(OmegaConf.to_container(trainer_cfg, resolve=True))
    for own in ("class_parallel", "keep_host_memory"):  # rdd's settings, not Lightning's
        settings.pop(own, None)
    settings["devices"] = launched_devices(settings.get("devices", 1))
    distill_strategy(settings.get("strategy"))  # an unsupported strategy fails before any work
    check_accelerator(settings.get("accelerator"))
    return settings


def apply_determinism(trainer_cfg: Any) -> None:
    """``trainer.deterministic``: true makes torch use deterministic kernels (an op without
    one raises), "warn" only warns; both set ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which cuBLAS
    reads when CUDA starts, so call this before any CUDA work. Lightning's Trainer applies the
    same setting again when it is built; spawned DDP ranks inherit both."""
    value = trainer_cfg.get("deterministic", False)
    if value not in (True, False, "warn"):
        raise UserError(
            f"trainer.deterministic must be true, false or warn, got '{value}': "
            "set e.g. trainer.deterministic=true"
        )
    if value:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(bool(value), warn_only=value == "warn")


def apply_host_memory(trainer_cfg: Any) -> None:
    """``trainer.keep_host_memory``: true keeps freed host memory for reuse
    (rdd.utils.host_memory), so a CPU iteration does not fault its tensors in afresh."""
    value = trainer_cfg.get("keep_host_memory", True)
    if value not in (True, False):
        raise ConfigError(
            f"trainer.keep_host_memory must be true or false, got '{value}': set "
            "trainer.keep_host_memory=false to let the process give freed memory back"
        )
    if value:
        keep_freed_host_memory()


def check_accelerator(accelerator: Any) -> None:
    """A GPU accelerator on a machine without one fails at start-up in one line (Lightning
    would raise only once the Trainer is built, after the data has loaded)."""
    name = str(accelerator).lower()
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(
            f"trainer.accelerator={name} but no CUDA GPU is visible here: use trainer=cpu, or "
            "trainer=default (which uses a GPU when there is one)"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError(
            "trainer.accelerator=mps but this machine has no Apple GPU: use trainer=cpu"
        )

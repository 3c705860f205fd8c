"""The checks of a composed config, in one list: ``rdd.run.prepare`` runs them once, before
any work, so that a bad value is one line in a second, not a failure hours in.

Each entry checks one node; the checks that need the node's own code (a constructor, a
schema's ranges) live next to that code and are only called from here.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from rdd.config.cli import check_ipc
from rdd.config.compose import build
from rdd.config.errors import ConfigError, UserError
from rdd.distill.initial import check_class_sizes
from rdd.eval.settings import check_eval
from rdd.nets import compiled
from rdd.parallel.class_parallel import check_class_parallel
from rdd.parallel.launch import check_num_nodes
from rdd.parallel.strategy import trainer_kwargs
from rdd.robust.plan import build_risk, check_min_per_group, check_robust_node


def check_config(cfg: DictConfig) -> int:
    """Every check that needs no data, in the order a user meets them; returns ipc.

    A refusal is a :class:`ConfigError`: every rank of a launch finds it alike."""
    try:
        ipc = check_ipc(cfg.ipc)
        check_seed(cfg.seed)
        check_checkpoint_every(cfg.get("checkpoint_every"))
        check_robust_node(cfg)  # robust: what networks train on, the allocation's values
        build_risk(cfg.risk)  # risk: its parameters (alpha, beta, ...), before any subgroup
        trainer_kwargs(cfg.trainer)  # trainer: a GPU trainer without a GPU, a strategy
        check_num_nodes(cfg.trainer)  # trainer.num_nodes against torchrun's / srun's world
        check_class_parallel(cfg)  # trainer.class_parallel with its method
        build(cfg.data, "data").check_source()  # data: the root holds it, before any decoding
        build(cfg.matching, "matching")  # matching: its constructor checks its values
        check_compiler(cfg.matching)  # matching.compile_nets=true needs a working backend
        check_eval(cfg)  # eval: the whole node, not only once the distillation has finished
    except ConfigError:
        raise
    except UserError as err:
        raise ConfigError(str(err)) from None
    return ipc


def check_data(cfg: DictConfig, data: Any, ipc: int) -> None:
    """The checks that need the loaded data: every class holds ipc images, and the robust
    layer's stratified minimum fits the smallest class (or known subgroup)."""
    check_class_sizes(data, ipc)
    check_min_per_group(cfg, data)


def check_compiler(matching: DictConfig) -> None:
    """``matching.compile_nets=true`` where torch.compile fails is refused before any work
    (``auto`` falls back to eager with a warning instead)."""
    if matching.get("compile_nets") is True and (problem := compiled.compile_problem()) is not None:
        raise UserError(
            f"matching.compile_nets=true, but torch.compile fails here ({problem}): set "
            "matching.compile_nets=auto or false"
        )


def check_checkpoint_every(every: Any) -> None:
    """checkpoint_every is a number of iterations (0 or null: no checkpoints)."""
    if every is None:
        return
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise UserError(
            f"checkpoint_every must be a number of iterations >= 0 (0: no checkpoints), got "
            f"'{every}': set e.g. checkpoint_every=50"
        )


def check_seed(seed: Any) -> int:
    """The seed must be a non-negative integer (it seeds every random draw)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got '{seed}': set e.g. seed=0")
    return seed

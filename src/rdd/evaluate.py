"""`python -m rdd.evaluate synset=PATH`: evaluate any saved synthetic set by the protocol.

The dataset and the distillation network come from the config stored in the set; the
protocol (`eval` group) and the seed from the command line. Results go to this command's own
run directory, never into the run that made the set.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rdd.cli import fail_job, quiet_lightning, run_cli
from rdd.config import CONF_DIR, build
from rdd.errors import Interrupted, UserError
from rdd.eval.scoring import evaluate_synset
from rdd.eval.settings import (
    eval_nets,
    eval_settings,
    eval_trainer_kwargs,
    partition_of,
    with_learned_lr,
)
from rdd.eval.shifted_sets import shifted_test_sets
from rdd.io import write_json
from rdd.outputs import prepare_output_dir, write_eval_outputs
from rdd.schemas import register_schemas
from rdd.synset import SyntheticSet


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.synset``; returns the metrics (also written to metrics.json)."""
    quiet_lightning()
    synset = SyntheticSet.load(cfg.synset)
    stored = OmegaConf.create(synset.meta["config"])
    data_cfg = stored.data
    if cfg.data_root:
        data_cfg.root = cfg.data_root
    if synset.zca is not None:
        # The real data gets the set's own whitening, not a refit (which could differ).
        data_cfg.zca = False
    data = build(data_cfg, "data")
    data.setup()
    if data.num_classes != synset.meta["num_classes"] or tuple(data.im_size) != tuple(
        synset.images.shape[-2:]
    ):
        raise UserError(
            f"the dataset at '{data_cfg.root}' does not match the synthetic set ({data.num_classes} "
            f"classes, {tuple(data.im_size)} images): point data_root at the dataset it was made from"
        )
    if synset.zca is not None:
        data.apply_zca(synset.zca)
    out_dir = prepare_output_dir(cfg.paths.output_dir)
    run_like = OmegaConf.create({"eval": OmegaConf.to_container(cfg.eval), "net": stored.net})
    settings = with_learned_lr(eval_settings(run_like, data), synset.meta.get("lr"))
    evaluation = evaluate_synset(
        *synset.expanded(),
        data,
        eval_nets(run_like, data, default_name=synset.meta.get("net")),
        settings,
        eval_trainer_kwargs(cfg),
        cfg.seed,
        test_groups=partition_of(data, settings),
        shifted=shifted_test_sets(data, settings),
        known_group=data.subgroup_test_set,
    )
    metrics = dict(evaluation)
    write_eval_outputs(out_dir, metrics, evaluation, data, settings)
    write_json(out_dir / "synset_source.json", {"synset": str(Path(cfg.synset).resolve())})
    print(
        f"\n{synset.meta['method']} ipc {synset.ipc} on {synset.meta['dataset']}: "
        f"test acc {metrics['test_acc']:.2f} ± {metrics['test_acc_std']:.2f} %, "
        f"{val_line(metrics)}  ({out_dir})"
    )
    return metrics


def val_line(metrics: dict[str, float]) -> str:
    if "val_acc" not in metrics:
        return "no validation split (data.val_fraction=0)"
    return f"val acc {metrics['val_acc']:.2f} ± {metrics['val_acc_std']:.2f} %"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    try:
        return evaluate(cfg).get("val_acc")
    except (UserError, Interrupted) as err:
        fail_job(err)


register_schemas()

if __name__ == "__main__":
    run_cli(main)

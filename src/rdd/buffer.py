"""`python -m rdd.buffer`: train the expert trajectories that MTT matches (rdd.experts.training).

The config is rdd.run's, so ``python -m rdd.buffer <overrides>`` makes exactly the buffer that
``python -m rdd.run matching=mtt <overrides>`` looks for.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rdd.config.cli import fail_job, run_cli
from rdd.config.compose import CONF_DIR
from rdd.config.errors import Interrupted, UserError
from rdd.config.schemas import register_schemas
from rdd.experts.training import make_buffer


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="buffer")
def main(cfg: DictConfig) -> None:
    try:
        make_buffer(cfg)
    except (UserError, Interrupted) as err:
        fail_job(err)


register_schemas()

if __name__ == "__main__":
    run_cli(main)

"""The table of a sweep, written as the sweep ends (a Hydra callback, conf/hydra/default.yaml).

``python -m rdd.run -m ...`` then leaves ``<sweep dir>/report/report.md`` (and report.json):
rdd.report's tables without its plots, so that it takes a second. ``python -m rdd.report
<sweep dir>`` rewrites it with the plots.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


class WriteSweepTable(Callback):
    """On ``on_multirun_end``: rdd.report's tables for the sweep's runs. Never fails the
    sweep (its runs are done): a table that cannot be written is one line on stderr."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            # Imported here: every run instantiates the callbacks, only a sweep needs matplotlib.
            from rdd.report.write import make_report

            report = make_report([sweep_dir], plots=False)
        except Exception as err:  # noqa: BLE001 - the sweep finished; only its table is missing
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(
                f"no sweep table ({first[:200]}): run python -m rdd.report {sweep_dir}",
                file=sys.stderr,
            )
            return
        # print, not logging: the logging set up for the last job would put it in its run.log.
        print(f"sweep table: {report.out / 'report.md'} (plots: python -m rdd.report {sweep_dir})")

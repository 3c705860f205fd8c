"""`python -m rdd.report runs=DIR [out=PATH] [logger=wandb] [logger.wandb.offline=true]`.

Hydra-style overrides of conf/report.yaml, composed once through Hydra's compose API (a report
starts no Hydra job: no run directory, no log file). Bare directories are read as ``runs``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from rdd.config.cli import check_overrides, fail
from rdd.config.compose import compose_or_explain
from rdd.config.errors import UserError
from rdd.report.aggregate import mixed_notes, std_note
from rdd.report.tables import markdown_table
from rdd.report.write import Report, log_to_wandb, make_report, plural

USAGE = (
    "usage: python -m rdd.report runs=DIR|[DIR,...] [out=PATH] [logger=wandb|none] "
    "[logger.wandb.project=rdd] [logger.wandb.offline=true|false]  (bare DIR... is runs=[DIR,...])"
)


def overrides_of(argv: Sequence[str]) -> list[str]:
    """The command line as overrides: bare directories become one ``runs=[...]`` list."""
    dirs = [a for a in argv if "=" not in a and not a.startswith("-")]
    flags = [a for a in argv if "=" not in a and a.startswith("-")]
    if flags:
        raise UserError(f"unknown option '{flags[0]}': {USAGE}")
    rest = [a for a in argv if "=" in a]
    if dirs:
        if any(a.split("=", 1)[0] == "runs" for a in rest):
            raise UserError("give the run directories either as runs=... or bare, not both")
        rest.append("runs=[" + ",".join(f"'{d}'" for d in dirs) + "]")
    return rest


def settings(argv: Sequence[str]) -> tuple[list[Path], dict]:
    """(run directories, the composed report config as a dict), or a one-line UserError."""
    check_overrides(argv)  # an unknown logger option: one line naming the ones there are
    cfg = compose_or_explain("report", overrides_of(argv))
    if OmegaConf.is_missing(cfg, "runs"):
        raise UserError(f"no run directory given: {USAGE}")
    runs = cfg.runs
    runs = OmegaConf.to_container(runs, resolve=True) if OmegaConf.is_list(runs) else [runs]
    if not runs:
        raise UserError(f"no run directory given: {USAGE}")
    if "csv" in cfg.logger:
        raise UserError(
            "logger=csv logs a training run: a report takes logger=wandb or logger=none"
        )
    offline = OmegaConf.select(cfg, "logger.wandb.offline", default=False)
    if not isinstance(offline, bool):
        raise UserError(f"logger.wandb.offline must be true or false, got '{offline}'")
    return [Path(str(r)) for r in runs], cfg


def found_line(report: Report) -> str:
    line = f"found {plural(len(report.runs), 'run')} in {plural(len(report.rows), 'group')}"
    if report.unfinished:  # e.g. jobs of a sweep still running, or crashed ones
        skipped = plural(len(report.unfinished), "unfinished run")
        line += f"; skipped {skipped} (no metrics.json, or an interrupted evaluation)"
    return line


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE)
        return
    try:
        dirs, cfg = settings(argv)
        report = make_report(dirs, cfg.out)
        print(found_line(report))
        for note in mixed_notes(report.rows):
            print(f"note: {note}")
        print(markdown_table(report.rows))
        print(f"{std_note(report.rows)}.")
        if "wandb" in cfg.logger:
            log_to_wandb(report, cfg.logger.wandb.project, cfg.logger.wandb.offline)
    except UserError as err:
        fail(err)
    print(f"report: {report.out / 'report.md'}")


if __name__ == "__main__":
    main()

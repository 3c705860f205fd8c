"""Where the Hydra configs live."""

from __future__ import annotations

from pathlib import Path

# conf/ sits at the repository root, next to src/ (editable installs and checkouts).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

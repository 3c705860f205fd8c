"""MTT's expert trajectories (the `experts` config group).

Modules: ``store`` (where a buffer lives, its key and file format), ``trajectories`` (reading
experts back and attaching them to MTT), ``training`` (training them: `python -m rdd.buffer`).
"""

from rdd.experts.store import ExpertStore, buffer_key, experts_train_on_risk, store_for
from rdd.experts.trajectories import (
    Trajectories,
    attach_experts,
    buffer_command,
    flat_parameters,
    unflatten,
)

__all__ = [
    "ExpertStore",
    "Trajectories",
    "attach_experts",
    "buffer_command",
    "buffer_key",
    "experts_train_on_risk",
    "flat_parameters",
    "store_for",
    "unflatten",
]

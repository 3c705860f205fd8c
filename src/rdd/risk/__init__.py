"""Risk measures: turn per-group losses into one scalar (see conf/risk).

Every risk is called as ``risk(group_sums (G,), group_counts (G,), sample_losses=None,
sample_groups=None)`` and returns a scalar whose gradient is that of the risk.
"""

from rdd.risk.base import GroupRisk, group_masses, group_means
from rdd.risk.cvar import CVaR, cvar_weights
from rdd.risk.entropic import Entropic
from rdd.risk.max_group import MaxGroup
from rdd.risk.mean import MeanRisk
from rdd.risk.two_level import TwoLevel

__all__ = [
    "CVaR",
    "Entropic",
    "GroupRisk",
    "MaxGroup",
    "MeanRisk",
    "TwoLevel",
    "cvar_weights",
    "group_masses",
    "group_means",
]

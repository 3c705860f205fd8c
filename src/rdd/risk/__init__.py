"""Risk measures: turn per-group losses into one scalar (see conf/risk)."""

from rdd.risk.mean import MeanRisk

__all__ = ["MeanRisk"]

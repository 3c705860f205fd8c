"""Config schemas of the `risk` group (registered in Hydra's ConfigStore by rdd.schemas)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RiskSchema:
    _target_: str = "???"
    name: str = "???"


@dataclass
class CVaRSchema(RiskSchema):
    alpha: float = 0.5  # mean of the worst (1 - alpha) of the mass


@dataclass
class EntropicSchema(RiskSchema):
    beta: float = 1.0  # > 0, relative to the mean loss: small approaches the mean, large the max


@dataclass
class MaxGroupSchema(RiskSchema):
    smooth: bool = False  # online group-DRO weights instead of the hard max
    eta: float = 0.1  # step size of those weights, relative to the mean loss


@dataclass
class TwoLevelSchema(RiskSchema):
    alpha: float = 0.8  # inner CVaR level within each group
    lam: float = 1.0  # weight of the worst group on top of the mean over groups


# conf/risk/<option>.yaml names one of these in its defaults list.
RISK_SCHEMAS: dict[str, type] = {
    "mean_schema": RiskSchema,
    "cvar_schema": CVaRSchema,
    "entropic_schema": EntropicSchema,
    "max_group_schema": MaxGroupSchema,
    "two_level_schema": TwoLevelSchema,
}

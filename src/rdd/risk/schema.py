"""Config schemas of the `risk` group (registered in Hydra's ConfigStore by rdd.schemas)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RiskSchema:
    _target_: str = "???"
    name: str = "???"
    # Where the risk acts: "networks" (networks trained on real data) and/or "matching".
    on: list[str] = field(default_factory=lambda: ["networks", "matching"])


@dataclass
class CVaRSchema(RiskSchema):
    alpha: float = 0.8  # mean of the worst (1 - alpha) of the mass


@dataclass
class EntropicSchema(RiskSchema):
    beta: float = 1.0  # > 0: small approaches the mean, large the max


@dataclass
class MaxGroupSchema(RiskSchema):
    smooth: bool = False  # online group-DRO weights instead of the hard max
    eta: float = 0.01  # step size of those weights


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

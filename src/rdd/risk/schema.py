"""Config schemas of the `risk` group (registered in Hydra's ConfigStore by rdd.schemas)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RiskSchema:
    _target_: str = "???"
    name: str = "???"
    # Where the risk acts: "networks" (networks trained on real data) and/or "matching".
    on: list[str] = field(default_factory=lambda: ["networks", "matching"])


# conf/risk/<option>.yaml names one of these in its defaults list.
RISK_SCHEMAS: dict[str, type] = {"mean_schema": RiskSchema}

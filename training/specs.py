"""What distinguishes one tag model from another: label, objective, metric and tiers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from training.labels import LabelSpec


@dataclass(frozen=True)
class TierSpec:
    """Tiers as shares of the validation population, highest first, e.g. high = top 20 %."""

    shares: tuple[float, ...]
    names: tuple[str, ...]
    default: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Literal["classifier", "regressor"]
    label: LabelSpec
    primary_metric: str  # on the out-of-time test split, higher is better
    tiers: TierSpec
    description: str
    # LightGBM monotone constraints (+1 increasing, -1 decreasing) for relationships the business takes
    # as given; checked by the behavioural tests.
    monotone: dict[str, int] = field(default_factory=dict)

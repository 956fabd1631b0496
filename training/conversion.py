"""Conversion: a purchase in the next N days (optionally only among browsers who never bought)."""

from training.labels import LabelSpec, Population
from training.specs import ModelSpec, TierSpec


def spec(horizon_days: int = 30, population: Population = "all") -> ModelSpec:
    return ModelSpec(
        name="conversion",
        kind="classifier",
        label=LabelSpec("conversion", horizon_days=horizon_days, population=population),
        primary_metric="auc",
        tiers=TierSpec(shares=(0.1, 0.2), names=("high", "medium"), default="low"),
        monotone={
            "add_to_cart_30d": 1,
            "add_to_cart_90d": 1,
            "days_since_last_cart": -1,
            "recency_days": -1,
            "days_since_last_event": -1,
        },
        description=f"P(purchase in the next {horizon_days} days), population: {population}",
    )

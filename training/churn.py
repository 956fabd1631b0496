"""Churn: among recently active customers, no purchase in the next N days."""

from training.labels import LabelSpec
from training.specs import ModelSpec, TierSpec


def spec(horizon_days: int = 90, lookback_days: int = 365) -> ModelSpec:
    return ModelSpec(
        name="churn",
        kind="classifier",
        label=LabelSpec("churn", horizon_days=horizon_days, lookback_days=lookback_days),
        primary_metric="auc",
        tiers=TierSpec(shares=(0.2, 0.3), names=("high", "medium"), default="low"),
        monotone={"recency_days": 1, "days_since_last_event": 1, "orders_30d": -1, "orders_90d": -1},
        description=f"P(no purchase in the next {horizon_days} days | purchased in the last {lookback_days} days)",
    )

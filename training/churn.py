"""Churn: among recently active customers, no purchase in the next N days (catalogue entry ``churn``)."""

from training.specs import ModelSpec, spec_for

MONOTONE = {"recency_days": 1, "days_since_last_event": 1, "orders_30d": -1, "orders_90d": -1}


def spec(horizon_days: int = 90, lookback_days: int = 365) -> ModelSpec:
    return spec_for("churn", horizon_days=horizon_days, lookback_days=lookback_days)

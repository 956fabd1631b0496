"""Conversion: a purchase in the next N days, optionally only among browsers who never bought
(catalogue entry ``conversion``)."""

from training.labels import Population
from training.specs import ModelSpec, spec_for

MONOTONE = {
    "add_to_cart_30d": 1,
    "add_to_cart_90d": 1,
    "days_since_last_cart": -1,
    "recency_days": -1,
    "days_since_last_event": -1,
}


def spec(horizon_days: int = 30, population: Population = "all") -> ModelSpec:
    return spec_for("conversion", horizon_days=horizon_days, population=population)

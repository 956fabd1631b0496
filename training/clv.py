"""CLV: gross purchase value in the next horizon (catalogue entry ``clv``).

Most customers spend nothing in a horizon, so the model is a LightGBM regressor with a Tweedie
objective (a compound Poisson-gamma: a point mass at zero plus a continuous spend part), tuned on
Poisson deviance. Value tiers: high (top 10 %), medium (next 30 %), low.
"""

from training.specs import ModelSpec, spec_for

MONOTONE = {"spend_365d": 1, "spend_lifetime": 1, "orders_365d": 1, "orders_lifetime": 1}


def spec(horizon_days: int = 365) -> ModelSpec:
    return spec_for("clv", horizon_days=horizon_days)

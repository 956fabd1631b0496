"""CLV: gross purchase value in the next horizon.

Most customers spend nothing in a horizon, so the model is a LightGBM regressor with a Tweedie
objective (a compound Poisson-gamma: a point mass at zero plus a continuous spend part), tuned on
Poisson deviance. Value tiers: high (top 10 %), medium (next 30 %), low.
"""

from training.labels import LabelSpec
from training.specs import ModelSpec, TierSpec


def spec(horizon_days: int = 365) -> ModelSpec:
    return ModelSpec(
        name="clv",
        kind="regressor",
        label=LabelSpec("clv", horizon_days=horizon_days),
        primary_metric="normalized_gini",
        tiers=TierSpec(shares=(0.1, 0.3), names=("high", "medium"), default="low"),
        monotone={"spend_365d": 1, "spend_lifetime": 1, "orders_365d": 1, "orders_lifetime": 1},
        description=f"Expected gross purchase value in the next {horizon_days} days",
    )

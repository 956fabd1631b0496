"""Lifecycle stage and RFM segment: transparent rules on recency, tenure, frequency and spend.

Lifecycle stage (days are since the customer's last purchase or signup):

* ``new``      -- signed up less than 30 days ago, or never bought and signed up < 90 days ago;
* ``active``   -- bought within the last 90 days (``at_risk`` instead when the churn model says *high*);
* ``at_risk``  -- last purchase 90-180 days ago;
* ``dormant``  -- last purchase 180-365 days ago, or never bought after 90+ days;
* ``churned``  -- last purchase more than 365 days ago.

RFM: recency, frequency (orders in 365 days) and monetary (spend in 365 days) scored 1-5 against the
quintile edges of the training population (recorded in the model's metadata), then named with the
usual segment map (champions, loyal, potential loyalists, new, at risk, hibernating, ...).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

STAGES = ("new", "active", "at_risk", "dormant", "churned")


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def lifecycle_stage(
    recency_days: float | None, tenure_days: float | None, churn_tier: str | None = None
) -> str:
    tenure = 0.0 if _missing(tenure_days) else float(tenure_days)
    if _missing(recency_days):
        return "new" if tenure < 90 else "dormant"
    recency = float(recency_days)
    if tenure < 30:
        return "new"
    if recency <= 90:
        return "at_risk" if churn_tier == "high" else "active"
    if recency <= 180:
        return "at_risk"
    if recency <= 365:
        return "dormant"
    return "churned"


def rfm_edges(frame: pd.DataFrame) -> dict[str, list[float]]:
    """Quintile edges of recency, frequency and monetary value among customers who bought."""
    buyers = frame[frame["orders_365d"].fillna(0) > 0]
    if buyers.empty:
        return {"recency": [], "frequency": [], "monetary": []}
    qs = [0.2, 0.4, 0.6, 0.8]
    return {
        "recency": np.quantile(buyers["recency_days"].astype(float), qs).round(4).tolist(),
        "frequency": np.quantile(buyers["orders_365d"].astype(float), qs).round(4).tolist(),
        "monetary": np.quantile(buyers["spend_365d"].astype(float), qs).round(4).tolist(),
    }


def _score(value: float, edges: Sequence[float], reverse: bool = False) -> int:
    if not edges:
        return 3
    s = 1 + bisect.bisect_right(edges, value)  # edges are ascending quantiles; no array per call
    return 6 - s if reverse else s


def rfm_segment(
    recency_days: float | None,
    orders_365d: float | None,
    spend_365d: float | None,
    edges: dict[str, list[float]],
) -> tuple[str, str]:
    """(segment name, 'RFM' score string such as '545'); 'no purchases' / '000' for customers who never
    bought, 'lost' / '111' for lapsed buyers (a purchase, but none in the last 365 days)."""
    if _missing(recency_days):
        return ("no purchases", "000")
    if _missing(orders_365d) or not orders_365d:
        # No purchase in the last year: a lapsed buyer when the last one is older than that.
        return ("lost", "111") if float(recency_days) >= 365 else ("no purchases", "000")
    r = _score(float(recency_days), edges.get("recency", []), reverse=True)
    f = _score(float(orders_365d), edges.get("frequency", []))
    m = _score(float(spend_365d or 0.0), edges.get("monetary", []))
    if r >= 4 and f >= 4:
        name = "champions"
    elif f >= 4:
        name = "loyal"
    elif r >= 4 and f >= 2:
        name = "potential loyalists"
    elif r >= 4:
        name = "new customers"
    elif r == 3:
        name = "need attention"
    elif f >= 3 or m >= 4:
        name = "at risk"
    else:
        name = "hibernating"
    return (name, f"{r}{f}{m}")

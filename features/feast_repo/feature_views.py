"""Feast feature views, grouped by meaning: profile, transactions, behaviour.

The fields are derived from the pipeline's Ibis expressions (``features.pipeline.feature_schema``),
so a feature added to the pipeline appears here without a second list to keep in step. The pipeline (and
Ibis) is imported only when the views are built, so importing this module (as serving does, through
``features.store``) does not load it.
"""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import FeastType, Float64, Int64, String

from features.feast_repo.data_sources import feature_table_source
from features.feast_repo.entities import OWNER, customer
from portrait.settings import Settings

# How long a snapshot row stays valid for point-in-time joins and online reads: features are rebuilt
# at least daily in production; 180 days keeps weekly/monthly training snapshots joinable.
FEATURE_TTL = timedelta(days=180)

DESCRIPTIONS = {
    "customer_profile": "Tenure and declared attributes (region, gender, age band, acquisition channel).",
    "customer_transactions": "Recency, frequency and monetary value over 7/30/90/365 days, order value, "
    "inter-purchase time, returns, category diversity and 30-day trends.",
    "customer_behaviour": "Activity recency, lifetime events and the events expected since the last one at "
    "the customer's own pace, sessions, event counts by type, view-to-cart and cart-to-purchase rates and "
    "campaign response.",
}


def _feast_type(dtype: str) -> FeastType:
    if dtype.startswith("int"):
        return Int64
    if dtype.startswith("float") or dtype.startswith("decimal"):
        return Float64
    return String


def feature_views(settings: Settings) -> list[FeatureView]:
    """One FeatureView per feature table, its fields derived from the pipeline's expressions."""
    from features.pipeline import feature_schema  # Ibis: only when the views are built

    entity = customer()
    views = []
    for view, schema in feature_schema().items():
        fields = [
            Field(name=name, dtype=_feast_type(str(dtype)))
            for name, dtype in schema.items()
            if name not in ("customer_id", "snapshot_ts")
        ]
        views.append(
            FeatureView(
                name=view,
                entities=[entity],
                ttl=FEATURE_TTL,
                schema=fields,
                source=feature_table_source(settings, view),
                online=True,
                description=DESCRIPTIONS[view],
                owner=OWNER,
                tags={"group": view.removeprefix("customer_")},
            )
        )
    return views

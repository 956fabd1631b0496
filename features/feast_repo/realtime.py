"""The real-time view: features pushed per event (``features.realtime``), with the batch table behind it."""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field, FileSource, PushSource
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64

from features.feast_repo.entities import OWNER, customer
from features.realtime import COUNT_FEATURES, PUSH_SOURCE, VIEW
from features.tables import view_glob
from portrait.settings import Settings

REALTIME_TTL = timedelta(days=2)
"""A real-time value older than this is not served: the batch features describe the customer then."""


def realtime_push_source(settings: Settings) -> PushSource:
    return PushSource(
        name=PUSH_SOURCE,
        batch_source=FileSource(
            name=f"{VIEW}_source",
            path=view_glob(settings.features_dir, VIEW),
            file_format=ParquetFormat(),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
            description="The real-time features folded at each snapshot by `portrait features build`.",
            owner=OWNER,
        ),
        description="Real-time features pushed per event by POST /v1/events and `portrait stream`.",
        owner=OWNER,
    )


def realtime_view(settings: Settings) -> FeatureView:
    fields = [Field(name=n, dtype=Int64) for n in COUNT_FEATURES] + [
        Field(name=n, dtype=Float64)
        for n in ("last_event_ts", "last_cart_ts", "last_purchase_ts", "session_minutes")
    ]
    return FeatureView(
        name=VIEW,
        entities=[customer()],
        ttl=REALTIME_TTL,
        schema=fields,
        source=realtime_push_source(settings),
        online=True,
        description="Events, add-to-carts and purchases in the last hour and today, the times of the last "
        "event, add-to-cart and purchase, and the current session's length; updated per event.",
        owner=OWNER,
        tags={"group": "realtime"},
    )

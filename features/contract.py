"""The raw-data contract: the three inputs Portrait accepts.

Each input is documented twice, from one source of truth per table:

* a pydantic row model (``CustomerRow``, ``TransactionRow``, ``EventRow``) -- the human-readable schema,
  exported as JSON Schema by ``portrait data schema``;
* an Arrow schema (``ARROW_SCHEMAS``) -- the physical layout of the validated Parquet files in
  ``<home>/data/clean/<table>.parquet`` that the feature pipeline reads.

Conventions
-----------
* ``customer_id`` is a string everywhere (CDP ids are opaque); loaders cast integer ids to strings.
* Timestamps are UTC (``timestamp[us, tz=UTC]``). Naive inputs are taken as UTC.
* ``amount`` is signed: purchases have ``amount >= 0`` and ``quantity > 0``; returns
  (``is_return=True``) carry the refunded value as ``amount <= 0`` and ``quantity <= 0``.
* One transaction row is one order line; an order (``order_id``) may have several lines.
* The required fields of a row model are exactly :data:`REQUIRED_COLUMNS`, the columns validation
  demands (``portrait data schema`` prints them as JSON Schema ``required``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, Field

TABLES: tuple[str, ...] = ("customers", "transactions", "events")
EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "search", "app_open", "campaign_click")
EventType = Literal["view", "add_to_cart", "search", "app_open", "campaign_click"]

TS = pa.timestamp("us", tz="UTC")

CUSTOMER_ID_MAX_LENGTH = 128
CUSTOMER_ID_PATTERN = r"^[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$"
"""No control character (U+0000-U+001F, U+007F) anywhere and no space at either end; the same regular
expression in RE2 (DuckDB, the validator), Python, Rust (pydantic) and ECMA (the OpenAPI schema)."""
CUSTOMER_ID_RULE = (
    f"1 to {CUSTOMER_ID_MAX_LENGTH} characters, no control characters, no space at either end "
    "(kept verbatim, never trimmed)."
)
"""The customer-id rule: rows breaking it are quarantined (``invalid_customer_id``), the API refuses it."""


class CustomerRow(BaseModel):
    """One customer profile."""

    customer_id: str = Field(
        min_length=1,
        max_length=CUSTOMER_ID_MAX_LENGTH,
        pattern=CUSTOMER_ID_PATTERN,
        description="Opaque customer identifier (the Feast entity key).",
    )
    signup_ts: datetime = Field(description="When the customer registered or was first seen (UTC).")
    region: str | None = Field(None, description="Region or country.")
    gender: str | None = Field(None, description="Self-declared gender, if collected.")
    age_band: str | None = Field(None, description="Age band such as '25-34'.")
    channel: str | None = Field(None, description="Acquisition channel (organic, paid_search, social, ...).")


class TransactionRow(BaseModel):
    """One order line (a purchase, or a return when ``is_return``)."""

    order_id: str = Field(min_length=1, description="Order / invoice identifier.")
    customer_id: str = Field(
        min_length=1,
        max_length=CUSTOMER_ID_MAX_LENGTH,
        pattern=CUSTOMER_ID_PATTERN,
        description="Customer who placed the order.",
    )
    ts: datetime = Field(description="Order time (UTC).")
    amount: float = Field(description="Line value in currency units; <= 0 on returns, >= 0 otherwise.")
    quantity: int = Field(description="Units; <= 0 on returns, > 0 otherwise.")
    category: str | None = Field(None, description="Product category.")
    is_return: bool = Field(
        description="True for a return / cancellation line. Required: a source without returns gives the "
        "constant false (`constants: {is_return: false}` in an import mapping)."
    )


class EventRow(BaseModel):
    """One behavioural event."""

    customer_id: str = Field(
        min_length=1,
        max_length=CUSTOMER_ID_MAX_LENGTH,
        pattern=CUSTOMER_ID_PATTERN,
        description="Customer who acted.",
    )
    ts: datetime = Field(description="Event time (UTC).")
    event_type: EventType = Field(description="One of: " + ", ".join(EVENT_TYPES) + ".")
    category: str | None = Field(None, description="Product category the event concerns, if any.")
    session_id: str | None = Field(None, description="Session identifier.")


ROW_MODELS: dict[str, type[BaseModel]] = {
    "customers": CustomerRow,
    "transactions": TransactionRow,
    "events": EventRow,
}

ARROW_SCHEMAS: dict[str, pa.Schema] = {
    "customers": pa.schema(
        [
            ("customer_id", pa.string()),
            ("signup_ts", TS),
            ("region", pa.string()),
            ("gender", pa.string()),
            ("age_band", pa.string()),
            ("channel", pa.string()),
        ]
    ),
    "transactions": pa.schema(
        [
            ("order_id", pa.string()),
            ("customer_id", pa.string()),
            ("ts", TS),
            ("amount", pa.float64()),
            ("quantity", pa.int64()),
            ("category", pa.string()),
            ("is_return", pa.bool_()),
        ]
    ),
    "events": pa.schema(
        [
            ("customer_id", pa.string()),
            ("ts", TS),
            ("event_type", pa.string()),
            ("category", pa.string()),
            ("session_id", pa.string()),
        ]
    ),
}

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "signup_ts"),
    "transactions": ("order_id", "customer_id", "ts", "amount", "quantity", "is_return"),
    "events": ("customer_id", "ts", "event_type"),
}

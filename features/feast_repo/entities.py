"""Feast entities."""

from __future__ import annotations

from feast import Entity, ValueType

OWNER = "portrait-ml@users.noreply.github.com"


def customer() -> Entity:
    return Entity(
        name="customer",
        join_keys=["customer_id"],
        value_type=ValueType.STRING,
        description="A customer of the CDP, keyed by its opaque string id.",
        owner=OWNER,
        tags={"team": "portrait"},
    )

"""The one door to what Portrait uses of Feast beyond ``FeatureStore``'s public methods.

Everything here leans on Feast internals or undocumented conventions, so a Feast upgrade can change it:

* the provider's :class:`~feast.infra.online_stores.online_store.OnlineStore` and its plug-in methods
  (``online_read``, ``online_write_batch``, ``update``), called directly to read and write the pre-computed
  serving vectors in batches;
* the synthetic view ``__precomputed__<service>`` with its one Bytes feature ``vector``, which is where
  Feast's own ``OnlineStore.write_precomputed_vector`` / ``read_precomputed_vectors`` keep a service's
  ``PrecomputedFeatureVector`` per entity;
* the Redis online store's private, lazily created client (``RedisOnlineStore._get_client``), whose retry
  policy :func:`features.store.bound_redis_client` replaces.

No other module of the repository touches these: ``features/store.py`` calls the functions below, and
``tests/features/test_feast_internals.py`` pins the behaviour they rely on, so an upgrade that breaks it
fails there first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from feast import FeatureStore, FeatureView, Field
from feast.types import Bytes

if TYPE_CHECKING:
    from feast.infra.online_stores.online_store import OnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

PRECOMPUTED_VIEW_PREFIX = "__precomputed__"
"""Name prefix of Feast's synthetic view holding a FeatureService's pre-computed vectors."""
VECTOR_FEATURE = "vector"
"""The synthetic view's one feature: a serialized ``PrecomputedFeatureVector``."""

OnlineRow = tuple["EntityKeyProto", dict[str, "ValueProto"], datetime, datetime | None]
"""One row of ``OnlineStore.online_write_batch``: entity key, values, event and created timestamps."""


def online_store(store: FeatureStore) -> OnlineStore:
    """The online store object behind ``store`` (SQLite, Redis, ...), as Feast's provider holds it."""
    return store.provider.online_store


def precomputed_view(service: str) -> FeatureView:
    """Feast's synthetic view of a service's pre-computed vectors (the one its own helpers build per call)."""
    return FeatureView(
        name=f"{PRECOMPUTED_VIEW_PREFIX}{service}",
        entities=[],
        schema=[Field(name=VECTOR_FEATURE, dtype=Bytes)],
        source=None,
    )


def online_read(
    store: FeatureStore, view: FeatureView, keys: Sequence[EntityKeyProto], features: list[str]
) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
    """``OnlineStore.online_read``: per key, the row's event timestamp and values (``(None, None)`` if none).

    ``features`` may be changed by the store (Redis appends its timestamp field): pass a list you own.
    """
    return online_store(store).online_read(store.config, view, list(keys), features)


def online_write(store: FeatureStore, view: FeatureView, rows: Sequence[OnlineRow]) -> None:
    """``OnlineStore.online_write_batch`` of ``rows`` into ``view``'s online table."""
    online_store(store).online_write_batch(store.config, view, list(rows), progress=None)


def create_online_table(store: FeatureStore, view: FeatureView) -> None:
    """Make sure the online store can hold ``view`` (SQLite creates its table; Redis needs nothing)."""
    online_store(store).update(store.config, [], [view], [], [], partial=True)


def redis_client(store: FeatureStore) -> Any | None:
    """The Redis online store's client (created without connecting), or None when Feast's internals differ.

    Feast creates the client lazily on the online store object and keeps it, so settings made on it (such as
    its retry policy) hold for every later read and write of ``store``.
    """
    try:
        return online_store(store)._get_client(store.config.online_store)  # noqa: SLF001 - no public accessor
    except AttributeError:
        return None


__all__ = [
    "PRECOMPUTED_VIEW_PREFIX",
    "VECTOR_FEATURE",
    "OnlineRow",
    "create_online_table",
    "online_read",
    "online_store",
    "online_write",
    "precomputed_view",
    "redis_client",
]

"""The one door to what Portrait uses of Feast beyond ``FeatureStore``'s public methods.

Everything here leans on Feast internals or undocumented conventions, so a Feast upgrade can change it:

* the provider's :class:`~feast.infra.online_stores.online_store.OnlineStore` and its plug-in methods
  (``online_read``, ``online_write_batch``, ``update``), called directly to read and write the pre-computed
  serving vectors in batches;
* the synthetic view ``__precomputed__<service>`` with its one Bytes feature ``vector``, which is where
  Feast's own ``OnlineStore.write_precomputed_vector`` / ``read_precomputed_vectors`` keep a service's
  ``PrecomputedFeatureVector`` per entity;
* the Redis online store's private, lazily created client (``RedisOnlineStore._get_client``), whose retry
  policy :func:`features.store.bound_redis_client` replaces;
* the online stores' own layouts, which :mod:`features.bulk_load` writes directly: SQLite's table per view
  (``<project>_<view>``, one row per entity and feature) in the file the config names, and Redis' hash per
  entity (key: the serialized entity key + the project; fields: the murmur3 hash of ``<view>:<feature>`` and
  ``_ts:<view>``), with Feast's entity-key serialization (version 3) for one string join key; and which
  store options change those layouts (:func:`bulk_unsupported`);
* ``BaseRegistry.apply_materialization``, which records a materialized interval as Feast's own materialize
  does (public on the registry, but not on ``FeatureStore``);
* the file registry's store (``Registry._registry_store``, a ``FileRegistryStore`` with ``_filepath`` and
  ``_write_registry``), whose writes :func:`atomic_registry_writes` makes atomic.

No other module of the repository touches these: ``features/store.py`` and ``features/bulk_load.py`` call the
functions below, and ``tests/features/test_feast_internals.py`` pins the behaviour they rely on, so an upgrade
that breaks it fails there first.
"""

from __future__ import annotations

import os
import struct
import tempfile
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
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
    return synthetic_view(f"{PRECOMPUTED_VIEW_PREFIX}{service}", VECTOR_FEATURE)


def synthetic_view(name: str, feature: str) -> FeatureView:
    """A view with one Bytes feature and no source, as Feast builds for pre-computed vectors: its rows live in
    the online store only (a SQLite table of its own, or fields of the entities' Redis hashes)."""
    return FeatureView(name=name, entities=[], schema=[Field(name=feature, dtype=Bytes)], source=None)


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


# ---- the online stores' own layouts, for bulk writes (features.bulk_load) ---------------------------------


def bulk_unsupported(store: FeatureStore) -> str | None:
    """Why :mod:`features.bulk_load` cannot write this store's layout itself (None when it can).

    It writes what ``online_write_batch`` of the SQLite and Redis stores writes with their defaults; options
    that change the layout (view versioning, vector or OpenAI-compatible SQLite columns, Redis cluster or
    sentinel, key TTLs, another entity-key serialization) are left to Feast's own materialize.
    """
    config = store.config
    online = config.online_store
    if config.entity_key_serialization_version != 3:
        return f"entity_key_serialization_version {config.entity_key_serialization_version} (3 is written)"
    if getattr(config.registry, "enable_online_feature_view_versioning", False):
        return "online feature view versioning"
    if online.type == "sqlite":
        if getattr(online, "vector_enabled", False) or getattr(
            online, "enable_openai_compatible_store", False
        ):
            return "SQLite vector / OpenAI-compatible columns"
        return None
    if online.type == "redis":
        kind = getattr(online, "redis_type", "redis")
        if getattr(kind, "value", kind) != "redis":
            return f"Redis type {getattr(kind, 'value', kind)}"
        if getattr(online, "key_ttl_seconds", None):
            return "Redis key TTLs"
        return None
    return f"online store type {online.type!r}"


def sqlite_path(store: FeatureStore) -> Path:
    """The SQLite online store's database file, as Feast resolves it (relative to the repo path)."""
    return Path(online_store(store)._get_db_path(store.config))  # noqa: SLF001 - Feast's own resolution


def sqlite_table(store: FeatureStore, view: FeatureView) -> str:
    """The SQLite online store's table of ``view`` (``<project>_<view>``)."""
    from feast.infra.online_stores.helpers import compute_table_id

    return compute_table_id(store.project, view, False)


SQLITE_COLUMNS = ("entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts")
"""The columns ``SqliteOnlineStore.online_write_batch`` fills (without the vector / value_num options)."""


def sqlite_text(value: ValueProto) -> str | None:
    """The ``value_text`` column SQLite's ``online_write_batch`` writes for a value."""
    from feast.infra.online_stores.helpers import extract_text_and_num

    return extract_text_and_num(value, False)[0]


def entity_key_prefix(join_key: str) -> bytes:
    """The bytes that Feast's entity-key serialization (version 3) puts before a string join key's value.

    ``serialize_entity_key`` of ``{join_key: v}`` is this prefix, the UTF-8 length of ``v`` as a little-endian
    uint32, then ``v`` in UTF-8.
    """
    from feast.protos.feast.types.Value_pb2 import ValueType

    name = join_key.encode()
    return struct.pack("<III", 1, ValueType.STRING, len(name)) + name + struct.pack("<I", ValueType.STRING)


def redis_key_suffix(store: FeatureStore) -> bytes:
    """What the Redis store appends to a serialized entity key to make the entity's hash key: the project."""
    return store.project.encode("utf-8")


def redis_field(view: str, feature: str) -> bytes:
    """The Redis hash field of a view's feature (murmur3 of ``<view>:<feature>``, 4 bytes)."""
    from feast.infra.online_stores.helpers import _mmh3

    return _mmh3(f"{view}:{feature}")


def redis_ts_field(view: str) -> bytes:
    """The Redis hash field holding a view's event timestamp (a serialized protobuf Timestamp)."""
    return f"_ts:{view}".encode()


def redis_bulk_client(store: FeatureStore, timeout_s: float) -> Any:
    """A Redis client to the store's server with its own pool and a socket timeout fit for big pipelines.

    Built from the connection settings of Feast's client (host, port, db, password, TLS); the store's own
    client, whose timeouts are tuned for serving, is left alone.
    """
    import redis

    pool = redis_client(store).connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout_s}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def record_materialization(store: FeatureStore, intervals: dict[str, tuple[datetime, datetime]]) -> None:
    """Record ``intervals`` (view -> ``(start, end)``) as materialized in the registry, as
    ``FeatureStore.materialize`` does after loading each view (``registry.apply_materialization``, committed
    view by view: a file registry in "sync" cache mode reloads itself when the file changes, which would drop
    changes not yet committed)."""
    for view, (start, end) in intervals.items():
        store.registry.apply_materialization(
            store.get_feature_view(view), store.project, start, end, commit=True
        )


def atomic_registry_writes(store: FeatureStore) -> bool:
    """Make the store's file registry write a new file and rename it over the old one.

    Feast's ``FileRegistryStore`` truncates ``registry.db`` and writes it in place, and a reader in the default
    "sync" cache mode re-reads the file whenever its modification time changes: a read during a write (every
    materialization writes the registry) parses a truncated file and serves "feature view does not exist"
    until the next write. Returns whether the store has a file registry (now written atomically); other
    registries (SQL) write in database transactions already.
    """
    from feast.infra.registry.file import FileRegistryStore

    backing = getattr(store.registry, "_registry_store", None)
    if not isinstance(backing, FileRegistryStore):
        return False
    if getattr(backing, "_portrait_atomic", False):
        return True
    path = Path(backing._filepath)  # noqa: SLF001 - where Feast keeps it

    def write(registry_proto: Any) -> None:
        from feast.utils import _utc_now

        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(_utc_now())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(registry_proto.SerializeToString())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    backing._write_registry = write  # noqa: SLF001 - replaces the in-place write
    backing._portrait_atomic = True  # noqa: SLF001
    return True


__all__ = [
    "PRECOMPUTED_VIEW_PREFIX",
    "SQLITE_COLUMNS",
    "VECTOR_FEATURE",
    "OnlineRow",
    "atomic_registry_writes",
    "bulk_unsupported",
    "create_online_table",
    "entity_key_prefix",
    "online_read",
    "online_store",
    "online_write",
    "precomputed_view",
    "record_materialization",
    "redis_bulk_client",
    "redis_client",
    "redis_field",
    "redis_key_suffix",
    "redis_ts_field",
    "sqlite_path",
    "sqlite_table",
    "sqlite_text",
    "synthetic_view",
]

"""What ``features.feast_internals`` relies on in Feast: a Feast upgrade that changes it fails here first.

Pinned: the provider's online store and the signatures of the plug-in methods called on it, the synthetic view
Feast keeps pre-computed vectors in (written and read back both ways with Feast's own helpers), the Redis
online store's lazily created client and its ``set_retry``, and the ``PrecomputedFeatureVector`` fields that
``features.store.VectorLayout`` packs. For the bulk loader (``features.bulk_load``): the SQLite file, table,
columns, ``value_text`` and index name, the entity-key serialization, the Redis key and hash fields, the store
options that change those layouts, the registry's record of materialized intervals, and the file registry's
write that is made atomic. Also that no other module of the repository uses Feast privates.
"""

from __future__ import annotations

import inspect
import re
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from feast import FeatureStore, RepoConfig
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.infra.provider import Provider
from feast.protos.feast.core.PrecomputedFeatureVector_pb2 import (
    FeatureViewTimestamp,
    PrecomputedFeatureVector,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.descriptor import FieldDescriptor

from features import feast_internals as fi
from features import store as fs

REPO = Path(__file__).resolve().parents[2]


def _store(tmp_path: Path, online: dict[str, object]) -> FeatureStore:
    config = RepoConfig(
        project="internals",
        provider="local",
        registry={"registry_type": "file", "path": str(tmp_path / "registry.db")},
        online_store=online,
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=tmp_path,
    )
    return FeatureStore(repo_path=str(tmp_path), config=config)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> FeatureStore:
    return _store(tmp_path, {"type": "sqlite", "path": str(tmp_path / "online.db")})


@pytest.fixture
def redis_store(tmp_path: Path) -> FeatureStore:
    # Nothing listens on port 1: nothing here may connect.
    return _store(tmp_path, {"type": "redis", "connection_string": "127.0.0.1:1,socket_connect_timeout=0.1"})


def _key(customer_id: str) -> EntityKey:
    return EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)])


def _params(method: object) -> list[str]:
    return list(inspect.signature(method).parameters)  # type: ignore[arg-type]


def test_the_provider_exposes_its_online_store(sqlite_store, redis_store):
    assert isinstance(inspect.getattr_static(FeatureStore, "provider"), property)
    assert "online_store" in Provider.__annotations__
    assert isinstance(fi.online_store(sqlite_store), SqliteOnlineStore)
    assert isinstance(fi.online_store(redis_store), RedisOnlineStore)
    assert fi.online_store(sqlite_store) is fi.online_store(sqlite_store)  # one object, kept by the store


@pytest.mark.parametrize("cls", [OnlineStore, SqliteOnlineStore, RedisOnlineStore])
def test_online_store_methods_have_the_signatures_called(cls):
    assert _params(cls.online_read)[:5] == ["self", "config", "table", "entity_keys", "requested_features"]
    assert _params(cls.online_write_batch)[:5] == ["self", "config", "table", "data", "progress"]
    assert _params(cls.update)[:7] == [
        "self",
        "config",
        "tables_to_delete",
        "tables_to_keep",
        "entities_to_delete",
        "entities_to_keep",
        "partial",
    ]


def test_rows_written_are_read_back_as_timestamp_and_values(sqlite_store):
    view = fi.precomputed_view("svc")
    fi.create_online_table(sqlite_store, view)
    written = datetime(2024, 6, 1, tzinfo=UTC)
    fi.online_write(
        sqlite_store, view, [(_key("A"), {fi.VECTOR_FEATURE: Value(bytes_val=b"a")}, written, None)]
    )
    (ts, values), (no_ts, nothing) = fi.online_read(sqlite_store, view, [_key("A"), _key("B")], ["vector"])
    assert ts is not None and ts.replace(tzinfo=UTC) == written
    assert values is not None and values[fi.VECTOR_FEATURE].bytes_val == b"a"
    assert no_ts is None and nothing is None


def test_the_vector_view_is_the_one_feasts_own_helpers_use(sqlite_store):
    """Vectors written through the adapter are the ones Feast reads, and the other way round."""
    online = fi.online_store(sqlite_store)
    config, project = sqlite_store.config, sqlite_store.project
    view = fi.precomputed_view("svc")
    assert view.name == "__precomputed__svc" and [f.name for f in view.features] == [fi.VECTOR_FEATURE]
    assert fs.vector_view("svc").name == view.name and fs.VECTOR_FEATURE == fi.VECTOR_FEATURE
    fi.create_online_table(sqlite_store, view)
    now = datetime.now(UTC)
    fi.online_write(sqlite_store, view, [(_key("A"), {"vector": Value(bytes_val=b"ours")}, now, None)])
    assert online.read_precomputed_vectors(config, "svc", project, [_key("A"), _key("B")]) == [b"ours", None]
    online.write_precomputed_vector(config, "svc", project, _key("B"), b"feast's")
    assert fs.read_vectors(sqlite_store, [_key("A"), _key("B")], view) == [b"ours", b"feast's"]


def test_the_redis_client_is_created_without_connecting_and_kept(redis_store):
    client = fi.redis_client(redis_store)
    assert isinstance(client, redis.Redis)
    assert fi.redis_client(redis_store) is client  # Feast keeps it: settings made on it hold
    fs.bound_redis_client(redis_store)
    assert client.get_retry().get_retries() == 1
    assert fi.online_store(redis_store)._get_client(redis_store.config.online_store) is client  # noqa: SLF001


def test_the_redis_client_accessor_is_none_for_other_online_stores(sqlite_store):
    assert fi.redis_client(sqlite_store) is None


def _field(message: type, name: str) -> FieldDescriptor:
    fields = message.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]
    assert name in fields, f"{message.__name__} has no field {name!r}"
    return fields[name]


def test_precomputed_vector_has_the_fields_the_layout_packs():
    names = _field(PrecomputedFeatureVector, "feature_names")
    assert names.is_repeated and names.type == FieldDescriptor.TYPE_STRING
    values = _field(PrecomputedFeatureVector, "values")
    assert values.is_repeated and values.message_type.full_name == "feast.types.Value"
    stamps = _field(PrecomputedFeatureVector, "fv_timestamps")
    assert stamps.is_repeated and stamps.message_type.full_name == FeatureViewTimestamp.DESCRIPTOR.full_name
    assert (
        _field(PrecomputedFeatureVector, "precomputed_at").message_type.full_name
        == "google.protobuf.Timestamp"
    )
    assert _field(FeatureViewTimestamp, "feature_view_name").type == FieldDescriptor.TYPE_STRING
    assert (
        _field(FeatureViewTimestamp, "event_timestamp").message_type.full_name == "google.protobuf.Timestamp"
    )
    for kind in ("bytes_val", "string_val", "int64_val", "int32_val", "double_val", "float_val"):
        assert _field(Value, kind).containing_oneof.name == "val"


def test_a_packed_vector_round_trips():
    layout = fs.VectorLayout(numeric=("v__a", "v__b"), other=("v__c",))
    packed = layout.pack([Value(int64_val=3), Value()], [Value(string_val="x")])
    vector = PrecomputedFeatureVector.FromString(PrecomputedFeatureVector(values=packed).SerializeToString())
    assert len(vector.values[0].bytes_val) == 16 and vector.values[1].string_val == "x"
    assert layout.signature_of(layout.marker("sig")) == "sig"


_PRIVATE = re.compile(
    r"\b_get_provider\s*\(|\._get_client(_async)?\s*\(|\.provider\.online_store\b"
    r"|\b_get_db_path\b|\b_mmh3\b|\b_redis_key\b|\b_registry_store\b|\b_write_registry\b"
)


def test_only_the_adapter_touches_feast_internals():
    offenders = []
    for package in ("portrait", "features", "training", "serving"):
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "features" / "feast_internals.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if _PRIVATE.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


# ---- what features.bulk_load relies on: the online stores' layouts, the registry ----------------------------


def _view_with_source(tmp_path: Path):
    from datetime import timedelta

    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    entity = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    source = FileSource(
        name="src",
        path=str(tmp_path / "*.parquet"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    schema = [
        Field(name="spend", dtype=Float64),
        Field(name="orders", dtype=Int64),
        Field(name="region", dtype=String),
    ]
    return entity, FeatureView(
        name="facts", entities=[entity], ttl=timedelta(days=1), schema=schema, source=source
    )


def test_the_bulk_loader_handles_the_default_layouts_only(tmp_path):
    assert (
        fi.bulk_unsupported(_store(tmp_path / "a", {"type": "sqlite", "path": str(tmp_path / "a.db")}))
        is None
    )
    assert (
        fi.bulk_unsupported(_store(tmp_path / "b", {"type": "redis", "connection_string": "127.0.0.1:1"}))
        is None
    )
    sqlite_vectors = _store(
        tmp_path / "c", {"type": "sqlite", "path": str(tmp_path / "c.db"), "vector_enabled": True}
    )
    assert "vector" in fi.bulk_unsupported(sqlite_vectors)
    ttl = _store(tmp_path / "d", {"type": "redis", "connection_string": "127.0.0.1:1", "key_ttl_seconds": 60})
    assert "TTL" in fi.bulk_unsupported(ttl)
    cluster = _store(
        tmp_path / "e", {"type": "redis", "redis_type": "redis_cluster", "connection_string": "h:1"}
    )
    assert "redis_cluster" in fi.bulk_unsupported(cluster)


def test_sqlite_rows_are_where_and_as_feast_writes_them(sqlite_store, tmp_path):
    """The file, the table name, the columns and value_text of SQLite's online_write_batch."""
    import sqlite3

    entity, view = _view_with_source(tmp_path)
    sqlite_store.apply([entity, view])
    assert fi.sqlite_path(sqlite_store) == tmp_path / "online.db"
    written = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    values = {
        "spend": Value(double_val=2.5),
        "orders": Value(int64_val=3),
        "region": Value(string_val="north"),
    }
    fi.online_write(sqlite_store, view, [(_key("A"), values, written, written)])
    table = fi.sqlite_table(sqlite_store, view)
    assert table == "internals_facts"
    with sqlite3.connect(fi.sqlite_path(sqlite_store)) as con:
        columns = [row[1] for row in con.execute(f'PRAGMA table_info("{table}")')]
        assert set(fi.SQLITE_COLUMNS) <= set(columns) and set(columns) - set(fi.SQLITE_COLUMNS) == {
            "vector_value"
        }
        rows = con.execute(
            f'SELECT {", ".join(fi.SQLITE_COLUMNS)} FROM "{table}" ORDER BY feature_name'
        ).fetchall()
        indexes = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    key = serialize_entity_key(_key("A"), entity_key_serialization_version=3)
    epoch = int(written.replace(tzinfo=None).timestamp())
    assert rows == [
        (key, name, values[name].SerializeToString(), fi.sqlite_text(values[name]), epoch, epoch)
        for name in ("orders", "region", "spend")
    ]
    assert [fi.sqlite_text(values[n]) for n in ("orders", "region", "spend")] == ["3", "north", "2.5"]
    assert f"{table}_ek" in indexes  # the index the bulk loader moves to a rebuilt table, by name


def test_the_entity_key_prefix_is_feasts_serialization():
    for customer_id in ("C1", "", "é" * 300):
        raw = customer_id.encode()
        expected = serialize_entity_key(_key(customer_id), entity_key_serialization_version=3)
        assert fi.entity_key_prefix("customer_id") + struct.pack("<I", len(raw)) + raw == expected


def test_redis_keys_and_fields_are_feasts(redis_store):
    from feast.infra.online_stores.helpers import _redis_key

    entity, view = _view_with_source(Path("/nonexistent"))
    online = fi.online_store(redis_store)
    key = serialize_entity_key(_key("A"), entity_key_serialization_version=3)
    assert key + fi.redis_key_suffix(redis_store) == _redis_key(redis_store.project, _key("A"), 3)
    names, fields = online._generate_hset_keys_for_features(view, ["spend", "orders"])  # noqa: SLF001
    assert fields == [fi.redis_field("facts", "spend"), fi.redis_field("facts", "orders"), "_ts:facts"]
    assert fi.redis_ts_field("facts") == b"_ts:facts" and names[-1] == "_ts:facts"


def test_the_bulk_redis_client_has_its_own_pool_and_timeout(redis_store):
    shared = fi.redis_client(redis_store)
    bulk = fi.redis_bulk_client(redis_store, 42.0)
    assert bulk is not shared and bulk.connection_pool is not shared.connection_pool
    kwargs, base = bulk.connection_pool.connection_kwargs, shared.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 42.0
    assert {k: kwargs[k] for k in ("host", "port", "db")} == {k: base[k] for k in ("host", "port", "db")}
    bulk.close()


def test_recording_materialization_is_what_feasts_incremental_logic_reads(sqlite_store, tmp_path):
    entity, view = _view_with_source(tmp_path)
    sqlite_store.apply([entity, view])
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
    fi.record_materialization(sqlite_store, {"facts": (start, end)})
    fresh = FeatureStore(repo_path=str(tmp_path), config=sqlite_store.config)
    recorded = fresh.get_feature_view("facts")
    assert recorded.materialization_intervals == [(start, end)]
    assert recorded.most_recent_end_time == end  # where materialize_incremental continues


def test_file_registry_writes_become_atomic(sqlite_store, tmp_path, monkeypatch):
    """A registry write replaces the file (a new inode) instead of truncating and rewriting it in place."""
    entity, view = _view_with_source(tmp_path)
    assert fi.atomic_registry_writes(sqlite_store) is True
    assert fi.atomic_registry_writes(sqlite_store) is True  # once is enough
    path = tmp_path / "registry.db"
    sqlite_store.apply([entity])
    inode = path.stat().st_ino
    truncated: list[str] = []
    real_open = open

    def watch(file, mode="r", *args, **kwargs):  # noqa: ANN001 - builtins.open's signature
        if Path(str(file)) == path and "w" in mode:
            truncated.append(mode)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", watch)
    sqlite_store.apply([view])
    assert truncated == [] and path.stat().st_ino != inode
    assert [
        v.name for v in FeatureStore(repo_path=str(tmp_path), config=sqlite_store.config).list_feature_views()
    ] == ["facts"]
    assert not list(tmp_path.glob(".registry.db.*"))


def test_atomic_registry_writes_leave_sql_registries_alone(tmp_path):
    config = RepoConfig(
        project="internals",
        provider="local",
        registry={"registry_type": "sql", "path": f"sqlite:///{tmp_path / 'registry.sqlite'}"},
        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=tmp_path,
    )
    assert fi.atomic_registry_writes(FeatureStore(repo_path=str(tmp_path), config=config)) is False


def test_synthetic_views_are_the_precomputed_ones():
    view = fi.synthetic_view("__precomputed__svc", fi.VECTOR_FEATURE)
    assert view.name == fi.precomputed_view("svc").name
    assert [(f.name, str(f.dtype)) for f in view.features] == [
        (f.name, str(f.dtype)) for f in fi.precomputed_view("svc").features
    ]

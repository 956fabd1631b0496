"""What ``features.feast_internals`` relies on in Feast: a Feast upgrade that changes it fails here first.

Pinned: the provider's online store and the signatures of the plug-in methods called on it, the synthetic view
Feast keeps pre-computed vectors in (written and read back both ways with Feast's own helpers), the Redis
online store's lazily created client and its ``set_retry``, and the ``PrecomputedFeatureVector`` fields that
``features.store.VectorLayout`` packs. Also that no other module of the repository uses Feast privates.
"""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from feast import FeatureStore, RepoConfig
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


_PRIVATE = re.compile(r"\b_get_provider\s*\(|\._get_client(_async)?\s*\(|\.provider\.online_store\b")


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

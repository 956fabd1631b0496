"""The bulk loader (features/bulk_load.py) on the real Redis online store (production profile).

* 10,000 customers loaded by Feast's own materialize into one project and by the bulk loader into another give
  the same ``get_online_features`` answers, the same Redis hashes field for field and the same serving vectors.
* An incremental load rewrites only the changed customers' Feast rows and switches serving to the other vector
  slot in one step; readers follow, the previous slot is removed.
* Serving does not notice a load (concurrent readers: no error, one load per request); a load killed midway
  leaves the previous values; a Redis emptied under a running reader makes it unready, and the next
  (incremental) load notices the missing marker and restores every customer.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import redis
from feast.protos.feast.core.PrecomputedFeatureVector_pb2 import PrecomputedFeatureVector
from feast.protos.feast.types.Value_pb2 import Value

from features import feast_internals as fi
from features import repo
from features import store as fs
from portrait.settings import Settings
from tests.features.test_bulk_load import (
    LOAD_END,
    Readers,
    assert_same_online_features,
    build_features,
    copy_features,
    customers,
    feast_materialize,
    kill_midway,
    read_tenure,
    rewrite,
    serving_reader,
    vectors_without_time,
)
from tests.production.conftest import production_settings

pytestmark = pytest.mark.production


@pytest.fixture(scope="module")
def features_10k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_features(tmp_path_factory.mktemp("redis10k"), 10_000)


@pytest.fixture(scope="module")
def features_2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_features(tmp_path_factory.mktemp("redis2k"), 2_000, seed=5)


def _settings(home: Path, pg: str, redis_url: str, prefix: str, **extra: object) -> Settings:
    return production_settings(home, postgres_url=pg, redis_url=redis_url, key_prefix=prefix).model_copy(
        update=extra
    )


def _hash_fields(client: redis.Redis, store, cid: str) -> dict[bytes, bytes]:
    key = fi.entity_key_prefix("customer_id")
    raw = cid.encode()
    return client.hgetall(key + len(raw).to_bytes(4, "little") + raw + fi.redis_key_suffix(store))


def _drop_project(url: str, project: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=b"*" + project.encode(), count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def loaded(features_2k, servers, pg_database, key_prefix, tmp_path):
    settings = _settings(
        copy_features(features_2k, tmp_path / "ws"), pg_database, servers.redis_url, key_prefix
    )
    settings = settings.model_copy(update={"online_load_batch": 500})
    store = repo.apply(settings)
    assert fs.materialize(settings, end=LOAD_END, store=store)["mode"] == "full"
    return settings, store


def test_bulk_load_reads_back_what_feasts_materialize_writes(
    features_10k, servers, pg_database, key_prefix, tmp_path
):
    home = copy_features(features_10k, tmp_path / "ws")
    bulk = _settings(home, pg_database, servers.redis_url, key_prefix)
    feast_ = _settings(home, pg_database, servers.redis_url, f"{key_prefix}_f")
    try:
        bulk_store, feast_store = repo.apply(bulk), repo.apply(feast_)
        result = fs.materialize(bulk, end=LOAD_END, store=bulk_store)
        feast_materialize(feast_, feast_store)
        ids = fs.feature_table_ids(bulk)
        assert len(ids) == 10_000 and result["vectors"] == 10_000 and result["load"]["written"] == 10_000
        assert assert_same_online_features(bulk_store, feast_store, [*ids, "nobody"]) > 10_000 * 50
        assert vectors_without_time(bulk_store, ids) == vectors_without_time(feast_store, ids)
        for view in bulk_store.list_feature_views():
            assert (
                view.materialization_intervals
                == feast_store.get_feature_view(view.name).materialization_intervals
            )
        # The hashes themselves, field for field (the vector's write time and precomputed_at aside).
        client = redis.Redis.from_url(servers.redis_url)
        vector_ts = fi.redis_ts_field(fs.vector_view().name)
        vector_field = fi.redis_field(fs.vector_view().name, fi.VECTOR_FEATURE)
        for cid in ids[::50]:
            mine, theirs = _hash_fields(client, bulk_store, cid), _hash_fields(client, feast_store, cid)
            assert mine.keys() == theirs.keys()
            for name in mine.keys() - {vector_ts, vector_field}:
                assert mine[name] == theirs[name], (cid, name)
            vectors = [
                PrecomputedFeatureVector.FromString(Value.FromString(h[vector_field]).bytes_val)
                for h in (mine, theirs)
            ]
            for vector in vectors:
                vector.ClearField("precomputed_at")
            assert vectors[0] == vectors[1]
        counts = [
            sum(1 for _ in client.scan_iter(match=f"*{s.feast_project_name}".encode(), count=1000))
            for s in (bulk, feast_)
        ]
        client.close()
        assert counts == [10_001, 10_001]  # one hash per customer + the sentinel entity, in both
    finally:
        _drop_project(servers.redis_url, feast_.feast_project_name)


def test_incremental_loads_switch_serving_to_the_other_slot_in_one_step(loaded, servers):
    settings, store = loaded
    ids = customers(settings.home)
    changed = ids[:25]
    tagger = serving_reader(settings)  # reads slot "a", and must follow the switch
    before = tagger.read_known(changed)[0]["spend_lifetime"].tolist()

    def bump(frame: pd.DataFrame) -> None:
        frame.loc[frame.customer_id.isin(changed), "spend_lifetime"] += 1.0

    rewrite(settings.home, "customer_transactions", bump)
    result = fs.materialize(settings, end=LOAD_END, store=store)
    load = result["load"]
    assert (result["mode"], load["written"], load["deleted"]) == ("incremental", 25, 0)
    assert result["vectors"] == 2_000  # a complete new slot
    assert fs.load_marker(store)["slot"] == "b" and fs.load_marker(store)["rows"] == "complete"
    assert tagger.read_known(changed)[0]["spend_lifetime"].tolist() == [v + 1.0 for v in before]
    offline = pd.read_parquet(
        settings.features_dir / "customer_transactions" / "snapshot=20250102T000000.parquet"
    ).set_index("customer_id")
    assert (
        fs.online_features(store, "clv", changed)["spend_lifetime"]
        == offline.loc[changed, "spend_lifetime"].tolist()
    )
    client = redis.Redis.from_url(servers.redis_url)
    slot_a = fi.redis_field(fs.vector_slot_view(fs.SERVING_SERVICE, "a").name, fi.VECTOR_FEATURE)
    slot_b = fi.redis_field(fs.vector_slot_view(fs.SERVING_SERVICE, "b").name, fi.VECTOR_FEATURE)
    fields = _hash_fields(client, store, ids[100])
    assert slot_b in fields and slot_a not in fields  # the previous slot is removed
    keys = sum(1 for _ in client.scan_iter(match=f"*{settings.feast_project_name}".encode(), count=1000))
    client.close()
    assert keys == 2_001
    again = fs.materialize(settings, end=LOAD_END, store=store)
    assert (again["load"]["written"], fs.load_marker(store)["slot"]) == (0, "a")
    assert tagger.read_known(changed)[0]["spend_lifetime"].tolist() == [v + 1.0 for v in before]


def _add_tenure(home: Path, days: float) -> None:
    def change(frame: pd.DataFrame) -> None:
        frame["tenure_days"] += days

    rewrite(home, "customer_profile", change)


def test_a_load_under_concurrent_reads_gives_no_errors(loaded):
    settings, store = loaded
    ids = customers(settings.home)[::10]
    tagger = serving_reader(settings)
    before = tuple(read_tenure(tagger, ids))
    _add_tenure(settings.home, 1000.0)
    with Readers(tagger, ids) as readers:
        while len(readers.seen) < 5:
            time.sleep(0.01)
        fs.materialize(settings, end=LOAD_END, store=store)
        time.sleep(0.3)
    after = tuple(read_tenure(tagger, ids))
    assert readers.errors == []
    assert after == tuple(t + 1000.0 for t in before)
    full_reads = [seen for seen in readers.seen if seen]
    assert len(full_reads) > 10
    assert set(full_reads) <= {before, after}  # every request saw one load, never a mix


def test_a_load_killed_midway_leaves_the_previous_values_served(loaded, tmp_path):
    settings, store = loaded
    sample = customers(settings.home)[::7]
    before, marker = read_tenure(serving_reader(settings), sample), fs.load_marker(store)
    _add_tenure(settings.home, 500.0)
    kill_midway(settings, tmp_path)
    reader = serving_reader(settings)
    assert read_tenure(reader, sample) == before
    assert fs.load_marker(store) == marker and reader.check_store() is None
    tenure = fs.online_features(store, "churn", sample)["tenure_days"]
    assert tenure == before  # Feast's own rows too: they are rewritten only after the switch
    result = fs.materialize(settings, end=LOAD_END, store=store)
    assert result["load"]["generation"] == marker["generation"] + 1
    assert read_tenure(serving_reader(settings), sample) == [t + 500.0 for t in before]


def test_redis_emptied_under_a_running_reader_is_unready_until_the_next_load(
    features_2k, pg_database, key_prefix, private_redis, tmp_path
):
    settings = _settings(
        copy_features(features_2k, tmp_path / "ws"), pg_database, private_redis.url, key_prefix
    )
    store = repo.apply(settings)
    fs.materialize(settings, end=LOAD_END, store=store)
    ids = customers(settings.home)
    tagger = serving_reader(settings)
    assert tagger.check_store() is None
    found: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        for _ in range(200):
            try:
                found.append(int(tagger.read_known(ids[:50])[1].sum()))
            except BaseException as exc:  # noqa: BLE001 - every failure is a finding
                errors.append(exc)
            time.sleep(0.005)

    import threading

    reader = threading.Thread(target=read)
    reader.start()
    while not found:
        time.sleep(0.01)
    redis.Redis(port=private_redis.port).flushall()
    reader.join()
    assert errors == [] and found[0] == 50 and found[-1] == 0
    reason = tagger.check_store()
    assert reason is not None and "marker" in reason
    result = fs.materialize(settings, end=LOAD_END, store=store)  # incremental, as scheduled
    assert result["mode"] == "full" and "marker is missing" in result["load"]["why"]
    assert result["load"]["written"] == len(ids) == result["vectors"]
    known, present = tagger.read_known(ids)
    assert present.all() and tagger.check_store() is None

"""Feast in the production profile: SQL registry on PostgreSQL, online store in Redis."""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd
import pytest
import redis
import sqlalchemy as sa

from features import repo
from features import store as fs
from features.feast_repo.feature_services import MODEL_SERVICES
from portrait.settings import Settings
from tests.production.conftest import SNAPSHOT, production_settings, snapshot_customers

pytestmark = pytest.mark.production


def _same(a: object, b: object) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if isinstance(a, float):
        return b == pytest.approx(a)
    return a == b


def test_redis_online_features_equal_sqlite(prod_home, servers, pg_database, key_prefix):
    local = Settings(home=prod_home, profile="local", mlflow_tracking_uri=None)
    prod = production_settings(
        prod_home, postgres_url=pg_database, redis_url=servers.redis_url, key_prefix=key_prefix
    )
    end = SNAPSHOT + timedelta(days=1)
    stores = {}
    for settings in (local, prod):
        store = repo.apply(settings)
        assert fs.materialize(settings, end=end, store=store)["mode"] == "full"
        stores[settings.profile] = store
    assert type(stores["production"].registry).__name__ == "SqlRegistry"
    assert stores["production"].project == f"portrait_{key_prefix}"

    customers = snapshot_customers(prod_home)
    ids = [*pd.Series(customers).sample(300, random_state=1), "nobody"]
    compared = 0
    for model in MODEL_SERVICES:
        sqlite = fs.online_features(stores["local"], model, ids)
        redis_ = fs.online_features(stores["production"], model, ids)
        assert sqlite.keys() == redis_.keys()
        for name, values in sqlite.items():
            for i, value in enumerate(values):
                assert _same(value, redis_[name][i]), (model, name, ids[i], value, redis_[name][i])
                compared += 1
        assert redis_["orders_lifetime" if "orders_lifetime" in redis_ else "tenure_days"][-1] is None
    assert compared > 10_000

    # The data really is in the servers: one Redis hash per customer under the project's keys, and the
    # registry in the test's PostgreSQL database.
    client = redis.Redis.from_url(servers.redis_url)
    keys = sum(1 for _ in client.scan_iter(match=f"*portrait_{key_prefix}".encode(), count=1000))
    client.close()
    assert keys == len(set(customers)) + 1  # + the entity recording the serving vectors' materialization
    # Every customer's serving vector is in Redis too (written by fs.materialize, read by /v1/tags).
    store = stores["production"]
    blobs = store._get_provider().online_store.read_precomputed_vectors(  # noqa: SLF001
        store.config, fs.SERVING_SERVICE, store.project, [fs.entity_key(c) for c in ids]
    )
    assert [b is not None for b in blobs] == [True] * (len(ids) - 1) + [False]
    engine = sa.create_engine(pg_database)
    with engine.connect() as conn:
        services = conn.execute(
            sa.text("SELECT count(*) FROM feature_services WHERE project_id = :p"),
            {"p": prod.feast_project_name},
        ).scalar_one()
    engine.dispose()
    assert services == len(MODEL_SERVICES) + 1  # + the serving service


def test_projects_are_isolated_in_shared_servers(prod_home, servers, pg_database, key_prefix):
    """Two deployments on the same Redis and PostgreSQL, told apart only by the key prefix."""
    first = production_settings(
        prod_home, postgres_url=pg_database, redis_url=servers.redis_url, key_prefix=key_prefix
    )
    other = production_settings(
        prod_home, postgres_url=pg_database, redis_url=servers.redis_url, key_prefix=f"{key_prefix}_b"
    )
    store = repo.apply(first)
    fs.materialize(first, end=SNAPSHOT + timedelta(days=1), store=store)
    assert fs.feature_store(other).list_feature_services() == []
    other_store = repo.apply(other)  # same definitions, nothing materialized under this project
    customers = snapshot_customers(prod_home)
    ids = customers[:20]
    assert all(v is not None for v in fs.online_features(store, "churn", ids)["tenure_days"])
    assert all(v is None for v in fs.online_features(other_store, "churn", ids)["tenure_days"])
    cleanup = redis.Redis.from_url(servers.redis_url)
    stray = list(cleanup.scan_iter(match=f"*portrait_{key_prefix}_b".encode(), count=1000))
    if stray:
        cleanup.delete(*stray)
    cleanup.close()

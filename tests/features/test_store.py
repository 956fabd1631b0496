"""The Feast repo: apply, materialize into SQLite, online == offline, point-in-time retrieval, and the
workspace's feature_store.yaml (what Portrait opens and what the feast CLI reads)."""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd
import pytest
from feast.repo_config import load_repo_config

from features import repo
from features import store as fs
from features.pipeline import compute_features
from portrait.backends import redis_connection_string
from portrait.settings import Settings
from tests.conftest import TINY_SNAPSHOT


@pytest.fixture
def built(tiny_clean):
    snaps = [TINY_SNAPSHOT - timedelta(days=30), TINY_SNAPSHOT]
    compute_features(tiny_clean.clean_dir, tiny_clean.features_dir, snaps)
    store = repo.apply(tiny_clean)
    return tiny_clean, store


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if isinstance(a, float):
        return b == pytest.approx(a)
    return a == b


def test_registry_has_one_service_per_model(built):
    _, store = built
    names = {s.name for s in store.list_feature_services()}
    assert names == {"churn_v1", "conversion_v1", "clv_v1", "lookalike_v1", fs.SERVING_SERVICE}
    assert {v.name for v in store.list_feature_views()} == {
        "customer_profile",
        "customer_transactions",
        "customer_behaviour",
        "customer_realtime",  # pushed per event (features.realtime), loaded from its batch table
    }
    lookalike = fs.feature_names(store, "lookalike")
    assert "tenure_days" in lookalike and "region" not in lookalike
    assert "region" in fs.feature_names(store, "churn")


def test_online_features_equal_offline_table(built):
    settings, store = built
    result = fs.materialize(settings, end=TINY_SNAPSHOT + timedelta(days=1))
    assert result["mode"] == "full"
    ids = ["A", "B", "C", "nobody"]
    online = fs.online_features(store, "churn", ids)
    offline = {
        view: pd.read_parquet(settings.features_dir / view / "snapshot=20240601T000000.parquet")
        for view in ("customer_profile", "customer_transactions", "customer_behaviour")
    }
    names = fs.feature_names(store, "churn")
    checked = 0
    for i, cid in enumerate(ids[:3]):
        for frame in offline.values():
            row = frame[frame.customer_id == cid].iloc[0]
            for name in frame.columns:
                if name in names:
                    assert _same(row[name], online[name][i]), (cid, name, row[name], online[name][i])
                    checked += 1
    assert checked > 100
    assert online["orders_lifetime"][3] is None  # unknown customer: no values


def test_incremental_materialize_continues(built):
    settings, store = built
    fs.materialize(settings, end=TINY_SNAPSHOT - timedelta(days=10))
    online = fs.online_features(store, "churn", ["A"])
    assert online["orders_lifetime"][0] == 2  # the earlier snapshot (2024-05-02): o1, o2
    second = fs.materialize(settings, end=TINY_SNAPSHOT + timedelta(days=1))
    assert second["mode"] == "incremental"
    assert fs.online_features(store, "churn", ["A"])["orders_lifetime"][0] == 3


def test_historical_features_are_point_in_time(built):
    settings, store = built
    entity_df = pd.DataFrame(
        {"customer_id": ["A", "A"], "event_timestamp": [TINY_SNAPSHOT - timedelta(days=30), TINY_SNAPSHOT]}
    )
    frame = fs.historical_features(settings, "churn", entity_df, store).sort_values("event_timestamp")
    assert list(frame.orders_lifetime) == [2, 3]


# ---- feature_store.yaml: the workspace's Feast configuration ---------------------------------------------


def _production(settings: Settings, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": settings.home,
        "profile": "production",
        "postgres_url": "postgresql://portrait:pg%40secret$1@db.internal:5433/features",
        "redis_url": "redis://:redis secret$2@cache.internal:6380/3",
        "redis_key_prefix": "blue",
        "redis_timeout_s": 0.5,
        "postgres_connect_timeout_s": 7,
        "materialize_batch_rows": 1234,
    }
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


def test_apply_writes_the_yaml_the_store_is_opened_from(built):
    settings, store = built
    yaml_path = settings.feast_dir / fs.FEAST_YAML
    assert yaml_path.is_file() and (settings.feast_dir / fs.REPO_FILE).is_file()
    loaded = load_repo_config(settings.feast_dir, yaml_path)  # as Feast's CLI reads it
    assert loaded == store.config == fs.repo_config(settings)
    assert loaded.registry.registry_type == "file" and loaded.online_store.type == "sqlite"
    assert type(loaded.offline_store).__name__ == "DuckDBOfflineStoreConfig"
    # Paths relative to the yaml's folder: the files live beside it.
    assert all((settings.feast_dir / name).is_file() for name in ("registry.db", "online_store.db"))
    assert not list(settings.feast_dir.glob(".*.tmp"))


def test_yaml_is_rewritten_only_when_it_changes(workspace):
    path = fs.write_repo(workspace) / fs.FEAST_YAML
    before = path.stat().st_mtime_ns
    fs.write_repo(workspace)
    assert path.stat().st_mtime_ns == before
    changed = Settings(home=workspace.home, materialize_batch_rows=77)
    fs.write_repo(changed)
    assert load_repo_config(changed.feast_dir, path).materialization_config.online_write_batch_size == 77


def test_production_yaml_keeps_passwords_out_and_loads_to_the_same_config(workspace, monkeypatch):
    settings = _production(workspace)
    fs.write_repo(settings)
    text = (settings.feast_dir / fs.FEAST_YAML).read_text()
    assert "secret" not in text
    assert f"${{{fs.POSTGRES_PASSWORD_VAR}}}" in text and f"${{{fs.REDIS_PASSWORD_VAR}}}" in text

    config = fs.repo_config(settings)
    registry, online = config.registry, config.online_store
    assert type(registry).__name__ == "SqlRegistryConfig"
    assert registry.path == "postgresql+psycopg://portrait:pg%40secret$1@db.internal:5433/features"
    assert registry.serve_features_while_materializing is True
    assert registry.sqlalchemy_config_kwargs["connect_args"] == {"connect_timeout": 7}
    assert online.type == "redis"
    assert online.connection_string == redis_connection_string(settings.redis_url, timeout_s=0.5)
    assert "password=redis secret$2" in online.connection_string
    assert config.project == "portrait_blue" == settings.feast_project_name
    assert config.entity_key_serialization_version == 3
    assert config.materialization_config.online_write_batch_size == 1234

    # The feast CLI: Feast's own loader fills the ${VAR}s from the environment.
    monkeypatch.setenv(fs.POSTGRES_PASSWORD_VAR, "pg%40secret$1")
    monkeypatch.setenv(fs.REDIS_PASSWORD_VAR, "redis secret$2")
    assert load_repo_config(settings.feast_dir, settings.feast_dir / fs.FEAST_YAML) == config


def test_production_yaml_without_passwords_needs_no_variables(workspace):
    settings = _production(
        workspace, postgres_url="postgresql://postgres@db/portrait", redis_url="redis://cache:6379/0"
    )
    written = fs.feast_yaml(settings)
    assert written.secrets == {} and "${" not in written.text
    loaded = load_repo_config(settings.feast_dir, fs.write_repo(settings) / fs.FEAST_YAML)
    assert loaded == fs.repo_config(settings)

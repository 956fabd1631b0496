"""Feast on the cluster profile: training frames from the Spark offline store and materialization from
Spark-built tables give what the DuckDB path gives."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from features import repo
from features import store as fs
from features.pipeline import VIEWS
from features.realtime import VIEW as REALTIME_VIEW
from features.spark import PortraitSparkOfflineStoreConfig
from features.tables import snapshot_path
from portrait.catalogue import SERVING_SERVICE
from tests.cluster.compare import assert_same_values
from tests.cluster.conftest import SNAPSHOT, Deployment, Workspaces, cluster_settings

pytestmark = [pytest.mark.production, pytest.mark.slow]


def _customers(workspaces: Workspaces) -> list[str]:
    path = snapshot_path(workspaces.spark / "data" / "features", "customer_profile", SNAPSHOT)
    return pd.read_parquet(path, columns=["customer_id"]).customer_id.tolist()


def test_cluster_profile_feast_yaml(tmp_path: Path) -> None:
    """The production profile's registry and online store, Feast's Spark offline store (no server needed)."""
    settings = cluster_settings(tmp_path, spark_conf={"spark.executor.memory": "2g"})
    config = fs.repo_config(settings)
    assert isinstance(config.offline_store, PortraitSparkOfflineStoreConfig)
    assert config.offline_store.type == fs.SPARK_STORE_TYPE
    conf = config.offline_store.spark_conf
    assert conf["spark.master"] == "local[2]" and conf["spark.executor.memory"] == "2g"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert config.online_store.type == "redis" and config.registry.registry_type == "sql"
    assert settings.tracking_uri == settings.postgres_url  # MLflow as in production
    production = fs.feast_yaml(settings.model_copy(update={"profile": "production"})).expanded()
    cluster = fs.feast_yaml(settings).expanded()
    assert production.pop("offline_store") == {"type": "duckdb"}
    assert cluster.pop("offline_store")["type"] == fs.SPARK_STORE_TYPE
    assert cluster == production


def test_historical_features_on_spark_equal_duckdb(deployment: Deployment, workspaces: Workspaces) -> None:
    """The tag features of every customer at both Spark snapshots, three days after the earlier one (the
    point-in-time join takes that snapshot's rows) and before any snapshot (no rows: missing values)."""
    ids = _customers(workspaces)
    first, last = workspaces.spark_snapshots
    between = first + timedelta(days=3)
    assert not [s for s in workspaces.duck_snapshots if first < s <= between]  # the same row in both
    before = min(workspaces.duck_snapshots) - timedelta(days=10)
    times = [last] * len(ids) + [between] * 150 + [before] * 20
    entity = pd.DataFrame(
        {"customer_id": ids + ids[:150] + ids[:20], "event_timestamp": pd.to_datetime(times)}
    )
    frames = {}
    for name, settings in (("duckdb", deployment.production), ("spark", deployment.cluster)):
        store = fs.feature_store(settings)
        service = store.get_feature_service(SERVING_SERVICE)
        frames[name] = store.get_historical_features(entity_df=entity, features=service).to_df()
    assert frames["spark"].drop(columns=["customer_id", "event_timestamp"]).notna().any(axis=1).sum() >= len(
        ids
    )
    assert_same_values(frames["spark"], frames["duckdb"], ["customer_id", "event_timestamp"], "historical")


def test_training_frame_on_spark_is_written_by_the_executors_and_equals_duckdb(
    deployment: Deployment, workspaces: Workspaces
) -> None:
    """What training reads (``features.store.historical_features``): on the cluster profile the frame goes
    through Parquet written by Spark (not a collect into the driver), gives DuckDB's frame, and leaves no
    files behind."""
    ids = _customers(workspaces)
    entity = pd.DataFrame(
        {"customer_id": ids, "event_timestamp": pd.Timestamp(workspaces.spark_snapshots[-1])}
    )
    spark_store = fs.feature_store(deployment.cluster)
    job = spark_store.get_historical_features(entity_df=entity, features=fs.service_for(spark_store, "churn"))
    assert hasattr(job, "to_spark_df")  # the Spark path is the one taken below
    on_spark = fs.historical_features(deployment.cluster, "churn", entity, spark_store)
    on_duckdb = fs.historical_features(deployment.production, "churn", entity)
    assert (
        len(on_spark) == len(ids)
        and on_spark.drop(columns=["customer_id", "event_timestamp"]).notna().any().all()
    )
    assert_same_values(on_spark, on_duckdb, ["customer_id", "event_timestamp"], "training frame")
    frames = deployment.cluster.feast_dir / "frames"
    assert not frames.exists() or not any(frames.iterdir())


def _online(settings, ids: list[str], features) -> pd.DataFrame:  # noqa: ANN001
    store = fs.feature_store(settings)
    if isinstance(features, str):
        features = store.get_feature_service(features)
    return pd.DataFrame(
        store.get_online_features(features=features, entity_rows=[{"customer_id": c} for c in ids]).to_dict()
    )


def test_materialization_from_spark_tables_serves_the_same_features(
    materialized: Deployment, workspaces: Workspaces
) -> None:
    """``portrait features materialize`` on both profiles: Feast's online reads give the same values."""
    ids = _customers(workspaces)
    spark = _online(materialized.cluster, ids, SERVING_SERVICE)
    duckdb = _online(materialized.production, ids, SERVING_SERVICE)
    assert spark.drop(columns="customer_id").notna().any(axis=1).all()  # every customer is online
    assert_same_values(spark, duckdb, ["customer_id"], "online")
    realtime = [f"{REALTIME_VIEW}:{name}" for name in ("events_today", "last_event_ts", "session_minutes")]
    assert_same_values(
        _online(materialized.cluster, ids, realtime),
        _online(materialized.production, ids, realtime),
        ["customer_id"],
        "realtime",
    )


def test_feast_materialize_through_the_spark_offline_store(
    materialized: Deployment, workspaces: Workspaces
) -> None:
    """Feast's own materialize of the batch views, reading the Spark-built tables with the Spark offline store,
    loads the values the production profile serves."""
    settings = materialized.cluster.model_copy(update={"redis_key_prefix": materialized.spare_prefix})
    store = repo.apply(settings)
    day = timedelta(days=1)
    store.materialize(start_date=SNAPSHOT - day, end_date=SNAPSHOT + day, feature_views=list(VIEWS))
    ids = _customers(workspaces)
    service = fs.feature_store(settings).get_feature_service(SERVING_SERVICE)
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    assert_same_values(
        _online(settings, ids, refs), _online(materialized.production, ids, refs), ["customer_id"], "feast"
    )

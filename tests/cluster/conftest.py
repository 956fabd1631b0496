"""Fixtures for the cluster profile: one local Spark session for the whole test session, and two copies of
one small synthetic workspace whose feature tables were built by DuckDB and by Spark.

Spark needs Java 17+: without it these tests are skipped with the reason, or fail when ``CI`` is set. Tests
that also need Redis and PostgreSQL use the servers of ``tests/production`` (same rules). Spark is heavy on
2 cores, so the data is a few hundred customers, the session is created once, and Spark builds only two
snapshots (the serving one and the churn model's test snapshot); DuckDB builds every snapshot training needs.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy.engine import make_url

from features import repo
from features import store as fs
from features.pipeline import compute_features
from features.synth import SynthConfig
from portrait.backends import drop_postgres_database, ensure_postgres_database
from portrait.settings import Settings
from portrait.workflow import synthesize
from tests.conftest import ci_required
from tests.production.conftest import Servers, production_settings
from tests.production.conftest import key_prefix as key_prefix  # fixtures re-exported for the cluster tests
from tests.production.conftest import pg_database as pg_database
from tests.production.conftest import servers as servers  # the Redis/PostgreSQL fixture, re-exported
from training.train import plan_for, resolve

END = datetime(2025, 1, 1, tzinfo=UTC)
SNAPSHOT = END + timedelta(days=1)
"""The serving snapshot."""
PLAN = {"n_train": 2, "step_days": 60}
CUSTOMERS = 500
TAG_MODELS = ("churn", "conversion", "clv")
SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "1g",
}


def java_missing(reason: str) -> None:
    """Fail under CI (Java 17 is part of the CI machines), else skip with the reason."""
    message = f"{reason}; the cluster-profile tests run Spark locally and need Java 17+"
    if ci_required():
        pytest.fail(message)
    pytest.skip(message)


def cluster_settings(home: Path, **overrides: object) -> Settings:
    """Cluster-profile settings on a local[2] Spark, ignoring PORTRAIT_* overrides in the environment."""
    values: dict[str, object] = {
        "home": home,
        "profile": "cluster",
        "spark_master": "local[2]",
        "spark_connect_url": None,
        "spark_conf": SPARK_CONF,
        "mlflow_tracking_uri": None,
        "mlflow_artifact_root": None,
        "api_keys": {},
    }
    settings = Settings(**(values | overrides))  # type: ignore[arg-type]
    settings.ensure_dirs()
    return settings


def use_cluster_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, **extra: str) -> None:
    """The environment under which the ``portrait`` command runs ``settings`` (a cluster-profile workspace on
    a local[2] Spark), plus ``extra`` ``PORTRAIT_*`` variables; MLflow and Spark Connect overrides removed."""
    for name in (
        "PORTRAIT_MLFLOW_TRACKING_URI",
        "PORTRAIT_MLFLOW_ARTIFACT_ROOT",
        "PORTRAIT_SPARK_CONNECT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    env = {
        "PORTRAIT_HOME": str(settings.home),
        "PORTRAIT_PROFILE": "cluster",
        "PORTRAIT_POSTGRES_URL": settings.postgres_url,
        "PORTRAIT_REDIS_URL": settings.redis_url,
        "PORTRAIT_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "PORTRAIT_SPARK_MASTER": "local[2]",
        "PORTRAIT_SPARK_CONF": json.dumps(SPARK_CONF),
    }
    for name, value in (env | extra).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """The local[2] Spark session every cluster test shares (Spark reuses the active session)."""
    from features.spark import java_problem, spark_session

    problem = java_problem()
    if problem:
        java_missing(problem)
    session = spark_session(Settings(profile="cluster", spark_master="local[2]", spark_conf=SPARK_CONF))
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def serving_and_plan_snapshots(settings: Settings) -> list[datetime]:
    """The serving snapshot and every snapshot the three tag models' plans use."""
    snaps = {SNAPSHOT}
    for name in TAG_MODELS:
        spec, options = resolve(settings, name, **PLAN)
        snaps |= set(plan_for(settings, spec, **options).all)
    return sorted(snaps)


@dataclass(frozen=True)
class SourceData:
    """The validated inputs (``home``) and DuckDB's feature tables for every snapshot training needs."""

    home: Path
    features: Path
    snapshots: list[datetime]


@pytest.fixture(scope="session")
def source_data(tmp_path_factory: pytest.TempPathFactory) -> SourceData:
    home = tmp_path_factory.mktemp("cluster_data")
    settings = Settings(home=home)
    settings.ensure_dirs()
    synthesize(
        settings, SynthConfig(n_customers=CUSTOMERS, seed=3, start=END - timedelta(days=3 * 365), end=END)
    )
    snaps = serving_and_plan_snapshots(settings)
    features = home / "duckdb_features"
    compute_features(settings.clean_dir, features, snaps)
    return SourceData(home, features, snaps)


def copy_workspace(source: SourceData, home: Path, *, features: bool) -> Path:
    """A workspace with the source's validated inputs (and its DuckDB feature tables)."""
    shutil.copytree(source.home / "data" / "clean", home / "data" / "clean")
    if features:
        shutil.copytree(source.features, home / "data" / "features")
    return home


@dataclass(frozen=True)
class Workspaces:
    """The same validated inputs, with feature tables built by DuckDB (``duck``) and by Spark (``spark``)."""

    duck: Path
    spark: Path
    spark_snapshots: list[datetime]
    duck_snapshots: list[datetime]


@pytest.fixture(scope="session")
def workspaces(
    spark: object, source_data: SourceData, tmp_path_factory: pytest.TempPathFactory
) -> Workspaces:
    from features.build import build_tables, engine

    duck = copy_workspace(source_data, tmp_path_factory.mktemp("cluster_duck"), features=True)
    home = copy_workspace(source_data, tmp_path_factory.mktemp("cluster_spark"), features=False)
    settings = cluster_settings(home)
    assert engine(settings) == "spark"
    churn, options = resolve(settings, "churn", **PLAN)
    spark_snaps = sorted({plan_for(settings, churn, **options).test, SNAPSHOT})
    build_tables(settings, spark_snaps)  # the cluster profile's path: the active local[2] session
    return Workspaces(duck, home, spark_snaps, source_data.snapshots)


@dataclass(frozen=True)
class Deployment:
    """Both workspaces registered in one PostgreSQL database: the DuckDB one on the production profile
    (Feast project ``portrait_<prefix A>``), the Spark one on the cluster profile (``portrait_<prefix B>``),
    both with the same Redis and the same MLflow."""

    production: Settings
    cluster: Settings
    database: str
    spare_prefix: str
    """A third Feast project's key prefix, for a test's own store (its Redis keys are removed too)."""


@pytest.fixture(scope="session")
def deployment(servers: Servers, workspaces: Workspaces) -> Iterator[Deployment]:
    name = f"portrait_test_{uuid.uuid4().hex[:10]}"
    database = make_url(servers.postgres_url).set(database=name).render_as_string(hide_password=False)
    prefixes = [f"t{uuid.uuid4().hex[:10]}" for _ in range(3)]
    ensure_postgres_database(database, timeout_s=5)
    production = production_settings(
        workspaces.duck, postgres_url=database, redis_url=servers.redis_url, key_prefix=prefixes[0]
    )
    cluster = cluster_settings(
        workspaces.spark, postgres_url=database, redis_url=servers.redis_url, redis_key_prefix=prefixes[1]
    )
    for settings in (production, cluster):
        repo.apply(settings)
    try:
        yield Deployment(production, cluster, database, prefixes[2])
    finally:
        drop_postgres_database(database)
        client = redis.Redis.from_url(servers.redis_url, socket_timeout=5)
        for prefix in prefixes:
            keys = list(client.scan_iter(match=f"*portrait_{prefix}".encode(), count=1000))
            if keys:
                client.delete(*keys)
        client.close()


@pytest.fixture(scope="session")
def materialized(deployment: Deployment) -> Deployment:
    """Both online stores loaded up to the day after the serving snapshot (as ``portrait.workflow.publish``)."""
    for settings in (deployment.production, deployment.cluster):
        fs.materialize(settings, end=SNAPSHOT + timedelta(days=1))
    return deployment


@pytest.fixture(scope="session")
def champions(deployment: Deployment) -> Deployment:
    """Churn, conversion and CLV trained (one trial, at most 25 rounds) on the DuckDB workspace and
    promoted in the shared MLflow registry."""
    from training import fit as fit_module
    from training.train import train_named

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit_module, "MAX_ROUNDS", 25)
        for name in TAG_MODELS:
            train_named(deployment.production, name, trials=1, **PLAN)
    return deployment

"""Portrait on Spark (the ``cluster`` profile): the session, the feature pipeline and Feast's offline store.

* :func:`spark_session` builds (or joins) the Spark session the settings describe: a Spark Connect endpoint
  (``spark_connect_url``), else a driver in this process on ``spark_master`` (``local[2]`` by default, or
  ``spark://...``, ``yarn``, ``k8s://...``); under ``spark-submit`` the master that ``spark-submit`` was given
  is kept. Portrait's Spark defaults (:data:`features.store.SPARK_DEFAULTS`: UTC, microsecond Parquet
  timestamps, Arrow transfers) come first and ``settings.spark_conf`` overrides them
  (:func:`features.store.spark_conf`, which the Feast configuration holds too).
* :func:`compute_features` runs the Ibis definitions of :mod:`features.pipeline` -- the same functions DuckDB
  runs -- on PySpark through ``ibis.pyspark`` and writes the same layout, one Parquet file per view and
  snapshot (``features.tables``), so everything that reads feature tables reads these unchanged.
* :class:`PortraitSparkOfflineStore` is Feast's Spark offline store over the workspace's feature tables. The
  registered views keep their ``FileSource`` (one registry serves every profile; the serving path reads
  only the online store); this store reads each source's Parquet files with Spark, as a ``SparkSource`` of
  the same path, timestamps and field mapping. :func:`features.store.feast_yaml` names it on the cluster
  profile, so training frames (``get_historical_features``) and Feast's own materialize (the real-time view's
  in ``features.store.materialize``, ``feast materialize``) read the tables with Spark.

Nothing here runs at import. The module imports ``pyspark`` (Feast's Spark store does) but not the Ibis
pipeline, which :func:`compute_features` imports when it runs: a service on the cluster profile opens the
store's configuration (this module) without loading Ibis.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
from feast import FeatureView, FileSource
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.repo_config import RepoConfig
from pydantic import StrictStr

from features import realtime
from features.store import SPARK_DEFAULTS, SPARK_STORE_TYPE, spark_conf
from features.tables import snapshot_path
from portrait.files import atomic_path, temp_beside
from portrait.settings import Settings

if TYPE_CHECKING:
    import ibis
    from pyspark.sql import DataFrame, SparkSession

    from features.pipeline import FeatureBuild

logger = logging.getLogger(__name__)

MIN_JAVA = 17
"""Spark 4 runs on Java 17 or later."""


# ---- the session ----------------------------------------------------------------------------------------
def java_problem() -> str | None:
    """Why Spark cannot start on this machine (no Java, or one older than :data:`MIN_JAVA`), else None."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        return f"Spark needs Java {MIN_JAVA}+ and no `java` was found (install a JDK {MIN_JAVA} or set JAVA_HOME)"
    try:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`{java} -version` failed: {exc}"
    match = re.search(r'version "(\d+)(?:\.(\d+))?', shown)
    if match is None:
        return None  # an unusual banner: let Spark decide
    major = int(match[1]) if match[1] != "1" else int(match[2] or 0)
    if major < MIN_JAVA:
        return f"Spark needs Java {MIN_JAVA}+, {java} is Java {major}"
    return None


def _under_spark_submit() -> bool:
    """Whether this Python process is a driver that ``spark-submit`` started (its JVM is already there)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session_from_conf(conf: dict[str, str], connect_url: str | None = None) -> SparkSession:
    """The Spark session for ``conf``: the active one if there is one, else a new one.

    With ``connect_url`` a Spark Connect session; under ``spark-submit`` the master it was given wins over
    ``spark.master`` in ``conf``.
    """
    from pyspark.sql import SparkSession

    if str(conf.get("spark.master", "")).startswith("local"):
        # Local Python workers run this interpreter (its environment has the package and its locked
        # dependencies) unless PYSPARK_PYTHON says otherwise; PySpark reads it when the context starts. On a
        # cluster the executors' Python is the deployment's (PYSPARK_PYTHON / spark.pyspark.python).
        os.environ.setdefault("PYSPARK_PYTHON", conf.get("spark.pyspark.python", sys.executable))
    builder = SparkSession.builder
    if connect_url:
        builder = builder.remote(connect_url)
        conf = {k: v for k, v in conf.items() if k != "spark.master"}
    elif _under_spark_submit():
        conf = {k: v for k, v in conf.items() if k != "spark.master"}
    for key, value in conf.items():
        builder = builder.config(key, value)
    started = time.perf_counter()
    session = builder.getOrCreate()
    for key in ("spark.sql.session.timeZone", "spark.sql.parquet.outputTimestampType"):
        session.conf.set(key, conf.get(key, SPARK_DEFAULTS[key]))  # a session that already existed
    logger.debug("Spark session ready in %.1f s", time.perf_counter() - started)
    return session


def spark_session(settings: Settings) -> SparkSession:
    """The Spark session the settings describe (see the module docstring)."""
    return session_from_conf(spark_conf(settings), settings.spark_connect_url)


def _compiler() -> Any:
    """Ibis' PySpark SQL compiler with epoch seconds to the microsecond, as DuckDB computes them.

    Ibis compiles ``epoch_seconds()`` for Spark to ``unix_timestamp``, which drops the fraction of a
    second; the pipeline's ages (``features.pipeline._days_between``) and inter-purchase gaps would then
    differ from DuckDB's by up to a second. ``unix_micros(ts) / 1e6`` keeps it. The only ibis internal
    Portrait relies on for Spark; ``tests/cluster/test_features.py`` compares the values with DuckDB's.
    """
    import ibis.expr.datatypes as dt
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    class PortraitSparkCompiler(PySparkCompiler):
        def visit_ExtractEpochSeconds(self, op: Any, *, arg: Any) -> Any:  # noqa: N802 - ibis' name
            return self.f.unix_micros(self.cast(arg, dt.timestamp)) / 1_000_000

    return PortraitSparkCompiler()


def ibis_backend(session: SparkSession) -> ibis.BaseBackend:
    """An Ibis PySpark backend on ``session`` (batch mode) that computes epoch seconds as DuckDB does."""
    import ibis

    con = ibis.pyspark.connect(session)
    con.compiler = _compiler()
    return con


# ---- the feature pipeline on Spark -----------------------------------------------------------------------
def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def write_single_parquet(frame: DataFrame, target: Path) -> int:
    """Write a Spark DataFrame as one Parquet file at ``target`` (atomically); returns its rows.

    Spark writes a folder of part files; the feature-table layout is one file per view and snapshot, so
    the rows are gathered into one partition (one more shuffle; the computation before it stays parallel)
    and its part file is moved into place. ``target`` must be on a file system the executors write to.
    """
    staging = temp_beside(target, directory=True)  # Spark overwrites the new, empty folder
    try:
        frame.repartition(1).write.mode("overwrite").parquet(str(staging))
        parts = sorted(staging.glob("part-*.parquet"))
        if len(parts) != 1:
            raise RuntimeError(f"expected one Parquet part file in {staging}, found {len(parts)}")
        with atomic_path(target) as tmp:
            os.replace(parts[0], tmp)
        return pq.ParquetFile(target).metadata.num_rows
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def compute_features(
    session: SparkSession,
    clean_dir: Path,
    out_dir: Path,
    snapshots: Sequence[datetime],
    *,
    created: datetime | None = None,
) -> FeatureBuild:
    """:func:`features.pipeline.compute_features` on Spark: the same expressions, the same files.

    The order roll-up (:func:`features.pipeline.orders_table`) is computed once and cached by Spark for
    every view and snapshot; each snapshot is computed on its own, its time attached as literals (so
    Spark prunes the window filters into its Parquet scans), and each view written as one Parquet file
    (:func:`write_single_parquet`). The real-time table of each snapshot is folded as on one machine
    (:func:`features.realtime.build_table`: a day of activity).
    """
    import ibis

    from features.pipeline import VIEWS, FeatureBuild, feature_expressions, orders_table

    started = time.perf_counter()
    snaps = sorted({_utc(s) for s in snapshots})
    created = created or datetime.now(UTC)
    con = ibis_backend(session)
    tag = uuid.uuid4().hex[:10]
    tables = {
        name: con.read_parquet(str(clean_dir / f"{name}.parquet"), table_name=f"portrait_{name}_{tag}")
        for name in ("customers", "transactions", "events")
    }
    orders_name = f"portrait_orders_{tag}"
    orders_frame = session.sql(con.compile(orders_table(tables["transactions"]))).cache()
    orders_frame.createOrReplaceTempView(orders_name)
    orders = con.table(orders_name)
    paths: dict[str, list[Path]] = {v: [] for v in VIEWS}
    rows = 0
    stamp = ibis.literal(_utc(created), type="timestamp('UTC')")
    try:
        for snap in snaps:
            exprs = feature_expressions(
                tables["customers"], tables["transactions"], tables["events"], snap, orders=orders
            )
            for view, expr in exprs.items():
                final = expr.rename(event_timestamp="snapshot_ts").mutate(created_timestamp=stamp)
                target = snapshot_path(out_dir, view, snap)
                written = write_single_parquet(session.sql(con.compile(final)), target)
                if view == "customer_profile":
                    rows += written
                paths[view].append(target)
            paths.setdefault(realtime.VIEW, []).append(realtime.build_table(clean_dir, out_dir, snap))
            logger.info(
                "features for snapshot %s written on Spark (%.1f s so far)",
                snap.isoformat(),
                time.perf_counter() - started,
            )
    finally:
        session.catalog.dropTempView(orders_name)
        orders_frame.unpersist()
        for table in tables.values():
            session.catalog.dropTempView(table.get_name())
    return FeatureBuild(snaps, paths, rows, time.perf_counter() - started)


def build_features(settings: Settings, snapshots: Sequence[datetime]) -> FeatureBuild:
    """Compute the workspace's feature tables for ``snapshots`` on the settings' Spark session."""
    return compute_features(spark_session(settings), settings.clean_dir, settings.features_dir, snapshots)


# ---- Feast's Spark offline store over the feature tables ---------------------------------------------------
def as_spark_source(source: DataSource) -> DataSource:
    """A ``FileSource`` as the ``SparkSource`` of the same files (other sources unchanged).

    A view's glob (``<view>/*.parquet``, :func:`features.tables.view_glob`) becomes its folder: Spark reads
    the same files from it (hidden ``.``-prefixed temporary files are skipped either way, and partition
    discovery applies to folders, not to the ``snapshot=<T>.parquet`` file names), while a glob made Spark log
    a warning with a ``FileNotFoundException`` stack trace at every read, looking for a streaming sink's
    metadata folder of that name."""
    if not isinstance(source, FileSource):
        return source
    return SparkSource(
        name=source.name,
        path=source.path.removesuffix("/*.parquet"),
        file_format="parquet",
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        field_mapping=dict(source.field_mapping),
        description=source.description,
        tags=dict(source.tags),
        owner=source.owner,
    )


def _on_spark(view: FeatureView) -> FeatureView:
    """A copy of ``view`` whose batch source Spark reads (the registry's object is left as it is)."""
    copy = view.__copy__()
    copy.batch_source = as_spark_source(view.batch_source)
    return copy


class PortraitSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    """Feast's Spark offline store configuration plus the Spark Connect endpoint, if any."""

    type: StrictStr = SPARK_STORE_TYPE
    spark_connect_url: StrictStr | None = None


def _session_for(config: RepoConfig) -> SparkSession:
    store = config.offline_store
    assert isinstance(store, PortraitSparkOfflineStoreConfig)
    return session_from_conf(dict(store.spark_conf or {}), store.spark_connect_url)


class PortraitSparkOfflineStore(SparkOfflineStore):
    """Feast's Spark offline store over the workspace's Parquet feature tables (see the module docstring).

    Each call first makes sure the configured session exists (Feast's own code then finds it active) and
    hands Feast's Spark store ``SparkSource`` copies of the views' file sources.
    """

    @staticmethod
    def pull_latest_from_table_or_query(  # type: ignore[override]
        config: RepoConfig, data_source: DataSource, *args: Any, **kwargs: Any
    ) -> RetrievalJob:
        _session_for(config)
        return SparkOfflineStore.pull_latest_from_table_or_query(
            config, as_spark_source(data_source), *args, **kwargs
        )

    @staticmethod
    def pull_all_from_table_or_query(  # type: ignore[override]
        config: RepoConfig, data_source: DataSource, *args: Any, **kwargs: Any
    ) -> RetrievalJob:
        _session_for(config)
        return SparkOfflineStore.pull_all_from_table_or_query(
            config, as_spark_source(data_source), *args, **kwargs
        )

    @staticmethod
    def get_historical_features(  # type: ignore[override]
        config: RepoConfig, feature_views: list[FeatureView], *args: Any, **kwargs: Any
    ) -> RetrievalJob:
        _session_for(config)
        return SparkOfflineStore.get_historical_features(
            config, [_on_spark(v) for v in feature_views], *args, **kwargs
        )


__all__ = [
    "MIN_JAVA",
    "PortraitSparkOfflineStore",
    "PortraitSparkOfflineStoreConfig",
    "as_spark_source",
    "build_features",
    "compute_features",
    "ibis_backend",
    "java_problem",
    "session_from_conf",
    "spark_session",
    "write_single_parquet",
]

"""Scoring at scale: every customer's tags from Spark partitions (``portrait score`` on the cluster profile).

The single-machine ``portrait score`` reads the online store in batches through the service's
:class:`serving.tagger.Tagger`. On the cluster profile the customers are many and the features are
already in the feature tables that the online store was loaded from, so :func:`score_on_spark` reads the
latest snapshot's tables with Spark, splits the customers into partitions and scores each partition on an
executor (``mapInPandas``), with the champion artefacts broadcast once: :class:`portrait.model.TagModel`
is plain Python (a booster as text, codes, calibrator, tiers and reason phrases), so an executor needs
the package and its locked dependencies, not MLflow or the feature store. The partitions write their
tags in parallel, as one Parquet (or CSV) folder with a file per partition.

What a partition computes is :func:`tags_frame`: the columns of ``Tagger.tags_frame`` (the service's
``/v1/tags`` answers, flattened), built from the same artefacts and the same rules (reasons, tiers,
lifecycle stage, RFM segment, real-time flags), so the two give the same tags for the same customers
(``tests/cluster/test_scoring.py``). The features are the snapshot's rows, as materialized; the
real-time row of a customer is its latest in the real-time view's batch table up to the snapshot (what a
materialization loads), so events pushed to the online store since the snapshot are not seen here.

This module is for batch jobs: the service never imports it.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features import realtime
from features.tables import PROFILE_VIEW, snapshot_files, snapshot_path, snapshots
from portrait import catalogue, tags
from portrait.files import publish, temp_beside
from portrait.model import TagModel
from portrait.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

BATCH_VIEWS = ("customer_profile", "customer_transactions", "customer_behaviour")
"""The feature views the tag models' FeatureServices draw on (one row per customer and snapshot each)."""
TAG_INPUTS = tags.TAG_INPUTS
"""Features the lifecycle stage and RFM segment read, whether or not a model does."""
FEATURES_TS = "_features_ts"
RT_PREFIX = "_rt_"
"""Prefix of the real-time view's columns in a partition's frame."""
FLAGS = tags.FLAGS


class ScoringError(Exception):
    """Why scoring cannot run, in a message meant for the command line: no snapshot (bad input) or, with
    ``unavailable``, a tag model without a usable champion."""

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(frozen=True)
class Champions:
    """The champion tag models, in catalogue order, with their registered versions."""

    models: dict[str, TagModel]
    versions: dict[str, str]
    errors: dict[str, str]

    def rfm_edges(self) -> dict[str, list[float]]:
        """The segment model's RFM edges, else the first model's that has them (as the service does)."""
        order = [catalogue.SEGMENT_MODEL, *(n for n in self.models if n != catalogue.SEGMENT_MODEL)]
        for name in order:
            if name in self.models and self.models[name].metadata.get("rfm_edges"):
                return self.models[name].metadata["rfm_edges"]
        return {}

    def features(self) -> list[str]:
        """Every feature any model reads, in model order."""
        names: list[str] = []
        for model in self.models.values():
            names += [f for f in model.features if f not in names]
        return names


def load_champions(settings: Settings) -> Champions:
    """``models:/<name>@champion`` of every tag model of the catalogue, from the settings' registry.

    Raises :class:`portrait.registry.TrackingUnavailable` when the registry cannot be reached; a model
    without a champion (or whose artefact fails to load) is in ``errors`` with the reason.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from portrait.registry import CHAMPION, connect

    client = connect(settings)
    models: dict[str, TagModel] = {}
    versions: dict[str, str] = {}
    errors: dict[str, str] = {}
    for entry in catalogue.tag_models():
        try:
            version = client.get_model_version_by_alias(entry.name, CHAMPION).version
        except MlflowException:
            errors[entry.name] = f"no champion version of model '{entry.name}' is registered"
            continue
        try:
            model = mlflow.pyfunc.load_model(f"models:/{entry.name}@{CHAMPION}").unwrap_python_model()
        except Exception as exc:  # noqa: BLE001 - any load failure is reported per model
            errors[entry.name] = f"champion v{version} of '{entry.name}' failed to load: {exc}"
            continue
        models[entry.name] = model
        versions[entry.name] = str(version)
    return Champions(models, versions, errors)


# ---- one partition: the same tags as the service ---------------------------------------------------------
def _fields(champions: Champions) -> list[tuple[str, str, bool]]:
    """Per model, in catalogue order: ``(model, response field, is a value model)``."""
    out = []
    for name in champions.models:
        entry = catalogue.get(name)
        assert entry.response_field is not None
        out.append((name, entry.response_field, entry.kind == "regressor"))
    return out


def spark_schema(champions: Champions, probe: pd.DataFrame) -> str:
    """The Spark schema of the tags: :func:`output_columns`' types, with the columns in the order and number
    ``probe`` (:func:`tags_frame` of a few customers) has them -- models with catalogue outputs add columns
    (``value_p10``, ``category_<name>``, ...) that only the model knows: numbers, as doubles."""
    known = dict(output_columns(champions))
    kinds = []
    for column in probe.columns:
        kind = known.get(column)
        if kind is None:
            series = probe[column]
            kind = "boolean" if pd.api.types.is_bool_dtype(series) else "double"
            if not (kind == "boolean" or pd.api.types.is_numeric_dtype(series)):
                kind = "string"
        kinds.append(f"{column} {kind}")
    return ", ".join(kinds)


def output_columns(champions: Champions) -> list[tuple[str, str]]:
    """The tags' base columns and Spark SQL types, in ``Tagger.tags_frame``'s order (see :func:`spark_schema`
    for the columns of the models' extra outputs)."""
    columns = [("customer_id", "string")]
    for _, prefix, is_value in _fields(champions):
        columns += [
            (f"{prefix}_{'predicted' if is_value else 'probability'}", "double"),
            (f"{prefix}_tier", "string"),
            (f"{prefix}_reasons", "string"),
            (f"{prefix}_model_version", "string"),
        ]
    columns += [("lifecycle_stage", "string"), ("rfm_segment", "string"), ("rfm_score", "string")]
    columns += [("features_timestamp", "timestamp")] + [(flag, "boolean") for flag in FLAGS]
    return columns


def tags_frame(
    champions: Champions,
    known: dict[str, np.ndarray],
    live: Sequence[realtime.RealtimeRow | None],
    *,
    now: datetime,
    cart_hours: float,
    threads: int = 1,
) -> pd.DataFrame:
    """The tags of the customers in ``known`` (``customer_id``, feature columns, ``_features_ts`` in epoch
    seconds) with their real-time rows ``live``: the columns and values of ``Tagger.tags_frame``.

    As the service does: the real-time times first make the recency features fresher
    (:func:`features.realtime.fresher_features`), models with the same features share one matrix, and
    each model gives scores, tiers and its three strongest reasons. ``threads``: LightGBM threads per model.
    """
    n = len(known["customer_id"])
    stamps = known[FEATURES_TS]
    copied: set[str] = set()
    for i, row in enumerate(live):
        if row is None:
            continue
        batch = {f: known[f][i] for f in realtime.FRESH_DAYS if f in known}
        for feature, value in realtime.fresher_features(row, batch, float(stamps[i]), now).items():
            if feature not in copied:
                known[feature] = np.array(known[feature], dtype="float64")
                copied.add(feature)
            known[feature][i] = value
    matrices: dict[Any, np.ndarray] = {}
    results = {}
    for name, model in champions.models.items():
        key = model.matrix_key()
        if key not in matrices:
            matrices[key] = model.matrix(known)
        x = matrices[key]
        parts = model.scores_and_contributions(x, threads) if n else None
        results[name] = model.explain_columns(known, x=x, parts=parts)
    return tags.tags_frame(
        known,
        results,
        champions.versions,
        tags.model_outputs(champions.models, known, results, stamps),
        champions.rfm_edges(),
        [realtime.realtime_tags(row, now, cart_hours) for row in live],
        stamps,
    )


def _column(series: pd.Series) -> np.ndarray:
    """A partition column as the service holds it: float64 with NaN for numbers, else objects with None."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return series.to_numpy(dtype="float64", na_value=np.nan)
    values = series.astype(object).to_numpy()
    values[pd.isna(values)] = None
    return values


def _live_rows(frame: pd.DataFrame) -> list[realtime.RealtimeRow | None]:
    """Each row's real-time features (None where the customer has no real-time row)."""
    present = frame[f"{RT_PREFIX}present"].to_numpy(dtype=bool)
    values = {
        name: frame[f"{RT_PREFIX}{name}"].to_numpy(dtype="float64", na_value=np.nan)
        for name in realtime.FEATURES
    }
    rows: list[realtime.RealtimeRow | None] = []
    for i in range(len(frame)):
        rows.append(
            realtime.RealtimeRow({k: float(v[i]) for k, v in values.items()}, None) if present[i] else None
        )
    return rows


def score_partition(
    batches: Iterator[pd.DataFrame],
    champions: Callable[[], Champions],
    features: Sequence[str],
    now: datetime,
    cart_hours: float,
) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body: the tags of each Arrow batch of a partition (see :func:`tags_frame`)."""
    loaded = champions()
    for frame in batches:
        known = {"customer_id": frame["customer_id"].astype(object).to_numpy()}
        for name in features:
            if name in frame:
                known[name] = _column(frame[name])
        known[FEATURES_TS] = frame[FEATURES_TS].to_numpy(dtype="int64")
        yield tags_frame(loaded, known, _live_rows(frame), now=now, cart_hours=cart_hours)


# ---- the job -----------------------------------------------------------------------------------------------
def latest_snapshot(settings: Settings) -> datetime:
    found = snapshots(settings.features_dir, PROFILE_VIEW)
    if not found:
        raise ScoringError(
            "no feature snapshots: run `portrait features build` and `portrait features materialize`"
        )
    return found[-1]


def features_frame(
    session: SparkSession, settings: Settings, snapshot: datetime, features: Sequence[str]
) -> DataFrame:
    """One row per customer of the snapshot: its features (from the three batch views), ``_features_ts``
    (epoch seconds of the newest view row), and its latest real-time row up to the snapshot as
    ``_rt_<feature>`` columns with ``_rt_present``."""
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's convention
    from pyspark.sql.window import Window

    wanted = [*features, *(c for c in TAG_INPUTS if c not in features)]
    joined: DataFrame | None = None
    for view in BATCH_VIEWS:
        table = session.read.parquet(str(snapshot_path(settings.features_dir, view, snapshot)))
        columns = [c for c in wanted if c in table.columns]
        part = table.select("customer_id", F.col("event_timestamp").alias(f"_ts_{view}"), *columns)
        joined = part if joined is None else joined.join(part, "customer_id", "left")
    assert joined is not None
    stamps = [f"_ts_{view}" for view in BATCH_VIEWS]
    joined = joined.withColumn(FEATURES_TS, F.unix_seconds(F.greatest(*stamps))).drop(*stamps)
    present = f"{RT_PREFIX}present"
    files = snapshot_files(settings.features_dir, realtime.VIEW)
    if not files:
        missing = [F.lit(None).cast("double").alias(f"{RT_PREFIX}{name}") for name in realtime.FEATURES]
        return joined.select("*", *missing, F.lit(False).alias(present))
    rows = session.read.parquet(*(str(f) for f in files))
    rows = rows.where(F.col("event_timestamp") <= F.lit(snapshot.astimezone(UTC)))
    newest = Window.partitionBy("customer_id").orderBy(
        F.col("event_timestamp").desc(), F.col("created_timestamp").desc()
    )
    rows = rows.withColumn("_n", F.row_number().over(newest)).where(F.col("_n") == 1)
    live = rows.select(
        "customer_id",
        *(F.col(name).cast("double").alias(f"{RT_PREFIX}{name}") for name in realtime.FEATURES),
        F.lit(True).alias(present),
    )
    return joined.join(live, "customer_id", "left").fillna({present: False})


@dataclass(frozen=True)
class ScoreRun:
    """What :func:`score_on_spark` wrote."""

    snapshot: datetime
    customers: int
    partitions: int
    paths: list[Path]
    seconds: float


def _parallelism(session: SparkSession) -> int:
    """Spark's default parallelism (a Spark Connect session has no SparkContext: its configuration, else 8)."""
    try:
        return int(session.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001 - Spark Connect raises its own "not supported" errors here
        return int(session.conf.get("spark.default.parallelism", "8") or 8)


def _share(session: SparkSession, champions: Champions) -> Callable[[], Champions]:
    """The champions for the executors: a broadcast (read once per executor), or with Spark Connect, which
    has no broadcast variables, the artefacts shipped with the function."""
    try:
        handle = session.sparkContext.broadcast(champions)
    except Exception:  # noqa: BLE001 - Spark Connect sessions have no SparkContext
        return lambda: champions
    return lambda: handle.value


def _publish_folder(staging: Path, target: Path) -> None:
    """Move a finished output folder into place (replacing a previous output of the same name)."""
    if target.exists():
        old = temp_beside(target, directory=target.is_dir())  # a new, empty entry the old output replaces
        target.rename(old)
        staging.rename(target)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
        return
    staging.rename(target)


def score_on_spark(
    settings: Settings,
    session: SparkSession,
    out: Path,
    *,
    csv: bool = False,
    champions: Champions | None = None,
    now: datetime | None = None,
) -> ScoreRun:
    """Score every customer of the latest snapshot on Spark and write the tags to ``out``.

    ``out`` becomes a folder of Parquet files (``.csv``: CSV files with a header), one per partition;
    ``csv`` also writes a CSV folder beside a Parquet one. ``now`` is the time of the real-time flags
    (default: when the job starts). Raises :class:`ScoringError` when there is no snapshot or a tag model
    has no usable champion.
    """
    started = time.perf_counter()
    snapshot = latest_snapshot(settings)
    champions = champions or load_champions(settings)
    if champions.errors:
        raise ScoringError("; ".join(champions.errors.values()), unavailable=True)
    now = now or datetime.now(UTC)
    frame = features_frame(session, settings, snapshot, champions.features())
    features = [c for c in champions.features() if c in frame.columns] + [
        c for c in TAG_INPUTS if c in frame.columns and c not in champions.features()
    ]
    partitions = settings.score_partitions or 2 * _parallelism(session)
    probe = next(score_partition(iter([frame.limit(64).toPandas()]), lambda: champions, features, now, 0.0))
    schema = spark_schema(champions, probe)
    shared = _share(session, champions)
    cart_hours = settings.cart_abandon_hours
    tags = frame.repartition(partitions, "customer_id").mapInPandas(
        lambda batches: score_partition(batches, shared, features, now, cart_hours), schema
    )
    # Scored once: a CSV beside the Parquet output is converted from the written Parquet files.
    first = out.with_suffix(".parquet") if out.suffix == ".csv" else out
    targets = [out.with_suffix(".csv")] if out.suffix == ".csv" else [out]
    if csv and out.suffix != ".csv":
        targets.append(out.with_suffix(".csv"))
    staged: list[tuple[Path, Path]] = []
    parquet = temp_beside(first, directory=True)  # Spark overwrites the new, empty folder
    try:
        tags.write.mode("overwrite").parquet(str(parquet))
        for target in targets:
            if target.suffix != ".csv":
                staged.append((parquet, target))
                continue
            staging = temp_beside(target, directory=True)
            session.read.parquet(str(parquet)).write.mode("overwrite").option("header", True).csv(
                str(staging)
            )
            staged.append((staging, target))
        customers = session.read.parquet(str(parquet)).count()  # from the files' footers
        for staging, target in staged:
            _publish_folder(staging, target)
    finally:
        for staging in {parquet, *(s for s, _ in staged)}:
            shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - started
    logger.info("%d customers scored on %d partitions in %.1f s", customers, partitions, seconds)
    return ScoreRun(snapshot, customers, partitions, targets, seconds)


def write_tags(frame: pd.DataFrame, out: Path, *, csv: bool = False) -> list[Path]:
    """Write the tags to ``out`` (CSV if it ends in ``.csv``, else Parquet) and, with ``csv``, a CSV beside
    it; returns the files written.

    Each is written to a new temporary file beside its target (see :mod:`portrait.files`), and they are
    moved into place together once all are complete, so a failing or killed run leaves the previous outputs
    whole and no partial file under a final name.
    """
    out = Path(out)
    targets = [out] + ([out.with_suffix(".csv")] if csv and out.suffix != ".csv" else [])
    staged: list[tuple[Path, Path]] = []
    try:
        for target in targets:
            tmp = temp_beside(target)
            staged.append((tmp, target))
            if target.suffix == ".csv":
                frame.to_csv(tmp, index=False)
            else:
                frame.to_parquet(tmp, index=False)
        publish(staged)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return targets


__all__ = [
    "Champions",
    "ScoreRun",
    "ScoringError",
    "features_frame",
    "latest_snapshot",
    "load_champions",
    "output_columns",
    "spark_schema",
    "score_on_spark",
    "score_partition",
    "tags_frame",
    "write_tags",
]

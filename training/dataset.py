"""Training frames: labels joined point-in-time to the model's FeatureService through Feast.

The split follows :mod:`training.splits`: ``train`` is every training snapshot's rows of the customers not
held out, ``validation`` the held-out customers' rows at the same snapshots (never fitted on) and ``test``
everyone at the out-of-time test snapshot. :attr:`TrainingSet.calibration_validation` (the held-out
customers at the calibration snapshot: the same season a year before the test, else the latest training
snapshot) is what calibration is fitted on. Rows are ordered by snapshot and customer id, so the same data
gives the same model (the join's own order varies from run to run).

**On the cluster profile** the frame is built where the data is: the labels by Spark SQL (the query DuckDB
runs, :func:`training.labels.spark_labels`), the point-in-time join by Feast's Spark offline store, and the
labelled frame written as Parquet by the executors (:func:`features.store.historical_features_on_disk`). The
training process then reads all of it when it has at most ``settings.train_memory_rows`` rows, else a
sample of whole customers (every snapshot of a customer whose id hashes into the sample) of about that
many rows: the search, calibration, tiers and evaluation run on the sample, and the refit reads every row
from disk with Dask (:attr:`TrainingSet.on_disk`, :mod:`training.distributed`), which is why a sampled
frame needs ``settings.distributed_refit``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
from feast import FeatureStore

from features import repo
from features import store as fs
from features.build import build_tables, engine
from portrait import catalogue
from portrait.settings import Settings
from training.labels import LabelSpec, build_labels, spark_labels
from training.splits import SnapshotPlan

logger = logging.getLogger(__name__)

SAMPLE_COLUMN = "sample_bucket"
"""The on-disk frame's column that samples customers: a hash of the id modulo :data:`SAMPLE_BUCKETS`."""
SAMPLE_BUCKETS = 10_000


@dataclass(frozen=True)
class OnDiskFrame:
    """The whole labelled frame as Parquet files written by Spark (the cluster profile)."""

    folder: Path
    rows: int
    sampled_share: float
    """The share of customers the in-memory frames hold (1.0: all of them)."""

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class TrainingSet:
    """Point-in-time frames for each split, with the feature list from the FeatureService."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    features: list[str]
    feature_service: str
    plan: SnapshotPlan
    derived: list[str] = field(default_factory=list)
    """Columns of the frames the model derives itself (after ``features``; e.g. ``training.clv.prepare``)."""
    on_disk: OnDiskFrame | None = None
    """Every labelled row on disk, for the distributed refit (see the module docstring); removed by
    :meth:`discard`."""

    def discard(self) -> None:
        """Remove the on-disk frame, if any (the in-memory frames stay usable)."""
        if self.on_disk is not None:
            self.on_disk.remove()

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}

    @property
    def calibration_validation(self) -> pd.DataFrame:
        """Validation rows at the plan's calibration snapshot (see :mod:`training.splits`), else all."""
        at = pd.Timestamp(self.plan.calibration_snapshot)
        rows = self.validation[self.validation.event_timestamp == at]
        return rows.reset_index(drop=True) if len(rows) else self.validation


def holdout_mask(customer_ids: pd.Series, share: float) -> np.ndarray:
    """True for the customers held out for validation: a stable hash of the id below ``share``.

    The assignment depends only on the id (not on the row order, the snapshot or the run), so a customer
    is on the same side at every snapshot and in every retraining.
    """
    hashed = pd.util.hash_pandas_object(customer_ids.astype(str), index=False).to_numpy()
    return (hashed % 10_000) < round(share * 10_000)


def ensure_feature_snapshots(settings: Settings, plan: SnapshotPlan) -> list:
    """Compute the feature snapshots the plan needs that are not on disk yet."""
    have = set(fs.snapshots_on_disk(settings))
    missing = [t for t in plan.all if t not in have]
    if missing:
        logger.info("computing %d missing feature snapshots", len(missing))
        build_tables(settings, missing)
    return missing


def build_training_set(
    settings: Settings, model: str, spec: LabelSpec, plan: SnapshotPlan, store: FeatureStore | None = None
) -> TrainingSet:
    """Labels for every planned snapshot, features from Feast ``get_historical_features``, split by
    snapshot and held-out customers (see the module docstring)."""
    ensure_feature_snapshots(settings, plan)
    store = repo.ensure_applied(settings, store)
    on_disk = None
    if engine(settings) == "spark":
        frame, on_disk = _frame_on_spark(settings, model, spec, plan, store)
    else:
        labels = build_labels(settings.clean_dir, plan.all, spec)
        if labels.empty:
            raise ValueError(_no_labels(spec, plan))
        frame = fs.historical_features(settings, model, labels, store)
    try:
        ts = _split(frame, model, plan, fs.feature_names(store, model))
    except BaseException:
        if on_disk is not None:
            on_disk.remove()
        raise
    ts.on_disk = on_disk
    return ts


def _no_labels(spec: LabelSpec, plan: SnapshotPlan) -> str:
    return f"no {spec.target} labels for snapshots {[t.date().isoformat() for t in plan.all]}"


def _split(frame: pd.DataFrame, model: str, plan: SnapshotPlan, features: list[str]) -> TrainingSet:
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    # Rows in one order whatever order the point-in-time join returned them in (DuckDB's parallel join does
    # not keep one): LightGBM's bagging draws rows by position, so the order changed the model.
    frame = frame.sort_values(["event_timestamp", "customer_id"], kind="stable", ignore_index=True)
    fitting = frame.event_timestamp.isin(pd.to_datetime([*plan.train, plan.validation], utc=True))
    held_out = holdout_mask(frame.customer_id, plan.validation_share)
    split = {
        "train": frame[fitting & ~held_out],
        "validation": frame[fitting & held_out],
        "test": frame[frame.event_timestamp == pd.Timestamp(plan.test)],
    }
    for name, part in split.items():
        if part.empty:
            raise ValueError(f"the {name} split is empty for the {model} model (plan {plan.as_dict()})")
    return TrainingSet(
        train=split["train"].reset_index(drop=True),
        validation=split["validation"].reset_index(drop=True),
        test=split["test"].reset_index(drop=True),
        features=features,
        feature_service=catalogue.get(model).feature_service,
        plan=plan,
    )


def _frame_on_spark(
    settings: Settings, model: str, spec: LabelSpec, plan: SnapshotPlan, store: FeatureStore
) -> tuple[pd.DataFrame, OnDiskFrame | None]:
    """The labelled frame built and written by Spark, and what of it this process reads (module docstring).
    The folder is kept (returned) only when the distributed refit will read it."""
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

    from features.spark import spark_session

    labels = spark_labels(spark_session(settings), settings.clean_dir, plan.all, spec)
    labels = labels.withColumn(SAMPLE_COLUMN, F.pmod(F.xxhash64("customer_id"), F.lit(SAMPLE_BUCKETS)))
    folder = fs.historical_features_on_disk(settings, model, labels, store)
    keep = False
    try:
        dataset = ds.dataset(folder, format="parquet")
        rows = dataset.count_rows()  # from the files' footers
        if rows == 0:
            raise ValueError(_no_labels(spec, plan))
        share = min(1.0, settings.train_memory_rows / rows)
        if share < 1.0 and not settings.distributed_refit:
            raise ValueError(
                f"the {model} training frame has {rows:,} rows, more than PORTRAIT_TRAIN_MEMORY_ROWS "
                f"({settings.train_memory_rows:,}): set PORTRAIT_DISTRIBUTED_REFIT=true to refit on every row "
                "with Dask (the search then runs on a sample), or raise the limit"
            )
        buckets = max(1, round(share * SAMPLE_BUCKETS))
        sample = None if share >= 1.0 else pc.field(SAMPLE_COLUMN) < buckets
        frame = dataset.to_table(filter=sample).to_pandas().drop(columns=SAMPLE_COLUMN)
        logger.info(
            "%s: %d labelled rows written by Spark; %d read into this process (%.1f%% of customers)",
            model,
            rows,
            len(frame),
            100 * share,
        )
        keep = settings.distributed_refit
        return frame.reset_index(drop=True), OnDiskFrame(folder, rows, share) if keep else None
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)

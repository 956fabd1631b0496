"""Training frames: labels joined point-in-time to the model's FeatureService through Feast.

The split follows :mod:`training.splits`: ``train`` is every training snapshot's rows of the customers not
held out, ``validation`` the held-out customers' rows at the same snapshots (never fitted on) and ``test``
everyone at the out-of-time test snapshot. :attr:`TrainingSet.calibration_validation` (the held-out
customers at the calibration snapshot: the same season a year before the test, else the latest training
snapshot) is what calibration is fitted on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from feast import FeatureStore

from features import repo
from features import store as fs
from features.build import build_tables
from portrait import catalogue
from portrait.settings import Settings
from training.labels import LabelSpec, build_labels
from training.splits import SnapshotPlan

logger = logging.getLogger(__name__)


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


def ensure_registry(settings: Settings, store: FeatureStore | None = None) -> FeatureStore:
    """The Feast store, with the repo applied when any catalogue model's FeatureService is missing."""
    store = store or fs.feature_store(settings)
    try:
        have = {s.name for s in store.list_feature_services()}
    except Exception:  # noqa: BLE001 - Feast raises several "not found" types for a fresh registry
        have = set()
    wanted = {*catalogue.feature_services().values(), catalogue.SERVING_SERVICE}
    if not wanted <= have:
        repo.apply(settings, store)
    return store


def build_training_set(
    settings: Settings, model: str, spec: LabelSpec, plan: SnapshotPlan, store: FeatureStore | None = None
) -> TrainingSet:
    """Labels for every planned snapshot, features from Feast ``get_historical_features``, split by
    snapshot and held-out customers (see the module docstring)."""
    ensure_feature_snapshots(settings, plan)
    store = ensure_registry(settings, store)
    labels = build_labels(settings.clean_dir, plan.all, spec)
    if labels.empty:
        raise ValueError(f"no {spec.target} labels for snapshots {[t.date().isoformat() for t in plan.all]}")
    frame = fs.historical_features(settings, model, labels, store)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    features = fs.feature_names(store, model)
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

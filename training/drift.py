"""Drift: have a champion's inputs and scores moved since it was trained? (Evidently 0.7)

**Reference.** What the champion served first: its label population at the snapshot right after its
training data (the test snapshot + the horizon, :func:`reference_snapshot`), at most
:attr:`Settings.drift_reference_rows` customers with their features, score and tier. Logged with the
training run as ``reference/sample.parquet``, with ``reference/tiers.json`` (predicted vs actual per tier
on the labelled test split, read by the quality cards), by :func:`log_reference`. For a champion trained
without it, both are built once from the run's own parameters (test snapshot, label windows) and logged
to that run, so later checks download them. (The test split itself would be a poorer reference: it lies
a horizon earlier, so every check would count that much seasonal change and ageing as drift.)

**Current.** The newest feature snapshot on disk (:mod:`features.tables`), restricted to the model's
label population at that snapshot (e.g. recent buyers for churn, as in the reference), scored by the
champion.

**Comparison.** One Evidently ``Report`` of a ``DataDriftPreset`` over the model's features plus a
``ValueDrift`` of the score, with the methods and threshold of the settings (``drift_num_method``,
``drift_cat_method``, ``drift_threshold``: by default the normed Wasserstein distance for numbers and
the Jensen-Shannon distance for categories, drift at 0.1 or more, whatever the sample sizes). A column
drifts when Evidently's test for it fails. The HTML report and the JSON summary
(:class:`portrait.predlog.DriftSummary`: drifted share, per-feature scores, score drift) are logged to an
MLflow run of the model's experiment (tag ``portrait.monitor=drift``), and the summary is saved in the
``drift`` section of ``data/reports/monitor.json``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from features.tables import snapshots
from portrait import catalogue, predlog
from portrait.model import TagModel
from portrait.predlog import DriftSummary, FeatureDrift, GroupRate
from portrait.quiet import quiet_third_party
from portrait.settings import Settings
from training.labels import LabelSpec
from training.monitor import (
    MONITOR_TAG,
    Champion,
    champion_of,
    latest_snapshot,
    realised_metrics,
    snapshot_frame,
    tier_order,
)
from training.tracking import configure, experiment_id

if TYPE_CHECKING:
    from training.dataset import TrainingSet

logger = logging.getLogger(__name__)

REFERENCE_DIR = "reference"
SCORE = "__score__"
TIER = "__tier__"
SNAPSHOT = "__snapshot__"


# ---- the reference -------------------------------------------------------------------------------------


def reference_snapshot(test_snapshot: datetime, horizon_days: int) -> datetime:
    """The first snapshot a model serves: right after its training data (test snapshot + horizon)."""
    return test_snapshot + timedelta(days=horizon_days)


def population_sample(
    settings: Settings,
    name: str,
    model: TagModel,
    label: LabelSpec,
    snapshot: datetime,
    rows: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """At most ``rows`` customers of the model's population at ``snapshot`` with features, score and tier.

    The snapshot's feature tables are computed when they are not on disk.
    """
    if snapshot not in snapshots(settings.features_dir):
        from features.pipeline import compute_features

        compute_features(settings.clean_dir, settings.features_dir, [snapshot])
    frame = snapshot_frame(settings, name, model.features, snapshot, label)
    if rows is not None and len(frame) > rows:
        frame = frame.sample(n=rows, random_state=seed).reset_index(drop=True)
    out = frame[model.features].copy()
    scores = model.score(frame)
    out[SCORE] = scores
    out[TIER] = model.tiers.assign(scores)
    out[SNAPSHOT] = pd.Timestamp(snapshot)
    return out


def tier_rates(frame: pd.DataFrame, model: TagModel) -> list[GroupRate]:
    """Predicted vs actual rate (mean value) per tier on a labelled frame (e.g. the test split)."""
    scores = model.score(frame)
    _, tiers, _ = realised_metrics(
        model.kind, scores, frame["label"].to_numpy(), model.tiers.assign(scores), tier_order(model.name)
    )
    return tiers


def _write_reference(out: Path, sample: pd.DataFrame, tiers: list[GroupRate]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sample.to_parquet(out / "sample.parquet", index=False)
    (out / "tiers.json").write_text(json.dumps([t.model_dump() for t in tiers], indent=2))


def log_reference(settings: Settings, ts: TrainingSet, model: TagModel, label: LabelSpec) -> None:
    """Log the drift reference of a freshly trained ``model`` (label spec ``label``) to the active run.

    ``reference/sample.parquet``: its population at the first snapshot it serves
    (:func:`reference_snapshot`), at most :attr:`Settings.drift_reference_rows` customers, with score and
    tier; ``reference/tiers.json``: predicted vs actual per tier on the labelled test split ``ts.test``.
    """
    snapshot = reference_snapshot(ts.plan.test, ts.plan.horizon_days)
    sample = population_sample(settings, model.name, model, label, snapshot, settings.drift_reference_rows)
    with tempfile.TemporaryDirectory() as tmp:
        _write_reference(Path(tmp), sample, tier_rates(ts.test, model))
        mlflow.log_artifacts(tmp, REFERENCE_DIR)


def load_reference(settings: Settings, client: MlflowClient, current: Champion) -> pd.DataFrame:
    """The champion's reference sample: the logged one, else built from its run and logged there."""
    assert current.run_id is not None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(current.run_id, f"{REFERENCE_DIR}/sample.parquet", tmp)
            return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artefact
        logger.info("%s v%s: no logged reference (%s); building it", current.name, current.version, exc)
    day = current.params.get("test_snapshot")
    if not day:
        raise ValueError(f"{current.name} v{current.version}: its run records no test_snapshot")
    test = datetime.fromisoformat(day).replace(tzinfo=UTC)
    label = current.label
    snapshot = reference_snapshot(test, label.horizon_days)
    sample = population_sample(
        settings, current.name, current.model, label, snapshot, settings.drift_reference_rows
    )
    tiers = tier_rates(rebuild_test_frame(settings, current, test), current.model)
    with tempfile.TemporaryDirectory() as tmp:
        _write_reference(Path(tmp), sample, tiers)
        client.log_artifacts(current.run_id, tmp, REFERENCE_DIR)
    return sample


def rebuild_test_frame(settings: Settings, current: Champion, test: datetime) -> pd.DataFrame:
    """The champion's labelled test split, from its run's test snapshot and windows (feature tables)."""
    from training.labels import build_labels

    labels = build_labels(settings.clean_dir, [test], current.label)
    features = snapshot_frame(settings, current.name, current.model.features, test)
    frame = labels.merge(features, on="customer_id", how="inner")
    if frame.empty:
        raise ValueError(f"{current.name} v{current.version}: no labelled rows at its test snapshot {test}")
    return frame


# ---- the comparison ------------------------------------------------------------------------------------


def _definition(frame: pd.DataFrame, columns: Sequence[str]) -> Any:
    from evidently import DataDefinition

    numerical = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in columns if c not in numerical]
    return DataDefinition(numerical_columns=numerical, categorical_columns=categorical)


def _prepare(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    out = frame[list(columns)].copy()
    for c in columns:
        if pd.api.types.is_bool_dtype(out[c]):
            out[c] = out[c].astype("float64")
        elif not pd.api.types.is_numeric_dtype(out[c]):
            out[c] = out[c].astype(object).where(out[c].notna(), "(missing)").astype(str)
        else:
            out[c] = out[c].astype("float64")
    return out


def compare(
    reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[str], settings: Settings
) -> tuple[list[FeatureDrift], FeatureDrift | None, Any]:
    """Evidently drift of ``features`` (and of :data:`SCORE` when both frames have it).

    Returns per-feature verdicts (in ``features`` order), the score's verdict and the Evidently snapshot
    (``save_html`` / ``dict``). Columns that are entirely missing on either side are left out.
    """
    quiet_third_party()  # Evidently's import-time deprecation warnings (portrait.quiet)
    from evidently import Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    usable = [f for f in features if reference[f].notna().any() and current[f].notna().any()]
    columns = usable + ([SCORE] if SCORE in reference.columns and SCORE in current.columns else [])
    ref, cur = _prepare(reference, columns), _prepare(current, columns)
    definition = _definition(ref, columns)
    threshold = settings.drift_threshold
    metrics: list[Any] = [
        DataDriftPreset(
            columns=usable,
            num_method=settings.drift_num_method,
            cat_method=settings.drift_cat_method,
            num_threshold=threshold,
            cat_threshold=threshold,
        )
    ]
    if SCORE in columns:
        metrics.append(ValueDrift(column=SCORE, method=settings.drift_num_method, threshold=threshold))
    snapshot = Report(metrics, include_tests=True).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    found = snapshot.dict()
    failed = {
        t["metric_config"]["metric_id"]
        for t in found.get("tests", [])
        if t.get("status") == "FAIL" and t.get("id") == "drift"
    }
    verdicts: dict[str, FeatureDrift] = {}
    for metric in found["metrics"]:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        column = config["column"]
        verdicts[column] = FeatureDrift(
            column=column,
            method=str(config.get("method")),
            threshold=float(config.get("threshold") or threshold),
            score=float(metric["value"]),
            drifted=metric["id"] in failed,
        )
    return [verdicts[f] for f in usable if f in verdicts], verdicts.get(SCORE), snapshot


def check_drift(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    snapshot: datetime | None = None,
    log_to_mlflow: bool = True,
    save: bool = True,
) -> dict[str, DriftSummary]:
    """Drift of each champion (default: every tag model's) against the newest feature snapshot.

    Models without a champion are skipped. With ``save`` the summaries replace those models' entries in
    the ``drift`` section of ``data/reports/monitor.json``.
    """
    client = configure(settings)
    snapshot = snapshot or latest_snapshot(settings)
    results: dict[str, DriftSummary] = {}
    for name in names if names is not None else [e.name for e in catalogue.tag_models()]:
        current_champion = champion_of(client, name)
        if current_champion is None:
            logger.warning("%s has no champion: no drift to check", name)
            continue
        results[name] = drift_of(settings, client, current_champion, snapshot, log_to_mlflow=log_to_mlflow)
    if save and results:
        report = predlog.read_report(settings)
        report.drift |= results
        report.generated_at = datetime.now(UTC)
        predlog.write_report(settings, report)
    return results


def drift_of(
    settings: Settings,
    client: MlflowClient,
    current_champion: Champion,
    snapshot: datetime,
    *,
    log_to_mlflow: bool = True,
) -> DriftSummary:
    """One champion's drift summary at ``snapshot`` (and its MLflow run)."""
    model = current_champion.model
    reference = load_reference(settings, client, current_champion)
    current = snapshot_frame(
        settings, current_champion.name, model.features, snapshot, current_champion.label
    )
    if current.empty:
        raise ValueError(f"{current_champion.name}: no customer of its population at {snapshot:%Y-%m-%d}")
    current[SCORE] = model.score(current)
    features, prediction, evidently_snapshot = compare(reference, current, model.features, settings)
    drifted = sum(f.drifted for f in features)
    ref_day: date | None = None
    if SNAPSHOT in reference.columns and len(reference):
        ref_day = pd.Timestamp(reference[SNAPSHOT].iloc[0]).date()
    summary = DriftSummary(
        model=current_champion.name,
        version=current_champion.version,
        reference_snapshot=ref_day,
        current_snapshot=snapshot.date(),
        reference_rows=len(reference),
        current_rows=len(current),
        n_features=len(features),
        drifted_features=drifted,
        drift_share=drifted / len(features) if features else 0.0,
        features=features,
        prediction=prediction,
        checked_at=datetime.now(UTC),
    )
    if log_to_mlflow:
        summary.run_id = _log_drift(client, settings, summary, evidently_snapshot)
    logger.info(
        "%s v%s: %d of %d features drifted (%.0f %%); score drift %s",
        summary.model,
        summary.version,
        drifted,
        len(features),
        100 * summary.drift_share,
        f"{prediction.score:.3f}{' (drifted)' if prediction.drifted else ''}" if prediction else "-",
    )
    return summary


def _log_drift(client: MlflowClient, settings: Settings, summary: DriftSummary, report: Any) -> str:
    exp = experiment_id(client, settings, summary.model)
    day = summary.current_snapshot.isoformat()
    with mlflow.start_run(
        experiment_id=exp, run_name=f"drift-{summary.model}-v{summary.version}-{day}"
    ) as run:
        mlflow.set_tags(
            {
                MONITOR_TAG: "drift",
                "model": summary.model,
                "version": summary.version,
                "current_snapshot": day,
                "reference_snapshot": str(summary.reference_snapshot),
            }
        )
        metrics = {"drift_share": summary.drift_share, "drifted_features": float(summary.drifted_features)}
        if summary.prediction is not None:
            metrics["prediction_drift_score"] = summary.prediction.score
        metrics |= {f"drift_{f.column}": f.score for f in summary.features if np.isfinite(f.score)}
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            report.save_html(str(Path(tmp) / "drift.html"))
            (Path(tmp) / "drift.json").write_text(summary.model_dump_json(indent=2))
            mlflow.log_artifacts(tmp)
        return run.info.run_id


__all__ = [
    "REFERENCE_DIR",
    "SCORE",
    "check_drift",
    "compare",
    "drift_of",
    "load_reference",
    "log_reference",
    "population_sample",
    "rebuild_test_frame",
    "reference_snapshot",
    "tier_rates",
]

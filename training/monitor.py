"""Realised performance: were the logged scores right, now that their outcome windows have passed?

For each logged (model, version, snapshot) -- the snapshot is the records' ``features_timestamp``, the
moment the scored features describe -- whose horizon has passed relative to the end of the validated data
(``snapshot + horizon <= data end + 1 day``, the rule of :mod:`training.splits`), the scores are joined
to what happened: labels built by :func:`training.labels.build_labels` at that snapshot with the version's
own label spec (``horizon_days``, ``lookback_days``, ``population`` of its training run; the catalogue's
defaults for a version whose run is gone). Only scored customers in the label population are compared
(churn, e.g., is defined for recent buyers only). Figures:

* classifiers: AUC, Brier score, actual rate vs mean probability (``calibration_ratio`` = mean
  probability / actual rate), top-decile lift, and predicted vs actual rate per tier and per score decile;
* regressors: normalised Gini, RMSE, MAE, total predicted vs total actual (``calibration_ratio`` =
  predicted / actual), top-decile lift, and predicted vs actual mean value per tier and per decile;
* both: ``calibration_z``, how many standard deviations the predicted total lies above the actual one
  (classifiers: the expected count's binomial spread ``sqrt(sum p (1 - p))``; regressors: the residuals'
  ``sqrt(sum (y - p)^2)``), so a calibration gap on a few hundred customers can be told from noise.

Each new evaluation is logged to MLflow as a run of the model's experiment (tags ``model``, ``version``,
``scoring_date``, ``portrait.monitor=realised``; metrics ``realised_*``; plots and tables) and all of them
go into ``data/reports/monitor.json`` (:class:`portrait.predlog.MonitorReport`) with the quality cards.
An evaluation that is already in the report with the same number of customers is not logged again, so
`portrait monitor` can run on a schedule.

:func:`score_snapshot` scores a feature snapshot offline with the champions and logs the scores (source
``batch``): what `portrait score` logs, without the online store (tests, benchmarks, backfills).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.metrics import brier_score_loss, mean_absolute_error, mean_squared_error, roc_auc_score

from features.history import data_end
from features.tables import snapshot_path, snapshots
from portrait import catalogue, predlog
from portrait.model import TagModel
from portrait.predlog import Evaluation, GroupRate, MonitorReport, Pending
from portrait.settings import Settings
from training.evaluate import classifier_plots, lift_by_decile, normalized_gini, regressor_plots
from training.labels import LabelSpec, build_labels
from training.tracking import champion, configure, experiment_id

logger = logging.getLogger(__name__)

MONITOR_TAG = "portrait.monitor"


# ---- champions and their windows -----------------------------------------------------------------------


@dataclass
class Champion:
    """A registered version of a tag model with what its training run recorded."""

    name: str
    version: str
    run_id: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    _model: TagModel | None = None

    @property
    def model(self) -> TagModel:
        if self._model is None:
            uri = f"models:/{self.name}/{self.version}"
            self._model = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        return self._model

    @property
    def label(self) -> LabelSpec:
        return label_spec(self.name, self.params)

    @property
    def test_metrics(self) -> dict[str, float]:
        return {k.removeprefix("test_"): v for k, v in self.metrics.items() if k.startswith("test_")}


def version_info(client: MlflowClient, name: str, version: str) -> Champion:
    """Version ``version`` of ``name`` with its run's params and metrics (empty when the run is gone)."""
    try:
        mv = client.get_model_version(name, version)
        run = client.get_run(mv.run_id) if mv.run_id else None
    except MlflowException:
        return Champion(name, str(version), None)
    if run is None:
        return Champion(name, str(version), mv.run_id)
    return Champion(name, str(version), mv.run_id, dict(run.data.params), dict(run.data.metrics))


def champion_of(client: MlflowClient, name: str) -> Champion | None:
    """The champion of ``name`` (None when there is none)."""
    mv = champion(client, name)
    return version_info(client, name, str(mv.version)) if mv is not None else None


def label_spec(name: str, params: dict[str, str]) -> LabelSpec:
    """The label a version was trained on: its run's windows, else the catalogue's defaults."""
    entry = catalogue.get(name)
    if entry.label is None:
        raise ValueError(f"{name!r} is not a tag model with a label")
    return LabelSpec(
        entry.label.kind,
        int(params.get("horizon_days", entry.label.horizon_days)),
        int(params.get("lookback_days", entry.label.lookback_days)),
        params.get("population", entry.label.population),  # type: ignore[arg-type]
    )


# ---- feature snapshots ---------------------------------------------------------------------------------


def latest_snapshot(settings: Settings) -> datetime:
    """The newest feature snapshot on disk (``ValueError`` when there is none)."""
    found = snapshots(settings.features_dir)
    if not found:
        raise ValueError("no feature snapshots: run `portrait features build`")
    return found[-1]


def snapshot_frame(
    settings: Settings, name: str, features: Sequence[str], snapshot: datetime, label: LabelSpec | None = None
) -> pd.DataFrame:
    """``customer_id`` and ``features`` of model ``name`` at ``snapshot``, read from the feature tables.

    With ``label``, only the customers of that label's population at the snapshot (churn: recent buyers;
    the population needs no outcome, so this works at the newest snapshot too).
    """
    entry = catalogue.get(name)
    wanted = set(features)
    frame: pd.DataFrame | None = None
    for view, chosen in entry.views.items():
        path = snapshot_path(settings.features_dir, view, snapshot)
        if not path.exists():
            raise ValueError(f"no {view} features at {snapshot:%Y-%m-%d}: run `portrait features build`")
        available = pq.read_schema(path).names
        columns = [c for c in available if c in wanted and (chosen is None or c in chosen)]
        part = pd.read_parquet(path, columns=["customer_id", *columns])
        frame = part if frame is None else frame.merge(part, on="customer_id", how="outer")
    assert frame is not None
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ValueError(f"{name}: features {missing} are not in the feature tables at {snapshot:%Y-%m-%d}")
    if label is not None:
        population = build_labels(settings.clean_dir, [snapshot], label)[["customer_id"]]
        frame = frame.merge(population, on="customer_id", how="inner")
    return frame[["customer_id", *features]].reset_index(drop=True)


def score_snapshot(
    settings: Settings,
    names: Sequence[str] | None = None,
    snapshot: datetime | None = None,
    *,
    log: bool = True,
    scored_at: datetime | None = None,
) -> pd.DataFrame:
    """Score every customer of a feature snapshot (default: the newest) with each tag model's champion.

    Returns the prediction records (:data:`portrait.predlog.COLUMNS`, source ``batch``) and, with
    ``log``, appends them to the prediction log. Models without a champion are skipped.
    """
    client = configure(settings)
    snapshot = snapshot or latest_snapshot(settings)
    when = scored_at or datetime.now(UTC)
    parts = []
    for name in names if names is not None else [e.name for e in catalogue.tag_models()]:
        current = champion_of(client, name)
        if current is None:
            logger.warning("%s has no champion: not scored", name)
            continue
        model = current.model
        frame = snapshot_frame(settings, name, model.features, snapshot)
        scores = model.score(frame)
        parts.append(
            pd.DataFrame(
                {
                    "customer_id": frame["customer_id"].to_numpy(),
                    "model": name,
                    "model_version": current.version,
                    "score": scores,
                    "tier": model.tiers.assign(scores),
                    "features_timestamp": pd.Timestamp(snapshot),
                    "scored_at": pd.Timestamp(when),
                    "source": "batch",
                }
            )
        )
    records = predlog.normalize(pd.concat(parts, ignore_index=True)) if parts else pd.DataFrame()
    if log and not records.empty:
        predlog.append(settings, records)
    return records


# ---- realised metrics ----------------------------------------------------------------------------------


def _groups(
    predicted: np.ndarray, actual: np.ndarray, keys: np.ndarray, order: Sequence[str]
) -> list[GroupRate]:
    out = []
    for key in order:
        rows = keys == key
        if rows.any():
            out.append(
                GroupRate(
                    group=str(key),
                    customers=int(rows.sum()),
                    predicted=float(predicted[rows].mean()),
                    actual=float(actual[rows].mean()),
                )
            )
    return out


def realised_metrics(
    kind: str,
    scores: np.ndarray,
    outcomes: np.ndarray,
    tiers: Sequence[str | None] | None = None,
    tier_order: Sequence[str] = (),
) -> tuple[dict[str, float], list[GroupRate], list[GroupRate]]:
    """Metrics, per-tier and per-decile (1 = highest scores) predicted vs actual, for scores and outcomes.

    Deciles split the customers ranked by score (ties in input order) into ten near-equal parts, as
    :func:`training.evaluate.lift_by_decile` does. Figures that are not defined (AUC without both
    outcomes, a ratio to a zero total) are left out.
    """
    p = np.asarray(scores, dtype="float64")
    y = np.asarray(outcomes, dtype="float64")
    if len(p) != len(y) or len(p) == 0:
        raise ValueError("scores and outcomes must be non-empty and of the same length")
    lift = lift_by_decile(y, p)
    metrics: dict[str, float] = {"n": float(len(y)), "lift_top_decile": float(lift.lift.iloc[0])}
    if kind == "classifier":
        rate, mean = float(y.mean()), float(p.mean())
        spread = float(np.sqrt(np.sum(p * (1.0 - p))))
        metrics |= {
            "positive_rate": rate,
            "mean_prediction": mean,
            "calibration_ratio": mean / rate if rate else float("nan"),
            "calibration_z": float((p.sum() - y.sum()) / spread) if spread else float("nan"),
            "brier": float(brier_score_loss(y.astype(int), p)),
        }
        if len(np.unique(y)) == 2:
            metrics["auc"] = float(roc_auc_score(y.astype(int), p))
    else:
        total_p, total_y = float(p.sum()), float(y.sum())
        spread = float(np.sqrt(np.sum((y - p) ** 2)))
        metrics |= {
            "normalized_gini": float(normalized_gini(y, p)),
            "rmse": float(np.sqrt(mean_squared_error(y, p))),
            "mae": float(mean_absolute_error(y, p)),
            "total_predicted": total_p,
            "total_actual": total_y,
            "calibration_ratio": total_p / total_y if total_y else float("nan"),
            "calibration_z": (total_p - total_y) / spread if spread else float("nan"),
        }
    metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}  # JSON has no NaN
    order = np.argsort(-p, kind="stable")
    decile = np.empty(len(p), dtype=object)
    for i, part in enumerate(np.array_split(order, 10), start=1):
        decile[part] = str(i)
    deciles = _groups(p, y, decile, [str(i) for i in range(1, 11)])
    tier_rates: list[GroupRate] = []
    if tiers is not None:
        keys = np.array([t if t is not None else "" for t in tiers], dtype=object)
        known = list(tier_order) + sorted(set(keys) - set(tier_order) - {""})
        tier_rates = _groups(p, y, keys, known)
    return metrics, tier_rates, deciles


def tier_order(name: str) -> list[str]:
    """A model's tier names, highest first, then the default tier."""
    tiers = catalogue.get(name).tiers
    return [*tiers.names, tiers.default] if tiers else []


# ---- the monitor ---------------------------------------------------------------------------------------


def is_due(snapshot: datetime, horizon_days: int, end: datetime) -> bool:
    """Whether the outcome window ``[snapshot, snapshot + horizon)`` lies inside the validated data."""
    return snapshot + timedelta(days=horizon_days) <= end + timedelta(days=1)


def monitor(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    log_to_mlflow: bool = True,
    save: bool = True,
) -> MonitorReport:
    """Evaluate every logged (model, version, snapshot) whose horizon has passed; see the module docstring.

    Returns the report (evaluations of ``names``, default every tag model; pending scorings; the drift
    section and quality cards as saved) and, with ``save``, writes it to ``data/reports/monitor.json``.
    """
    client = configure(settings)
    wanted = list(names) if names is not None else [e.name for e in catalogue.tag_models()]
    end = data_end(settings.clean_dir)
    previous = predlog.read_report(settings)
    known = {(e.model, e.version, e.snapshot): e for e in previous.evaluations}
    evaluations: list[Evaluation] = [e for e in previous.evaluations if e.model not in wanted]
    pending: list[Pending] = [p for p in previous.pending if p.model not in wanted]
    versions: dict[tuple[str, str], Champion] = {}
    for name in wanted:
        log = predlog.read(settings, name)
        if log.empty:
            continue
        log = log.dropna(subset=["features_timestamp"]).sort_values("scored_at", kind="stable")
        log = log.drop_duplicates(["model_version", "features_timestamp", "customer_id"], keep="last")
        for (version, snapshot), scored in log.groupby(["model_version", "features_timestamp"], sort=True):
            info = versions.setdefault((name, version), version_info(client, name, version))
            label = info.label
            moment = pd.Timestamp(snapshot).to_pydatetime()
            if not is_due(moment, label.horizon_days, end):
                pending.append(
                    Pending(
                        model=name,
                        version=version,
                        scoring_date=moment.date(),
                        customers=len(scored),
                        due=(moment + timedelta(days=label.horizon_days)).date(),
                    )
                )
                continue
            evaluated = evaluate_scores(settings, info, moment, scored)
            if evaluated is None:
                continue
            evaluation, joined = evaluated
            before = known.get((name, version, evaluation.snapshot))
            if before is not None and before.customers == evaluation.customers:
                evaluations.append(before)
                continue
            if log_to_mlflow:
                evaluation.run_id = log_evaluation(client, settings, evaluation, joined)
            evaluations.append(evaluation)
            logger.info(
                "%s v%s at %s: %s",
                name,
                version,
                evaluation.scoring_date,
                ", ".join(f"{k} {v:.4f}" for k, v in evaluation.metrics.items() if k != "n"),
            )
    report = MonitorReport(
        generated_at=datetime.now(UTC),
        data_end=end,
        evaluations=sorted(evaluations, key=lambda e: (e.model, e.snapshot, int(e.version))),
        pending=sorted(pending, key=lambda p: (p.model, p.scoring_date)),
        drift=previous.drift,
    )
    report.cards = predlog.quality_cards(settings, client, report)
    if save:
        predlog.write_report(settings, report)
    return report


def evaluate_scores(
    settings: Settings, info: Champion, snapshot: datetime, scored: pd.DataFrame
) -> tuple[Evaluation, pd.DataFrame] | None:
    """Join one scoring's records to the outcomes at ``snapshot`` and compute the realised figures.

    Returns the evaluation and the joined records (with ``label``); None when no scored customer is in
    the label population.
    """
    entry = catalogue.get(info.name)
    labels = build_labels(settings.clean_dir, [snapshot], info.label)
    joined = scored.merge(labels[["customer_id", "label"]], on="customer_id", how="inner")
    if joined.empty:
        logger.warning(
            "%s v%s at %s: no scored customer is in the label population", info.name, info.version, snapshot
        )
        return None
    metrics, tiers, deciles = realised_metrics(
        entry.kind,
        joined["score"].to_numpy(),
        joined["label"].to_numpy(),
        joined["tier"].tolist(),
        tier_order(info.name),
    )
    evaluation = Evaluation(
        model=info.name,
        version=info.version,
        kind=entry.kind,
        snapshot=snapshot,
        scoring_date=snapshot.date(),
        horizon_days=info.label.horizon_days,
        customers=len(joined),
        metrics=metrics,
        test_metrics=info.test_metrics,
        tiers=tiers,
        deciles=deciles,
        sources=sorted(joined["source"].unique().tolist()),
        evaluated_at=datetime.now(UTC),
    )
    return evaluation, joined


def _group_plot(evaluation: Evaluation, path: Path) -> Path:
    """Predicted vs actual per tier and per decile (bars)."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    what = "rate" if evaluation.kind == "classifier" else "mean value"
    for ax, groups, title in ((axes[0], evaluation.tiers, "tier"), (axes[1], evaluation.deciles, "decile")):
        x = np.arange(len(groups))
        ax.bar(x - 0.2, [g.predicted or 0.0 for g in groups], 0.4, label="predicted")
        ax.bar(x + 0.2, [g.actual or 0.0 for g in groups], 0.4, label="actual")
        ax.set_xticks(x, [g.group for g in groups])
        ax.set(xlabel=title, ylabel=what, title=f"{evaluation.model} v{evaluation.version}: by {title}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def log_evaluation(
    client: MlflowClient, settings: Settings, evaluation: Evaluation, joined: pd.DataFrame
) -> str:
    """One MLflow run in the model's experiment with the realised figures, tables and plots.

    ``joined`` holds the evaluated records with their outcome (``score``, ``label``).
    """
    exp = experiment_id(client, settings, evaluation.model)
    day = evaluation.scoring_date.isoformat()
    tags = {
        MONITOR_TAG: "realised",
        "model": evaluation.model,
        "version": evaluation.version,
        "scoring_date": day,
    }
    with mlflow.start_run(
        experiment_id=exp, run_name=f"realised-{evaluation.model}-v{evaluation.version}-{day}"
    ):
        mlflow.set_tags(tags)
        mlflow.log_params({"horizon_days": evaluation.horizon_days, "customers": evaluation.customers})
        mlflow.log_metrics({f"realised_{k}": v for k, v in evaluation.metrics.items() if np.isfinite(v)})
        mlflow.log_metrics(
            {f"test_{k}": v for k, v in evaluation.test_metrics.items() if k in evaluation.metrics}
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            plots = out / "plots"
            plots.mkdir()
            _group_plot(evaluation, plots / "predicted_vs_actual.png")
            y, p = joined["label"].to_numpy(), joined["score"].to_numpy()
            title = f"{evaluation.model} v{evaluation.version} (realised {day})"
            if evaluation.kind == "classifier" and len(np.unique(y)) == 2:
                classifier_plots(y, p, plots, title)
            elif evaluation.kind == "regressor" and np.std(p) > 0:
                regressor_plots(y, p, plots, title)
            (out / "evaluation.json").write_text(evaluation.model_dump_json(indent=2))
            mlflow.log_artifacts(str(out))
        return mlflow.active_run().info.run_id  # type: ignore[union-attr]


__all__ = [
    "Champion",
    "champion_of",
    "evaluate_scores",
    "is_due",
    "label_spec",
    "latest_snapshot",
    "monitor",
    "realised_metrics",
    "score_snapshot",
    "snapshot_frame",
    "tier_order",
    "version_info",
]

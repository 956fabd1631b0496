"""Train, evaluate, log, register and (maybe) promote one tag model.

The alias is the very last write of a successful run: a run that fails or is interrupted before that
leaves every alias where it was, and the version it registered is deleted (if the store is gone too, an
unaliased version tagged ``status=incomplete`` remains). The tracking store is checked before any work.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from features import store as fs
from portrait import catalogue
from portrait.lifecycle import rfm_edges
from portrait.model import TagModel
from portrait.registry import register
from portrait.settings import Settings
from training.dataset import TrainingSet, build_training_set
from training.drift import log_reference
from training.evaluate import (
    classifier_plots,
    evaluate_classifier,
    evaluate_regressor,
    importance_plot,
    regressor_plots,
)
from training.fit import FitOutcome, fit
from training.labels import data_end, data_start
from training.specs import ModelSpec, spec_for, tag_specs
from training.splits import DEFAULT_STEP_DAYS, SnapshotPlan, plan_snapshots
from training.tracking import (
    Decision,
    apply_decision,
    champion,
    configure,
    decide,
    experiment_id,
    owner_tags,
    registration,
)

logger = logging.getLogger(__name__)

PIP_REQUIREMENTS = ["lightgbm>=4.6", "scikit-learn>=1.5", "pandas>=2.2", "numpy>=1.26"]


@dataclass
class TrainOutcome:
    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    decision: Decision
    seconds: float
    sizes: dict[str, int] = field(default_factory=dict)


def evaluate(model: TagModel, frame: pd.DataFrame) -> dict[str, float]:
    """Metrics of ``model`` on a labelled frame."""
    scores = model.score(frame)
    y = frame.label.to_numpy()
    return evaluate_classifier(y, scores) if model.kind == "classifier" else evaluate_regressor(y, scores)


def plan_for(settings: Settings, spec: ModelSpec, **plan_options: Any) -> SnapshotPlan:
    return plan_snapshots(
        data_start(settings.clean_dir), data_end(settings.clean_dir), spec.label.horizon_days, **plan_options
    )


def fit_final(
    settings: Settings,
    ts: TrainingSet,
    spec: ModelSpec,
    *,
    trials: int,
    timeout_s: float | None = None,
    seed: int = 7,
) -> FitOutcome:
    """Search, calibrate and refit a tag model: the refit in this process, or on Dask workers when
    ``settings.distributed_refit`` is on (:mod:`training.distributed`) and the model's hooks allow it (a
    ``DISTRIBUTED_REFIT = False`` in its spec module: refitted here, on this process's rows, with a warning)."""
    hooks = catalogue.spec_module(catalogue.get(spec.name))
    distributed = settings.distributed_refit and getattr(hooks, "DISTRIBUTED_REFIT", True)
    if settings.distributed_refit and not distributed:
        sample = f"{ts.on_disk.sampled_share:.1%} of the customers" if ts.on_disk else "every row"
        logger.warning(
            "%s: refitted in this process on %d rows (%s): its model cannot be refitted on Dask",
            spec.name,
            len(ts.train) + len(ts.validation),
            sample,
        )
    if not distributed:
        return fit(ts, spec, trials=trials, timeout_s=timeout_s, threads=settings.train_threads, seed=seed)
    from training.distributed import dask_client, refit_model

    outcome = fit(
        ts, spec, trials=trials, timeout_s=timeout_s, threads=settings.train_threads, refit=False, seed=seed
    )
    with dask_client(settings) as client:
        outcome.model = refit_model(client, outcome, ts, spec)
    return outcome


def train_model(
    settings: Settings,
    spec: ModelSpec,
    *,
    trials: int = 20,
    timeout_s: float | None = None,
    plan: SnapshotPlan | None = None,
    training_set: TrainingSet | None = None,
    seed: int = 7,
    **plan_options: Any,
) -> TrainOutcome:
    """The whole training step for one model; returns what was registered and whether it was promoted.
    ``seed``: the hyper-parameter search's (repeat runs of a benchmark differ only in it)."""
    started = time.perf_counter()
    client = configure(settings)
    plan = plan or (training_set.plan if training_set else plan_for(settings, spec, **plan_options))
    ts = training_set or build_training_set(settings, spec.name, spec.label, plan)
    try:
        return _train(settings, client, spec, ts, plan, trials, timeout_s, seed, plan_options, started)
    finally:
        if training_set is None:
            ts.discard()  # the cluster profile's frame on disk, once the refit has read it


def _train(
    settings: Settings,
    client: mlflow.MlflowClient,
    spec: ModelSpec,
    ts: TrainingSet,
    plan: SnapshotPlan,
    trials: int,
    timeout_s: float | None,
    seed: int,
    plan_options: dict[str, Any],
    started: float,
) -> TrainOutcome:
    hooks = catalogue.spec_module(catalogue.get(spec.name))  # optional prepare / finish / gate
    prepared = hooks.prepare(settings, ts, spec) if hasattr(hooks, "prepare") else None
    for note in plan.notes:
        logger.warning("%s: %s", spec.name, note)
    exp = experiment_id(client, settings, spec.name)
    with mlflow.start_run(experiment_id=exp, run_name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        mlflow.set_tags(
            {"model": spec.name, "feature_service": ts.feature_service, "kind": spec.kind, **owner_tags()}
        )
        mlflow.log_params(
            {
                "horizon_days": spec.label.horizon_days,
                "lookback_days": spec.label.lookback_days,
                "step_days": plan_options.get("step_days", DEFAULT_STEP_DAYS),
                "n_train_snapshots": len(plan.train),
                "test_snapshot": plan.test.date().isoformat(),
                "population": spec.label.population,
                "trials": trials,
                "timeout_s": timeout_s,
                "feature_service": ts.feature_service,
                "n_features": len(ts.features),
                **{f"rows_{k}": v for k, v in ts.sizes().items()},
            }
        )
        outcome = fit_final(settings, ts, spec, trials=trials, timeout_s=timeout_s, seed=seed)
        model = outcome.model
        model.metadata["plan"] = plan.as_dict()
        extra = hooks.finish(settings, ts, spec, outcome, prepared) if hasattr(hooks, "finish") else {}
        if {"recency_days", "orders_365d", "spend_365d"} <= set(ts.train.columns):
            model.metadata["rfm_edges"] = rfm_edges(ts.train)
        mlflow.log_params({f"lgbm_{k}": v for k, v in outcome.params.items() if k not in ("verbosity",)})
        mlflow.log_param("best_iteration", outcome.best_iteration)
        val_metrics = evaluate(model, ts.validation)
        test_metrics = evaluate(model, ts.test)
        metrics = {f"val_{k}": v for k, v in val_metrics.items()} | {
            f"test_{k}": v for k, v in test_metrics.items()
        }
        mlflow.log_metrics(metrics | extra)
        metrics |= {k: v for k, v in extra.items() if k.startswith("test_")}
        mlflow.log_metrics(
            {f"optuna_{k}": float(v) for k, v in outcome.study.items() if isinstance(v, int | float)}
        )
        _log_artifacts(ts, model, outcome, spec)
        try:  # the drift reference: monitoring must never make training fail
            log_reference(settings, ts, model, spec.label)
        except Exception as exc:  # noqa: BLE001 - logged; `portrait monitor` builds it later if missing
            logger.warning(
                "%s: no drift reference logged (%s); the first drift check builds it", spec.name, exc
            )
        # Integer features are declared as doubles: any feature may be missing when served.
        example = _as_float_columns(ts.test[model.features].head(50))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(example, model.predict(None, ts.test.head(50))),
            input_example=example.head(3),
            pip_requirements=PIP_REQUIREMENTS,
            metadata={"feature_service": ts.feature_service, "features": model.features},
        )
        version = register(
            info.model_uri, spec.name, tags={"run_id": run.info.run_id, "status": "incomplete"}
        ).version
        with registration(client, spec.name, version):  # a failure from here on deletes the version
            _check_loads(spec.name, version, example, model.predict(None, example))
            decision = _challenge(client, spec, ts, test_metrics[spec.primary_metric])
            if hasattr(hooks, "gate"):  # e.g. the value model must also beat its pure purchase model
                decision = hooks.gate(decision, metrics, spec)
            mlflow.set_tags({"promotion": decision.reason, "registered_version": version})
            client.set_model_version_tag(spec.name, version, "status", "ready")
            apply_decision(client, spec.name, version, decision)
    seconds = time.perf_counter() - started
    logger.info("%s v%s: %s (%.1fs)", spec.name, version, decision.reason, seconds)
    return TrainOutcome(spec.name, str(version), run.info.run_id, metrics, decision, seconds, ts.sizes())


def _check_loads(name: str, version: str, example: pd.DataFrame, expected: Any) -> None:
    """The registered version is complete only if it loads back from the registry and gives the logged
    model's predictions (a truncated or unreadable artefact must never become ``status=ready``)."""
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    got = loaded.predict(example)
    want = expected
    if isinstance(got, pd.DataFrame) and isinstance(want, pd.DataFrame):
        got, want = got.select_dtypes("number"), want.select_dtypes("number")
    if not np.allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), equal_nan=True):
        raise RuntimeError(f"{name} v{version}: the registered artefact does not reproduce the model")


def _as_float_columns(frame: pd.DataFrame) -> pd.DataFrame:
    ints = [c for c in frame.columns if pd.api.types.is_integer_dtype(frame[c])]
    return frame.astype(dict.fromkeys(ints, "float64")) if ints else frame


def _challenge(client: mlflow.MlflowClient, spec: ModelSpec, ts: TrainingSet, candidate: float) -> Decision:
    """Score the current champion on the candidate's test split and decide."""
    current = champion(client, spec.name)
    if current is None:
        return decide(spec.primary_metric, candidate, None, None)
    try:
        champ = mlflow.pyfunc.load_model(f"models:/{spec.name}@champion").unwrap_python_model()
        champ_score = evaluate(champ, ts.test)[spec.primary_metric]
    except (KeyError, ValueError) as exc:
        logger.warning(
            "champion v%s of %s cannot be scored on this data: %s", current.version, spec.name, exc
        )
        champ_score = None
    return decide(
        spec.primary_metric, candidate, champ_score, current.version, higher_is_better=spec.higher_is_better
    )


def _log_artifacts(ts: TrainingSet, model: TagModel, outcome: Any, spec: ModelSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        y = ts.test.label.to_numpy()
        scores = model.score(ts.test)
        if spec.kind == "classifier":
            classifier_plots(y, scores, out / "plots", f"{spec.name} (test)")
        else:
            regressor_plots(y, scores, out / "plots", f"{spec.name} (test)")
            tiers = pd.Series(model.tiers.assign(scores)).rename("tier")
            value_tiers = (
                pd.DataFrame({"tier": tiers, "actual": y, "predicted": scores})
                .groupby("tier")
                .agg(
                    customers=("actual", "size"),
                    actual_mean=("actual", "mean"),
                    predicted_mean=("predicted", "mean"),
                )
            )
            value_tiers.to_csv(out / "value_tiers.csv")
            mlflow.log_metrics(
                {f"test_tier_{t}_actual_mean": float(r.actual_mean) for t, r in value_tiers.iterrows()}
            )
        gains = np.array([model.metadata["feature_importance_gain"][f] for f in model.features])
        importance_plot(model.features, gains, out / "plots", spec.name)
        outcome.trials.to_csv(out / "optuna_trials.csv", index=False)
        (out / "optuna_study.json").write_text(json.dumps(outcome.study, indent=2))
        lineage = {
            "feature_service": ts.feature_service,
            "features": ts.features,
            "plan": ts.plan.as_dict(),
            "rows": ts.sizes(),
            "label": {
                "target": spec.label.target,
                "horizon_days": spec.label.horizon_days,
                "lookback_days": spec.label.lookback_days,
                "population": spec.label.population,
            },
            "label_rate_or_mean": {
                k: float(getattr(ts, k).label.mean()) for k in ("train", "validation", "test")
            },
            "tiers": {"thresholds": model.tiers.thresholds, "names": model.tiers.names},
        }
        (out / "lineage.json").write_text(json.dumps(lineage, indent=2, default=str))
        mlflow.log_artifacts(str(out))
    mlflow.log_dict({"features": ts.features}, "feature_list.json")


WINDOW_OPTIONS = ("horizon_days", "lookback_days", "step_days", "n_train", "test_date")


def resolve(settings: Settings, name: str, **overrides: Any) -> tuple[ModelSpec, dict[str, Any]]:
    """Model ``name``'s spec and snapshot-plan options: the catalogue's defaults, then
    ``settings.models[name]``, then ``overrides`` (None values ignored). Other plan options
    (e.g. ``min_history_days``) pass through."""
    configured = settings.models[name].model_dump(exclude_none=True) if name in settings.models else {}
    windows = configured | {k: v for k, v in overrides.items() if v is not None}
    spec = spec_for(
        name, horizon_days=windows.get("horizon_days"), lookback_days=windows.get("lookback_days")
    )
    plan_options = {
        k: v for k, v in windows.items() if k not in ("horizon_days", "lookback_days", "test_date")
    }
    if windows.get("test_date") is not None:
        day = windows["test_date"]
        plan_options["test_at"] = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return spec, plan_options


def train_named(
    settings: Settings, name: str, *, trials: int = 20, timeout_s: float | None = None, **overrides: Any
) -> Any:
    """Train catalogue model ``name`` of any kind (tag model or lookalike); returns its outcome.

    ``overrides`` are windows (``horizon_days``, ``lookback_days``, ``step_days``, ``n_train``,
    ``test_date``) or other snapshot-plan options for a tag model; see :func:`resolve`.
    """
    entry = catalogue.get(name)
    if entry.kind == "lookalike":
        from training.lookalike import train_lookalike

        return train_lookalike(settings, trials=trials)
    spec, plan_options = resolve(settings, name, **overrides)
    return train_model(settings, spec, trials=trials, timeout_s=timeout_s, **plan_options)


def train_many(
    settings: Settings, names: list[str] | None = None, *, trials: int, timeout_s: float | None = None
) -> list[Any]:
    """Train ``names`` (default: every catalogue model), in catalogue order."""
    return [
        train_named(settings, name, trials=trials, timeout_s=timeout_s)
        for name in (names if names is not None else catalogue.names())
    ]


__all__ = [
    "TrainOutcome",
    "evaluate",
    "fs",
    "plan_for",
    "resolve",
    "spec_for",
    "tag_specs",
    "train_many",
    "train_model",
    "train_named",
]

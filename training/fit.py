"""Fit a LightGBM tag model: Optuna search (TPE + pruning), final refit, calibration and tiers."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
from optuna_integration import LightGBMPruningCallback

from portrait.model import PlattCalibrator, TagModel, Tiers
from training.dataset import TrainingSet
from training.specs import ModelSpec, TierSpec

logger = logging.getLogger(__name__)

# Capacity caps: serving explains every prediction by walking each tree, so trees stay bounded.
MAX_ROUNDS = 600
EARLY_STOPPING = 50


@dataclass
class FitOutcome:
    model: TagModel
    params: dict[str, Any]
    best_iteration: int
    study: dict[str, Any]
    trials: pd.DataFrame


def categories_of(frame: pd.DataFrame, features: list[str]) -> dict[str, list[str]]:
    """String features and their categories (sorted) as seen in training."""
    cats = {}
    for name in features:
        if frame[name].dtype == object or isinstance(frame[name].dtype, pd.StringDtype):
            cats[name] = sorted(str(v) for v in frame[name].dropna().unique())
    return cats


def _objective_params(kind: str) -> dict[str, Any]:
    base = {"verbosity": -1, "num_threads": os.cpu_count() or 2, "deterministic": True, "seed": 7}
    if kind == "classifier":
        return base | {"objective": "binary", "metric": "auc"}
    return base | {"objective": "tweedie", "metric": "poisson"}


def _suggest(trial: optuna.Trial, kind: str) -> dict[str, Any]:
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 63, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 400, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "bagging_freq": 1,
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
    }
    if kind == "regressor":
        params["tweedie_variance_power"] = trial.suggest_float("tweedie_variance_power", 1.05, 1.9)
    return params


def _datasets(ts: TrainingSet, model: TagModel) -> tuple[lgb.Dataset, lgb.Dataset, np.ndarray, np.ndarray]:
    x_tr, x_va = model.matrix(ts.train), model.matrix(ts.validation)
    y_tr, y_va = ts.train.label.to_numpy(dtype=float), ts.validation.label.to_numpy(dtype=float)
    cat_idx = [i for i, f in enumerate(model.features) if f in model.categories]
    # feature_pre_filter off: trials change min_child_samples on the same Dataset.
    params = {"feature_pre_filter": False, "verbosity": -1}
    train = lgb.Dataset(
        x_tr,
        y_tr,
        feature_name=model.features,
        categorical_feature=cat_idx,
        free_raw_data=False,
        params=params,
    )
    valid = lgb.Dataset(
        x_va, y_va, reference=train, categorical_feature=cat_idx, free_raw_data=False, params=params
    )
    return train, valid, x_va, y_va


def tier_thresholds(scores: np.ndarray, spec: TierSpec) -> Tiers:
    """Thresholds at the validation quantiles that give each tier its share (highest tier first)."""
    thresholds, cumulative = [], 0.0
    for share in spec.shares:
        cumulative += share
        thresholds.append(float(np.quantile(scores, 1.0 - cumulative)))
    return Tiers(thresholds=thresholds, names=list(spec.names), default=spec.default)


def fit(
    ts: TrainingSet,
    spec: ModelSpec,
    *,
    trials: int = 20,
    timeout_s: float | None = None,
    seed: int = 7,
) -> FitOutcome:
    """Search hyper-parameters on the validation split, refit, calibrate and attach tiers."""
    shell = TagModel(
        name=spec.name,
        kind=spec.kind,
        booster_text="",
        features=list(ts.features),
        categories=categories_of(ts.train, ts.features),
        tiers=Tiers([], [], spec.tiers.default),
        feature_service=ts.feature_service,
        target=spec.name,
        metadata={"log_link": spec.kind == "regressor", "description": spec.description},
    )
    train, valid, x_va, y_va = _datasets(ts, shell)
    fixed = _objective_params(spec.kind)
    if spec.monotone:
        fixed["monotone_constraints"] = [spec.monotone.get(f, 0) for f in shell.features]
        fixed["monotone_constraints_method"] = "intermediate"
    metric = fixed["metric"]
    direction = "maximize" if spec.kind == "classifier" else "minimize"

    def objective(trial: optuna.Trial) -> float:
        params = fixed | _suggest(trial, spec.kind)
        booster = lgb.train(
            params,
            train,
            num_boost_round=MAX_ROUNDS,
            valid_sets=[valid],
            valid_names=["validation"],
            callbacks=[
                lgb.early_stopping(EARLY_STOPPING, verbose=False),
                LightGBMPruningCallback(trial, metric, valid_name="validation"),
            ],
        )
        trial.set_user_attr("best_iteration", int(booster.best_iteration or booster.current_iteration()))
        return float(booster.best_score["validation"][metric])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=30),
        study_name=f"{spec.name}-lightgbm",
    )
    started = time.perf_counter()
    study.optimize(
        objective, n_trials=trials, timeout=timeout_s, show_progress_bar=False, gc_after_trial=True
    )
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"no Optuna trial completed for {spec.name} within the budget")
    best = study.best_trial
    params = fixed | _suggest_fixed(best.params)
    best_iteration = int(best.user_attrs["best_iteration"])
    booster = lgb.train(params, train, num_boost_round=max(best_iteration, 1))

    model = shell
    model.booster_text = booster.model_to_string()
    raw_val = booster.predict(x_va, num_threads=1)
    if spec.kind == "classifier":
        model.calibrator = PlattCalibrator.fit(raw_val, y_va)
    model.tiers = tier_thresholds(model._finish(raw_val), spec.tiers)
    model.metadata["feature_importance_gain"] = dict(
        zip(model.features, booster.feature_importance("gain").round(3).tolist(), strict=True)
    )
    summary = {
        "n_trials": len(study.trials),
        "n_complete": len(completed),
        "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "best_value": float(best.value),
        "best_trial": best.number,
        "metric": metric,
        "direction": direction,
        "seconds": round(time.perf_counter() - started, 2),
    }
    logger.info("%s: %s", spec.name, summary)
    return FitOutcome(model, params, best_iteration, summary, study.trials_dataframe())


def _suggest_fixed(best_params: dict[str, Any]) -> dict[str, Any]:
    return {**best_params, "bagging_freq": 1}

"""Fit a LightGBM tag model: Optuna search (TPE + pruning), calibration, final refit and tiers.

1. **Search**: Optuna's TPE sampler proposes LightGBM parameters; each trial fits on ``ts.train`` and
   early-stops on ``ts.validation`` (held-out customers, see :mod:`training.splits`), unpromising trials
   are pruned. Classifiers are selected on validation AUC, regressors on validation Poisson deviance
   (a proper score for an expected value, comparable across Tweedie powers).
2. **Calibration**, on the held-out customers at the calibration snapshot
   (:attr:`~training.dataset.TrainingSet.calibration_validation`: the same season a year before the test
   snapshot, else the latest training snapshot), scored by the best trial's booster, which has never
   seen them:

   * classifiers: Platt scaling of the log-odds (:class:`portrait.model.PlattCalibrator`);
   * regressors (log link): one factor ``k`` so that the predicted total equals the actual total. It is
     folded into the booster (``log k`` added to every leaf of the first tree), so every consumer of the
     booster -- :meth:`TagModel.score`, :meth:`TagModel.explain`'s contributions -- applies it unchanged.

3. **Refit** (default): the best parameters are refitted on training *and* validation customers (every
   labelled row before the test snapshot), with the best number of rounds scaled by the row-count ratio,
   and the calibration from step 2 is applied to it. ``refit=False`` keeps the best trial's booster.
4. **Tiers**: thresholds at the quantiles of the final scores of everyone at the latest training snapshot.

Large training sets are searched on a random sample of ``search_rows`` training rows; the best parameters
are then fitted once on all training rows (early-stopped on the validation customers) before step 2.

Threads: LightGBM's OpenMP threads spin while they wait, so more threads than idle cores makes training
much *slower* on a shared machine (benchmarks/RESULTS.md, Training). :func:`training_threads` uses the
idle cores, or ``Settings.train_threads`` (``PORTRAIT_TRAIN_THREADS``). With ``deterministic`` and column-wise histograms the model does not depend
on the number of threads.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
from optuna_integration import LightGBMPruningCallback

from portrait.cpu import idle_cores
from portrait.model import BASE_COLUMN, PlattCalibrator, TagModel, Tiers
from training.dataset import TrainingSet
from training.specs import ModelSpec, TierSpec

logger = logging.getLogger(__name__)

MAX_ROUNDS = 500
"""Boosting rounds per trial at most (early stopping usually ends sooner). The refit scales the best round
count by (training + validation rows) / training rows, about 1.25 with the default validation share, so a
served model has at most about ``1.25 * MAX_ROUNDS`` trees: every tree is walked for every customer on each
``/v1/tags`` call. The learning-rate floor of :data:`LEARNING_RATES` keeps the search away from rates that
would need more rounds than the cap. Measured side by side against 1,000 rounds from a 0.02 floor
(benchmarks/RESULTS.md, Training): the same quality on the synthetic, Retail and CDNOW sets."""
LEARNING_RATES = (0.04, 0.3)
"""Optuna's learning-rate range (log scale)."""
EARLY_STOPPING = 50
SEARCH_ROWS = 200_000
"""Default cap on the training rows the hyper-parameter search fits on (a random sample beyond it)."""
MIN_CALIBRATION_ROWS = 200
"""Fewer validation rows at the calibration snapshot than this: calibrate on all validation rows instead."""
TOTAL_FACTOR_BOUNDS = (0.2, 5.0)
"""A value-total calibration factor outside these bounds is clipped (and logged): it signals a broken
fit or an unrepresentative validation sample rather than drift worth correcting."""


@dataclass
class FitOutcome:
    model: TagModel
    params: dict[str, Any]
    best_iteration: int
    study: dict[str, Any]
    trials: pd.DataFrame
    held_out: tuple[pd.DataFrame, np.ndarray] | None = None
    """The calibration rows and the searched model's scores of them (after calibration): customers the
    model choosing the parameters never saw (regressors; what an interval is calibrated on)."""


def categories_of(frame: pd.DataFrame, features: list[str]) -> dict[str, list[str]]:
    """String features and their categories (sorted) as seen in training."""
    cats = {}
    for name in features:
        if frame[name].dtype == object or isinstance(frame[name].dtype, pd.StringDtype):
            cats[name] = sorted(str(v) for v in frame[name].dropna().unique())
    return cats


def training_threads(configured: int | None = None) -> int:
    """LightGBM threads: ``configured`` (``Settings.train_threads``) when set, else the idle cores."""
    return max(1, configured) if configured else idle_cores()


def _objective_params(kind: str, threads: int) -> dict[str, Any]:
    base = {
        "verbosity": -1,
        "num_threads": threads,
        "deterministic": True,
        "force_col_wise": True,
        "seed": 7,
    }
    if kind == "classifier":
        return base | {"objective": "binary", "metric": "auc"}
    return base | {"objective": "tweedie", "metric": "poisson"}


def _suggest(trial: optuna.Trial, kind: str) -> dict[str, Any]:
    params = {
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATES, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 127, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 1000, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "bagging_freq": 1,
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
    }
    if kind == "regressor":
        params["tweedie_variance_power"] = trial.suggest_float("tweedie_variance_power", 1.05, 1.9)
    return params


def _suggest_fixed(best_params: dict[str, Any]) -> dict[str, Any]:
    return {**best_params, "bagging_freq": 1}


def _dataset(
    x: np.ndarray,
    y: np.ndarray,
    model: TagModel,
    reference: lgb.Dataset | None = None,
    init_score: np.ndarray | None = None,
) -> lgb.Dataset:
    cat_idx = [i for i, f in enumerate(model.columns) if f in model.categories]
    # feature_pre_filter off: trials change min_child_samples on the same Dataset.
    params = {"feature_pre_filter": False, "verbosity": -1}
    return lgb.Dataset(
        x,
        y,
        feature_name=model.columns,
        categorical_feature=cat_idx,
        free_raw_data=False,
        params=params,
        reference=reference,
        init_score=init_score,
    )


def _base(frame: pd.DataFrame) -> np.ndarray | None:
    """The rows' base raw scores (:data:`~portrait.model.BASE_COLUMN`: a model the trees correct), if any."""
    return frame[BASE_COLUMN].to_numpy(dtype=float) if BASE_COLUMN in frame.columns else None


def _with_base(raw: np.ndarray, base: np.ndarray | None) -> np.ndarray:
    """Tree raw scores plus the base, on the log link (a value)."""
    return np.exp(raw + (0.0 if base is None else base))


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return frame.label.to_numpy(dtype=float)


def tier_thresholds(scores: np.ndarray, spec: TierSpec) -> Tiers:
    """Thresholds at the quantiles that give each tier its share of ``scores`` (highest tier first)."""
    thresholds, cumulative = [], 0.0
    for share in spec.shares:
        cumulative += share
        thresholds.append(float(np.quantile(scores, 1.0 - cumulative)))
    return Tiers(thresholds=thresholds, names=list(spec.names), default=spec.default)


def calibration_rows(ts: TrainingSet) -> pd.DataFrame:
    """The rows calibration is fitted on: the calibration snapshot's validation rows, or all when too few."""
    recent = ts.calibration_validation
    if len(recent) >= MIN_CALIBRATION_ROWS and recent.label.nunique() > 1:
        return recent
    return ts.validation


def total_factor(y: np.ndarray, predicted: np.ndarray) -> float:
    """The factor that makes the predicted total equal the actual total, within :data:`TOTAL_FACTOR_BOUNDS`."""
    total = float(np.sum(predicted))
    if total <= 0 or not np.isfinite(total):
        return 1.0
    factor = float(np.sum(y)) / total
    low, high = TOTAL_FACTOR_BOUNDS
    if not low <= factor <= high:
        logger.warning("value-total factor %.3f clipped to [%.1f, %.1f]", factor, low, high)
    return min(max(factor, low), high)


def scale_log_link(booster: lgb.Booster, factor: float) -> lgb.Booster:
    """A copy of a log-link booster whose predictions are multiplied by ``factor``.

    Adds ``log(factor)`` to every leaf of the first tree: the raw score of every row moves by exactly
    that amount, SHAP contributions are unchanged and the expected value absorbs the shift.
    """
    scaled = lgb.Booster(model_str=booster.model_to_string())
    if factor == 1.0:
        return scaled
    shift = math.log(factor)
    leaves = scaled.dump_model(num_iteration=1)["tree_info"][0]["num_leaves"]
    for leaf in range(leaves):
        scaled.set_leaf_output(0, leaf, scaled.get_leaf_output(0, leaf) + shift)
    return lgb.Booster(model_str=scaled.model_to_string())


def fit(
    ts: TrainingSet,
    spec: ModelSpec,
    *,
    trials: int = 20,
    timeout_s: float | None = None,
    seed: int = 7,
    refit: bool = True,
    search_rows: int | None = SEARCH_ROWS,
    threads: int | None = None,
) -> FitOutcome:
    """Search hyper-parameters on the validation customers, calibrate, refit and attach tiers.

    ``search_rows``: cap on the training rows each Optuna trial fits on (``None``: all). ``threads``:
    LightGBM threads (default :func:`training_threads`).
    """
    shell = TagModel(
        name=spec.name,
        kind=spec.kind,
        booster_text="",
        features=list(ts.features),
        derived=list(ts.derived),
        categories=categories_of(pd.concat([ts.train, ts.validation]), ts.features),
        tiers=Tiers([], [], spec.tiers.default),
        feature_service=ts.feature_service,
        target=spec.name,
        metadata={"log_link": spec.kind == "regressor", "description": spec.description},
    )
    x_tr, x_va = shell.matrix(ts.train), shell.matrix(ts.validation)
    y_tr, y_va = _labels(ts.train), _labels(ts.validation)
    b_tr, b_va = _base(ts.train), _base(ts.validation)  # a base only for log-link regressors
    sampled = search_rows is not None and len(x_tr) > search_rows
    if sampled:
        sample = np.sort(np.random.default_rng(seed).choice(len(x_tr), size=search_rows, replace=False))
        train = _dataset(x_tr[sample], y_tr[sample], shell, init_score=None if b_tr is None else b_tr[sample])
    else:
        train = _dataset(x_tr, y_tr, shell, init_score=b_tr)
    valid = _dataset(x_va, y_va, shell, reference=train, init_score=b_va)
    threads = training_threads(threads)
    fixed = _objective_params(spec.kind, threads)
    if spec.monotone:
        fixed["monotone_constraints"] = [spec.monotone.get(f, 0) for f in shell.columns]
        fixed["monotone_constraints_method"] = "intermediate"
    metric = fixed["metric"]
    direction = "maximize" if spec.kind == "classifier" else "minimize"
    best_booster: dict[int, lgb.Booster] = {}

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
        value = float(booster.best_score["validation"][metric])
        completed = [t for t in trial.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        better = (lambda a, b: a > b) if direction == "maximize" else (lambda a, b: a < b)
        if not completed or better(value, trial.study.best_value):
            best_booster[trial.number] = booster
            for number in [n for n in best_booster if n != trial.number]:
                del best_booster[number]
        return value

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
    tuned = best_booster.get(best.number) or lgb.train(params, train, num_boost_round=max(best_iteration, 1))
    if sampled:
        # The search saw a sample: fit the best parameters on every training row, early-stopped again.
        full = _dataset(x_tr, y_tr, shell, init_score=b_tr)
        tuned = lgb.train(
            params,
            full,
            num_boost_round=MAX_ROUNDS,
            valid_sets=[_dataset(x_va, y_va, shell, reference=full, init_score=b_va)],
            valid_names=["validation"],
            callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)],
        )
        best_iteration = int(tuned.best_iteration or tuned.current_iteration())

    model = shell
    calibrate = calibration_rows(ts)
    raw_cal = tuned.predict(model.matrix(calibrate), num_iteration=best_iteration, num_threads=1)
    if b_tr is not None:
        raw_cal = _with_base(
            tuned.predict(
                model.matrix(calibrate), num_iteration=best_iteration, num_threads=1, raw_score=True
            ),
            _base(calibrate),
        )
    factor = 1.0
    if spec.kind == "classifier":
        model.calibrator = PlattCalibrator.fit(raw_cal, _labels(calibrate))
    else:
        factor = total_factor(_labels(calibrate), raw_cal)

    if refit:
        rows = len(ts.train) + len(ts.validation)
        rounds = max(1, round(best_iteration * rows / max(len(ts.train), 1)))
        b_all = None if b_tr is None or b_va is None else np.concatenate([b_tr, b_va])
        everything = _dataset(np.vstack([x_tr, x_va]), np.concatenate([y_tr, y_va]), shell, init_score=b_all)
        final = lgb.train(params, everything, num_boost_round=rounds)
    else:
        rounds = best_iteration
        final = lgb.Booster(model_str=tuned.model_to_string(num_iteration=best_iteration))
    if spec.kind == "regressor":
        final = scale_log_link(final, factor)
    model.booster_text = final.model_to_string()
    model._booster = None

    latest = pd.concat([ts.train, ts.validation])
    latest = latest[latest.event_timestamp == latest.event_timestamp.max()]
    latest_scores = (
        model.score(latest)
        if b_tr is None
        else _with_base(final.predict(model.matrix(latest), raw_score=True, num_threads=1), _base(latest))
    )
    model.tiers = tier_thresholds(latest_scores, spec.tiers)
    model.metadata["feature_importance_gain"] = dict(
        zip(model.columns, final.feature_importance("gain").round(3).tolist(), strict=True)
    )
    model.metadata["fit"] = {
        "refit": refit,
        "rounds": rounds,
        "calibration_rows": len(calibrate),
        **({"total_factor": round(factor, 6)} if spec.kind == "regressor" else {}),
    }
    summary = {
        "n_trials": len(study.trials),
        "n_complete": len(completed),
        "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "best_value": float(best.value),
        "best_trial": best.number,
        "metric": metric,
        "direction": direction,
        "final_rounds": rounds,
        "search_rows": min(len(x_tr), search_rows or len(x_tr)),
        "threads": threads,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if spec.kind == "regressor":
        summary["total_factor"] = factor
    logger.info("%s: %s", spec.name, summary)
    held_out = (calibrate, raw_cal * factor) if spec.kind == "regressor" else None
    return FitOutcome(model, params, best_iteration, summary, study.trials_dataframe(), held_out)

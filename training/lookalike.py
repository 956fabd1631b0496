"""Train, evaluate, log, register and (maybe) promote the lookalike model.

Steps (:func:`train_lookalike`):

1. **Population**: every customer of the latest feature snapshot on disk, with the ``lookalike_v1``
   features read through Feast ``get_historical_features`` (computed first if no snapshot exists).
2. **Evaluation cases** (:func:`make_cases`): a seed of ``s`` customers drawn from a segment, the rest
   of the segment held out; the audience asked for is as large as the held-out part, so precision and
   recall at that size are equal and perfect recall is possible. Segments are the latent ground truth
   of synthetic data when ``<raw_dir>/truth.parquet`` exists, else behavioural segments derived from the
   data (:func:`behavioural_segments`: top-decile spend, bought from category X). A seed size is used
   for a segment when it is at most ``max_seed_share`` of it (default one half: "hold half out").
   Validation and test cases are drawn with different random seeds.
3. **Tuning** (Optuna, ``trials``): representation knobs (components, whitening, indicator weight) and
   the classifier's penalty, on the validation cases, scored exactly (no index). The seed size from
   which ``"auto"`` switches to the classifier is then set from the same validation cases.
4. **Final model**: fitted with the best knobs, hnswlib index built, evaluated on the test cases next to
   the **baseline** (cosine similarity to the seed's mean vector over standardised features).
5. **MLflow**: experiment ``lookalike`` (parameters, metrics per seed size, evaluation tables, the
   artefact folder with the index), registered as ``lookalike``; the current champion is re-scored on
   the same test cases and only a strictly better candidate takes the ``champion`` alias.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import mlflow
import numpy as np
import optuna
import pandas as pd
from feast import FeatureStore
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema

from features import repo
from features import store as fs
from features.categories import DEFAULT_TOP_N, category_mix
from features.pipeline import compute_features
from features.tables import PROFILE_VIEW, snapshot_path
from portrait import catalogue
from portrait.lookalike import (
    ARTIFACT_KEY,
    ExpansionRequest,
    LookalikeError,
    LookalikeModel,
    LookalikeParams,
    Representation,
)
from portrait.registry import register
from portrait.settings import Settings
from training.labels import data_end
from training.splits import floor_day
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
from training.train import TrainOutcome

logger = logging.getLogger(__name__)

NAME = "lookalike"
PRIMARY_METRIC = catalogue.get(NAME).headline_metric
DEFAULT_SEED_SIZES: tuple[int, ...] = (100, 1_000, 10_000)
VALIDATION_SEED = 1
TEST_SEED = 2
PCA_SAMPLE = 100_000
PIP_REQUIREMENTS = ["hnswlib>=0.8", "numpy>=1.26", "pandas>=2.2", "pyarrow>=17"]


# ---- population ----------------------------------------------------------------------------------------


@dataclass
class PopulationFrame:
    """The population's ``lookalike_v1`` features at one snapshot, and its category mix (taste)."""

    frame: pd.DataFrame  # customer_id + features, sorted by customer_id
    features: list[str]  # every column the representation reads: the feature service's, then the taste
    snapshot: datetime
    feature_service: str
    taste: list[str] = field(default_factory=list)  # the category-mix columns among ``features``

    @property
    def service_features(self) -> list[str]:
        """The feature service's features (without the category mix)."""
        return [f for f in self.features if f not in set(self.taste)]

    @property
    def ids(self) -> np.ndarray:
        return self.frame["customer_id"].astype(str).to_numpy()


def latest_snapshot(settings: Settings) -> datetime:
    """The newest feature snapshot on disk; computes the 'now' snapshot (day after the data) if none."""
    snapshots = fs.snapshots_on_disk(settings)
    if snapshots:
        return max(snapshots)
    snapshot = floor_day(data_end(settings.clean_dir)) + timedelta(days=1)
    logger.info("no feature snapshot on disk: computing %s", snapshot.date().isoformat())
    compute_features(settings.clean_dir, settings.features_dir, [snapshot])
    return snapshot


def load_population(
    settings: Settings,
    *,
    snapshot: datetime | None = None,
    store: FeatureStore | None = None,
    taste: int = DEFAULT_TOP_N,
) -> PopulationFrame:
    """Every customer of the snapshot with the ``lookalike_v1`` features, from Feast (point in time), and
    the category mix of the ``taste`` top categories (``features.categories``; 0: none) over the year
    before the snapshot, so that lookalikes share what the seed buys, not only how much."""
    snapshot = snapshot or latest_snapshot(settings)
    path = snapshot_path(settings.features_dir, PROFILE_VIEW, snapshot)
    ids = pd.read_parquet(path, columns=["customer_id"])["customer_id"].astype(str)
    if ids.empty:
        raise ValueError(f"no customers in the feature snapshot {snapshot.isoformat()}")
    store = repo.ensure_applied(settings, store)
    entity_df = pd.DataFrame({"customer_id": ids.to_numpy(), "event_timestamp": pd.Timestamp(snapshot)})
    frame = fs.historical_features(settings, NAME, entity_df, store)
    features = fs.feature_names(store, NAME)
    frame = frame[["customer_id", *features]].copy()
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame = frame.sort_values("customer_id", kind="stable").reset_index(drop=True)
    mix = category_mix(settings.clean_dir, snapshot, frame["customer_id"].to_numpy(), top_n=taste)
    taste_columns = [c for c in mix.columns if c not in features]
    if taste_columns:
        frame = pd.concat([frame, mix.frame[taste_columns].reset_index(drop=True)], axis=1)
    logger.info(
        "lookalike population: %d customers x %d features + %d category shares at %s",
        len(frame), len(features), len(taste_columns), snapshot,
    )  # fmt: skip
    return PopulationFrame(
        frame, [*features, *taste_columns], snapshot, catalogue.get(NAME).feature_service, taste_columns
    )


# ---- representation and model --------------------------------------------------------------------------


def fit_representation(
    x: np.ndarray, features: Sequence[str], params: LookalikeParams, *, sample: int = PCA_SAMPLE
) -> Representation:
    """Fit log1p + robust scaling + missing indicators + PCA (partial whitening) on a feature matrix."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    observed = ~np.isnan(x)
    with np.errstate(invalid="ignore"):
        col_min = np.where(observed.any(axis=0), np.nanmin(np.where(observed, x, np.inf), axis=0), 0.0)
    log_mask = col_min >= 0.0
    logged = x.copy()
    logged[:, log_mask] = np.log1p(np.maximum(logged[:, log_mask], 0.0))
    center = np.zeros(d)
    scale = np.ones(d)
    for j in range(d):
        col = logged[observed[:, j], j]
        if len(col) == 0:
            continue
        q1, med, q3 = np.percentile(col, [25, 50, 75])
        center[j] = med
        iqr = (q3 - q1) / 1.349
        std = float(col.std())
        scale[j] = iqr if iqr > 1e-9 else (std if std > 1e-9 else 1.0)
    # One indicator per distinct missingness pattern (e.g. "never bought" covers several columns).
    indicator_columns: list[int] = []
    seen: set[bytes] = set()
    for j in range(d):
        miss = ~observed[:, j]
        if miss.any() and not miss.all():
            key = np.packbits(miss).tobytes()
            if key not in seen:
                seen.add(key)
                indicator_columns.append(j)
    ind = (~observed[:, indicator_columns]).astype(np.float64)
    ind_mean = ind.mean(axis=0) if indicator_columns else np.zeros(0)
    ind_scale = ind.std(axis=0) if indicator_columns else np.zeros(0)
    if indicator_columns:
        ind_scale[ind_scale < 1e-9] = 1.0
    shell = Representation(
        features=list(features),
        log_mask=log_mask,
        center=center,
        scale=scale,
        clip=params.clip,
        indicator_columns=indicator_columns,
        indicator_mean=ind_mean,
        indicator_scale=ind_scale,
        indicator_weight=params.indicator_weight,
        pca_mean=np.zeros(0),
        components=np.zeros((0, 0)),
        component_scale=np.zeros(0),
    )
    rng = np.random.default_rng(params.random_seed)
    rows = np.sort(rng.choice(n, size=sample, replace=False)) if n > sample else np.arange(n)
    z = shell.scaled(x[rows])
    mean = z.mean(axis=0)
    _, sigma, vt = np.linalg.svd(z - mean, full_matrices=False)
    sigma = sigma / np.sqrt(max(len(rows) - 1, 1))
    # Components without variance (constant features, e.g. no events at all) carry no information and
    # whitening would only amplify rounding noise: keep the informative ones.
    floor = max(float(sigma[0]) * 1e-6, 1e-12)
    informative = int((sigma > floor).sum())
    k = int(max(1, min(params.n_components, informative, len(rows) - 1)))
    # Deterministic signs: the largest loading of each component is positive.
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    vt = vt * signs[:, None]
    return replace(
        shell,
        pca_mean=mean,
        components=vt[:k],
        component_scale=np.maximum(sigma[:k], floor) ** params.whiten,
    )


def build_lookalike(
    population: PopulationFrame,
    params: LookalikeParams,
    *,
    build_index: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> LookalikeModel:
    """Fit the representation on the population and wrap it (with its index) as a :class:`LookalikeModel`."""
    x = population_matrix(population)
    representation = fit_representation(x, population.features, params)
    params = replace(params, n_components=representation.dim)  # the effective number, after capping
    vectors = representation.transform(x)
    meta = {
        "snapshot": population.snapshot.isoformat(),
        "feature_service": population.feature_service,
        "features": population.features,
        "taste": population.taste,
        **dict(metadata or {}),
    }
    return LookalikeModel.from_vectors(
        representation, population.ids, vectors, params, build_index=build_index, metadata=meta
    )


def population_matrix(population: PopulationFrame, features: Sequence[str] | None = None) -> np.ndarray:
    """The population's features (default: all of them) as a float matrix (missing values as NaN), in order."""
    frame = population.frame
    return np.column_stack(
        [
            pd.to_numeric(frame[f], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            for f in (population.features if features is None else features)
        ]
    )


def build_baseline(population: PopulationFrame, *, taste: bool = False) -> LookalikeModel:
    """The baseline: cosine similarity to the seed's mean vector over standardised features.

    Expressed as a :class:`LookalikeModel` whose representation is plain z-scoring (missing -> mean, no
    log, no clipping, identity projection) and which always scores by similarity, exactly, so it shares
    the request handling of the real model. Over the feature service's features (the centroid baseline the
    model has always been measured against); ``taste`` adds the category mix.
    """
    features = population.features if taste else population.service_features
    x = population_matrix(population, features)
    d = x.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns (e.g. no events at all)
        mean = np.nan_to_num(np.nanmean(x, axis=0))
        std = np.nan_to_num(np.nanstd(x, axis=0))
    std[std < 1e-12] = 1.0
    representation = Representation(
        features=list(features),
        log_mask=np.zeros(d, dtype=bool),
        center=mean,
        scale=std,
        clip=float("inf"),
        indicator_columns=[],
        indicator_mean=np.zeros(0),
        indicator_scale=np.zeros(0),
        indicator_weight=0.0,
        pca_mean=np.zeros(d),
        components=np.eye(d),
        component_scale=np.ones(d),
    )
    params = LookalikeParams(n_components=d, classifier_min_seed=2**62)
    return LookalikeModel.from_vectors(
        representation, population.ids, representation.transform(x), params, build_index=False,
        metadata={"baseline": "cosine to the seed mean over standardised features"},
    )  # fmt: skip


# ---- segments and evaluation cases ---------------------------------------------------------------------


def truth_segments(raw_dir: Path, population_ids: np.ndarray) -> dict[str, np.ndarray] | None:
    """Latent segments of synthetic data (``truth.parquet``), restricted to the population; else None."""
    path = raw_dir / "truth.parquet"
    if not path.exists():
        return None
    truth = pd.read_parquet(path)
    if "segment" not in truth.columns:
        return None
    label = truth["segment_name"] if "segment_name" in truth.columns else truth["segment"].astype(str)
    frame = pd.DataFrame({"customer_id": truth["customer_id"].astype(str), "segment": label.astype(str)})
    frame = frame[frame.customer_id.isin(set(population_ids.tolist()))]
    return {
        str(name): np.sort(group.customer_id.to_numpy().astype(str))
        for name, group in frame.groupby("segment", sort=True)
    }


def behavioural_segments(
    population: PopulationFrame,
    clean_dir: Path,
    *,
    categories: int = 3,
    min_share: float = 0.02,
    max_share: float = 0.4,
    spend_share: float = 0.25,
) -> dict[str, np.ndarray]:
    """Segments derivable from the data when no ground truth exists (all over the year before the snapshot).

    * ``top_decile_spend_365d``: the 10% who spent most;
    * ``bought_<category>``: customers with a purchase line in the category;
    * ``spend_share_<category>``: customers who spent at least ``spend_share`` of their purchase value in
      the category (for catalogues where every category is bought by nearly everyone, as in UCI Online
      Retail, "bought from X" is no audience but "buys mostly X" is).

    Of each category kind, the ``categories`` largest segments holding ``min_share``..``max_share`` of the
    population are kept; the catch-all category ``other`` is left out.
    """
    ids = population.ids
    n = len(ids)
    segments: dict[str, np.ndarray] = {}
    if "spend_365d" in population.frame.columns:
        spend = pd.to_numeric(population.frame["spend_365d"], errors="coerce").fillna(0.0).to_numpy()
        buyers = spend > 0
        if buyers.sum() >= 10:
            cut = np.quantile(spend, 0.9)
            segments["top_decile_spend_365d"] = np.sort(ids[(spend >= cut) & buyers])
    path = clean_dir / "transactions.parquet"
    if not path.exists():
        return segments
    snapshot = pd.Timestamp(population.snapshot).to_pydatetime()
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        by_category = con.execute(
            "SELECT customer_id, category, sum(amount) AS value FROM read_parquet(?) "
            "WHERE NOT is_return AND category IS NOT NULL AND ts < ? AND ts >= ? - INTERVAL 365 DAY "
            "GROUP BY 1, 2",
            [str(path), snapshot, snapshot],
        ).df()
    finally:
        con.close()
    by_category["customer_id"] = by_category["customer_id"].astype(str)
    by_category = by_category[
        by_category.customer_id.isin(set(ids.tolist())) & (by_category.category != "other")
    ]
    total = by_category.groupby("customer_id").value.transform("sum")
    by_category["share"] = np.where(total > 0, by_category.value / total.where(total > 0, 1.0), 0.0)
    kinds = {
        "bought": by_category,
        "spend_share": by_category[by_category.share >= spend_share],
    }
    for kind, rows in kinds.items():
        counts = rows.groupby("category").customer_id.nunique().sort_values(ascending=False, kind="stable")
        eligible = [c for c, k in counts.items() if min_share * n <= k <= max_share * n]
        for category in sorted(eligible[:categories]):
            members = rows.loc[rows.category == category, "customer_id"].unique()
            segments[f"{kind}_{category}"] = np.sort(members)
    return segments


@dataclass(frozen=True)
class EvalCase:
    """One evaluation: a seed drawn from a segment; the rest of the segment is what should come back."""

    segment: str
    seed_size: int
    seed_ids: list[str]
    target_ids: list[str]

    @property
    def audience_size(self) -> int:
        return len(self.target_ids)


MIN_SEED_SIZE = 10


def adapt_seed_sizes(
    segments: Mapping[str, np.ndarray], seed_sizes: Sequence[int], max_seed_share: float = 0.5
) -> list[int]:
    """``seed_sizes`` when some segment can hold one of them, else sizes scaled to the largest segment
    (a tenth, half and all of the seed it can hold, at least :data:`MIN_SEED_SIZE`), so a small population
    is still evaluated; unchanged (and then refused by the caller) when even that does not fit."""
    largest = max((len(m) for m in segments.values()), default=0)
    fits = [s for s in seed_sizes if 1 <= s <= max_seed_share * largest and largest - s >= 1]
    if fits:
        return list(seed_sizes)
    most = int(max_seed_share * largest)
    adapted = sorted({s for s in (most // 10, most // 2, most) if s >= MIN_SEED_SIZE and largest - s >= 1})
    if adapted:
        logger.warning(
            "the population is too small for seed sizes %s: evaluating seeds of %s instead",
            list(seed_sizes),
            adapted,
        )
        return adapted
    return list(seed_sizes)


def make_cases(
    segments: Mapping[str, np.ndarray],
    seed_sizes: Sequence[int],
    *,
    random_seed: int,
    max_seed_share: float = 0.5,
) -> list[EvalCase]:
    """A seed of each size from each segment large enough (seed <= ``max_seed_share`` of the segment)."""
    cases = []
    for i, (name, members) in enumerate(sorted(segments.items())):
        members = np.sort(np.asarray(members).astype(str))
        for size in sorted(set(int(s) for s in seed_sizes)):
            if size < 1 or size > max_seed_share * len(members) or len(members) - size < 1:
                continue
            rng = np.random.default_rng([random_seed, i, size])
            chosen = np.zeros(len(members), dtype=bool)
            chosen[rng.choice(len(members), size=size, replace=False)] = True
            cases.append(EvalCase(name, size, members[chosen].tolist(), members[~chosen].tolist()))
    return cases


def evaluate_cases(
    model: LookalikeModel, cases: Sequence[EvalCase], population_size: int, *, method: str = "auto"
) -> pd.DataFrame:
    """One row per case: method used, precision and recall at the audience size, lift over random.

    A case the model cannot serve (e.g. a champion that knows none of today's seed ids) scores 0.
    """
    rows = []
    for case in cases:
        target = set(case.target_ids)
        base_rate = len(target) / max(population_size - case.seed_size, 1)
        started = time.perf_counter()
        try:
            result = model.expand(
                ExpansionRequest(
                    seed_ids=case.seed_ids,
                    size=case.audience_size,
                    method=method,  # type: ignore[arg-type]
                )
            )
            hits = sum(1 for c in result.customer_ids if c in target)
            used, returned, error = result.method, result.returned, ""
        except LookalikeError as exc:
            hits, used, returned, error = 0, "", 0, exc.code
        precision = hits / max(case.audience_size, 1)
        rows.append(
            {
                "segment": case.segment,
                "seed_size": case.seed_size,
                "audience_size": case.audience_size,
                "method": used,
                "returned": returned,
                "hits": hits,
                "precision": precision,
                "recall": hits / max(len(target), 1),
                "base_rate": base_rate,
                "lift": precision / base_rate if base_rate > 0 else float("nan"),
                "seconds": time.perf_counter() - started,
                "error": error,
            }
        )
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """Mean metrics per seed size (``..._s100``) and overall (each evaluated seed size weighs the same)."""
    if table.empty:
        return {}
    out: dict[str, float] = {}
    per_size = table.groupby("seed_size")[["precision", "recall", "lift"]].mean()
    for size, row in per_size.iterrows():
        out[f"{prefix}recall_at_size_s{size}"] = float(row.recall)
        out[f"{prefix}precision_s{size}"] = float(row.precision)
        out[f"{prefix}lift_s{size}"] = float(row.lift)
    out[f"{prefix}{PRIMARY_METRIC}"] = float(per_size.recall.mean())
    out[f"{prefix}precision"] = float(per_size.precision.mean())
    out[f"{prefix}lift"] = float(per_size.lift.mean())
    return out


# ---- tuning --------------------------------------------------------------------------------------------


@dataclass
class TuneOutcome:
    """What tuning found: the best knobs, their validation score and the trial log."""

    params: LookalikeParams
    best_value: float
    trials: pd.DataFrame
    method_table: pd.DataFrame  # validation recall per seed size and method, with the best params


def _validation_score(
    population: PopulationFrame, params: LookalikeParams, cases: Sequence[EvalCase]
) -> tuple[float, pd.DataFrame]:
    """Mean over seed sizes of the better method's mean recall, and the per-size, per-method table."""
    model = build_lookalike(population, params, build_index=False)
    n = len(population.frame)
    tables = [
        evaluate_cases(model, cases, n, method=m).assign(scorer=m) for m in ("similarity", "classifier")
    ]
    table = pd.concat(tables, ignore_index=True)
    by = table.groupby(["seed_size", "scorer"]).recall.mean().unstack("scorer")
    return float(by.max(axis=1).mean()), by


def auto_threshold(method_table: pd.DataFrame, default: int) -> int:
    """The smallest validated seed size from which the classifier is at least as good at every larger size."""
    if method_table.empty:
        return default
    sizes = sorted(int(s) for s in method_table.index)
    better = {s: method_table.loc[s, "classifier"] >= method_table.loc[s, "similarity"] for s in sizes}
    threshold = None
    for s in reversed(sizes):
        if not better[s]:
            break
        threshold = s
    if threshold is None:
        # The classifier lost at the largest size tried: keep it for seeds larger than anything validated.
        return max(default, sizes[-1] + 1)
    return threshold


def tune(
    population: PopulationFrame,
    cases: Sequence[EvalCase],
    *,
    trials: int,
    base: LookalikeParams | None = None,
    timeout_s: float | None = None,
) -> TuneOutcome:
    """Optuna (TPE, fixed seed) over the representation knobs and the classifier penalty.

    Trial 0 is always the defaults, so tuning never ends worse than them on validation.
    """
    base = base or LookalikeParams()
    # Width of the PCA input: the features plus at most one missing-value indicator per partly missing one.
    observed = ~np.isnan(population_matrix(population))
    d = len(population.features) + int((observed.any(axis=0) & ~observed.all(axis=0)).sum())
    top = max(8, min(64, d))

    def params_of(trial: optuna.Trial) -> LookalikeParams:
        return replace(
            base,
            n_components=trial.suggest_int("n_components", 8, top),
            whiten=trial.suggest_float("whiten", 0.5, 1.0),
            indicator_weight=trial.suggest_float("indicator_weight", 0.25, 2.0, log=True),
            l2=trial.suggest_float("l2", 0.01, 30.0, log=True),
        )

    def objective(trial: optuna.Trial) -> float:
        value, _ = _validation_score(population, params_of(trial), cases)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=base.random_seed)
    )
    study.enqueue_trial(
        {
            "n_components": min(base.n_components, top),
            "whiten": base.whiten,
            "indicator_weight": base.indicator_weight,
            "l2": base.l2,
        }
    )
    study.optimize(objective, n_trials=max(1, trials), timeout=timeout_s)
    best = params_of(optuna.trial.FixedTrial(study.best_params))
    value, table = _validation_score(population, best, cases)
    best = replace(best, classifier_min_seed=auto_threshold(table, base.classifier_min_seed))
    frame = study.trials_dataframe(attrs=("number", "value", "params", "state", "duration"))
    frame["duration"] = frame["duration"].dt.total_seconds()
    return TuneOutcome(best, value, frame, table)


# ---- training ------------------------------------------------------------------------------------------


def evaluation_segments(settings: Settings, population: PopulationFrame) -> tuple[str, dict[str, np.ndarray]]:
    """Ground-truth segments when the data is synthetic, else behavioural ones."""
    truth = truth_segments(settings.raw_dir, population.ids)
    if truth:
        return "truth", truth
    return "behavioural", behavioural_segments(population, settings.clean_dir)


def train_lookalike(
    settings: Settings,
    *,
    trials: int = 20,
    seed_sizes: Sequence[int] = DEFAULT_SEED_SIZES,
    timeout_s: float | None = None,
    params: LookalikeParams | None = None,
    max_seed_share: float = 0.5,
    population: PopulationFrame | None = None,
) -> TrainOutcome:
    """The whole lookalike training step; returns what was registered and whether it was promoted."""
    started = time.perf_counter()
    client = configure(settings)
    population = population or load_population(settings)
    n = len(population.frame)
    kind, segments = evaluation_segments(settings, population)
    seed_sizes = adapt_seed_sizes(segments, seed_sizes, max_seed_share)
    val_cases = make_cases(segments, seed_sizes, random_seed=VALIDATION_SEED, max_seed_share=max_seed_share)
    test_cases = make_cases(segments, seed_sizes, random_seed=TEST_SEED, max_seed_share=max_seed_share)
    if not test_cases:
        sizes = {k: len(v) for k, v in segments.items()}
        raise ValueError(
            f"no evaluation case: no {kind} segment is large enough for seed sizes {list(seed_sizes)} "
            f"(segments {sizes}, seed at most {max_seed_share:.0%} of a segment)"
        )
    exp = experiment_id(client, settings, NAME)
    with mlflow.start_run(experiment_id=exp, run_name=f"{NAME}-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        mlflow.set_tags(
            {"model": NAME, "feature_service": population.feature_service, "evaluation": kind, **owner_tags()}
        )
        mlflow.log_params(
            {
                "snapshot": population.snapshot.isoformat(),
                "population": n,
                "n_features": len(population.features),
                "n_taste": len(population.taste),
                "feature_service": population.feature_service,
                "trials": trials,
                "timeout_s": timeout_s,
                "seed_sizes": ",".join(str(s) for s in seed_sizes),
                "max_seed_share": max_seed_share,
                "evaluation": kind,
                "segments": len(segments),
                "cases_validation": len(val_cases),
                "cases_test": len(test_cases),
            }
        )
        tuned = tune(population, val_cases, trials=trials, base=params, timeout_s=timeout_s)
        model = build_lookalike(population, tuned.params, metadata={"evaluation": kind})
        mlflow.log_params({f"la_{k}": v for k, v in model.params.as_dict().items()})
        baseline = build_baseline(population)
        test = evaluate_cases(model, test_cases, n)
        test_base = evaluate_cases(baseline, test_cases, n)
        val = evaluate_cases(model, val_cases, n)
        ours, base = summarise(test, "test_"), summarise(test_base, "test_baseline_")
        metrics = ours | base | summarise(val, "val_")
        metrics[PRIMARY_METRIC] = ours[f"test_{PRIMARY_METRIC}"]
        metrics["test_recall_gain_over_baseline"] = (
            ours[f"test_{PRIMARY_METRIC}"] - base[f"test_baseline_{PRIMARY_METRIC}"]
        )
        metrics["optuna_best_value"] = tuned.best_value
        metrics["expand_seconds_mean"] = float(test.seconds.mean())
        mlflow.log_metrics(metrics)
        model.metadata["metrics"] = {k: v for k, v in ours.items()}
        info = _log_model(model, test, test_base, val, tuned, population, kind, segments)
        version = register(
            info.model_uri, NAME, tags={"run_id": run.info.run_id, "status": "incomplete"}
        ).version
        with registration(client, NAME, version):  # a failure from here on deletes the version
            decision = _challenge(client, test_cases, n, metrics[PRIMARY_METRIC])
            mlflow.set_tags({"promotion": decision.reason, "registered_version": version})
            client.set_model_version_tag(NAME, version, "status", "ready")
            apply_decision(client, NAME, version, decision)
    seconds = time.perf_counter() - started
    logger.info("%s v%s: %s (%.1fs)", NAME, version, decision.reason, seconds)
    headline = {f"test_{PRIMARY_METRIC}": metrics[f"test_{PRIMARY_METRIC}"]}
    sizes = {"population": n, "segments": len(segments), "cases_validation": len(val_cases),
             "cases_test": len(test_cases)}  # fmt: skip
    return TrainOutcome(NAME, str(version), run.info.run_id, headline | metrics, decision, seconds, sizes)


def _challenge(client: mlflow.MlflowClient, cases: Sequence[EvalCase], n: int, candidate: float) -> Decision:
    """Re-score the current champion on the candidate's test cases and decide."""
    current = champion(client, NAME)
    if current is None:
        return decide(PRIMARY_METRIC, candidate, None, None)
    try:
        champ = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").unwrap_python_model()
        champ_score = summarise(evaluate_cases(champ, cases, n))[PRIMARY_METRIC]
    except (KeyError, ValueError, AttributeError, OSError, RuntimeError) as exc:
        logger.warning("champion v%s of %s cannot be scored on this data: %s", current.version, NAME, exc)
        champ_score = None
    return decide(PRIMARY_METRIC, candidate, champ_score, current.version)


def _log_model(
    model: LookalikeModel,
    test: pd.DataFrame,
    test_base: pd.DataFrame,
    val: pd.DataFrame,
    tuned: TuneOutcome,
    population: PopulationFrame,
    kind: str,
    segments: Mapping[str, np.ndarray],
) -> Any:
    """Log evaluation tables, lineage and the pyfunc model (with its artefact folder and index)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        side = test.merge(
            test_base[["segment", "seed_size", "precision", "recall", "lift"]],
            on=["segment", "seed_size"],
            suffixes=("", "_baseline"),
        )
        side.to_csv(out / "evaluation_test.csv", index=False)
        val.to_csv(out / "evaluation_validation.csv", index=False)
        tuned.trials.to_csv(out / "optuna_trials.csv", index=False)
        tuned.method_table.to_csv(out / "validation_recall_by_method.csv")
        lineage = {
            "feature_service": population.feature_service,
            "features": population.features,
            "taste": population.taste,
            "snapshot": population.snapshot.isoformat(),
            "population": len(population.frame),
            "evaluation": kind,
            "segments": {k: len(v) for k, v in segments.items()},
            "params": tuned.params.as_dict(),
        }
        (out / "lineage.json").write_text(json.dumps(lineage, indent=2, default=str))
        mlflow.log_artifacts(str(out))
        folder = model.save(out / "artefact")
        seed = model.customer_ids[: min(5, model.population_size)].tolist()
        example = pd.DataFrame({"customer_id": seed, "exclude": [False] * len(seed)})
        params = {"size": 10, "fraction": 0.0, "exclude_seed": True, "min_score": -1.0, "method": "auto"}
        sample_out = model.predict(
            None, example, params | {"size": min(10, max(model.population_size - 5, 1))}
        )
        with warnings.catch_warnings():
            # ``rank`` is an integer column that is never missing: MLflow's hint about it does not apply.
            warnings.filterwarnings("ignore", message=".*integer column.*", category=UserWarning)
            inferred = infer_signature(example, sample_out, params=params)
        # The seed comes as ``customer_id``; ``exclude`` (optional) marks rows that are exclusions instead.
        inputs = Schema([ColSpec("string", "customer_id"), ColSpec("boolean", "exclude", required=False)])
        signature = ModelSignature(inputs=inputs, outputs=inferred.outputs, params=inferred.params)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            artifacts={ARTIFACT_KEY: str(folder)},
            signature=signature,
            input_example=(example, params),
            pip_requirements=PIP_REQUIREMENTS,
            metadata={"feature_service": population.feature_service, "features": population.features},
        )
    mlflow.log_dict({"features": population.features}, "feature_list.json")
    return info


__all__ = [
    "DEFAULT_SEED_SIZES",
    "EvalCase",
    "PopulationFrame",
    "TuneOutcome",
    "auto_threshold",
    "behavioural_segments",
    "build_baseline",
    "build_lookalike",
    "evaluate_cases",
    "fit_representation",
    "load_population",
    "make_cases",
    "summarise",
    "train_lookalike",
    "truth_segments",
    "tune",
]

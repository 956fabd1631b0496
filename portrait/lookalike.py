"""Lookalike audiences: the served artefact that expands a seed audience into the customers most like it.

An ad team hands over a seed (customer ids) and asks for ``size`` customers -- or a ``fraction`` of the
population -- who resemble the seed and are not in it. :class:`LookalikeModel` carries everything it needs:

* the fitted :class:`Representation` (log1p of non-negative features, robust scaling, missing-value
  indicators, PCA with partial whitening) that turns the ``lookalike_v1`` features into embeddings in
  which the cosine means "behaves alike";
* the population it was trained on: customer ids (sorted, so the position of a customer is also its
  tie-break order), their embedding vectors, and an hnswlib index over them.

Two ways to score, chosen by :attr:`ExpansionRequest.method` (``"auto"`` picks by seed size):

* ``similarity`` (small seeds): cosine similarity to the seed's centroid. Candidates come from the
  hnswlib index when the audience is small next to the population; otherwise (or without an index) every
  vector is scored exactly, which is as fast for large audiences.
* ``classifier`` (large seeds, default >= 1,000 known ids): a positive-unlabelled logistic regression on the
  embedding and its squares, trained on the fly with the seed as positives and a fixed-seed sample of the
  rest as unlabelled negatives, then applied to every vector (vectorised, exact).

Results are deterministic for the same model and request: fixed random seeds, scores rounded to 1e-6
and ties broken by ``customer_id``. Serving imports only this module (never ``training/``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from portrait.cpu import available_cores
from portrait.files import atomic_path

logger = logging.getLogger(__name__)

Method = Literal["auto", "similarity", "classifier"]
METHODS: tuple[str, ...] = ("auto", "similarity", "classifier")
ARTIFACT_KEY = "lookalike"
MIN_RECOMMENDED_SEED = 100
SCORE_DECIMALS = 6
_CHUNK = 262_144
_SCORE_CHUNK = 16_384  # rows per scoring step: small enough to stay in the CPU cache
_BLAS: dict[str, Any] = {}  # the threadpoolctl controller, created on first use


class LookalikeError(ValueError):
    """A lookalike request that cannot be served; ``code`` names the problem for API error mapping."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---- request and result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpansionRequest:
    """What an ad team asks for: the customers most like ``seed_ids``.

    Give exactly one of ``size`` (number of customers) or ``fraction`` (share of the model's population,
    in ``(0, 1]``; Meta-style audiences are 1-10%). ``min_score`` drops customers scoring below it
    (similarity: cosine in [-1, 1]; classifier: a score in [0, 1]), so fewer than ``size`` may come back.
    """

    seed_ids: Sequence[str]
    size: int | None = None
    fraction: float | None = None
    exclude_seed: bool = True
    exclude_ids: Sequence[str] = ()
    min_score: float | None = None
    method: Method = "auto"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ExpansionRequest:
        """Build a request from a dict (e.g. a parsed JSON body); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(values) - known)
        if extra:
            raise LookalikeError("bad_request", f"unknown request fields: {', '.join(extra)}")
        return cls(**dict(values))


@dataclass(frozen=True)
class ExpansionResult:
    """A ranked audience (best first) and how it was made."""

    customer_ids: list[str]
    scores: list[float]
    method: str
    requested: int
    population: int
    seed_size: int
    seed_known: int
    unknown_seed_ids: list[str]
    excluded: int
    available: int
    below_min_score: int = 0
    used_index: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def returned(self) -> int:
        """Number of customers in the audience (at most ``requested``)."""
        return len(self.customer_ids)

    @property
    def audience(self) -> list[tuple[str, float]]:
        """``(customer_id, score)`` pairs, best first."""
        return list(zip(self.customer_ids, self.scores, strict=True))

    @property
    def counts(self) -> dict[str, int]:
        """The request's bookkeeping as plain counts (for API responses and logs)."""
        return {
            "requested": self.requested,
            "returned": self.returned,
            "population": self.population,
            "seed": self.seed_size,
            "seed_known": self.seed_known,
            "seed_unknown": len(self.unknown_seed_ids),
            "excluded": self.excluded,
            "available": self.available,
            "below_min_score": self.below_min_score,
        }

    def to_frame(self) -> pd.DataFrame:
        """``customer_id``, ``score``, ``rank`` (1 = most alike)."""
        return pd.DataFrame(
            {
                "customer_id": pd.Series(self.customer_ids, dtype=object),
                "score": np.asarray(self.scores, dtype=np.float64),
                "rank": np.arange(1, self.returned + 1, dtype=np.int64),
            }
        )


# ---- planning -------------------------------------------------------------------------------------------

PRESETS: dict[str, float] = {"narrow": 0.025, "balanced": 0.05, "broad": 0.10}
"""Lookalike sizes as shares of the population: narrow (closest), balanced, broad (most reach)."""
MAX_SEED_SHARE = 0.5
PLAN_FOLDS = 5
PLAN_START_SHARE = 0.05
PLAN_WINDOW_SHARE = 0.1  # the top window of the class-prior estimate holds at least this share of members
PLAN_SPLITS = 16  # random halvings of the held-out seed members averaged in the class-prior estimate
PLAN_BOOTSTRAP = 40  # bootstrap replicates of the held-out members behind the precision intervals
PLAN_INTERVAL = 0.9  # coverage of the precision intervals
PLAN_WIDE = 0.25  # a preset's interval wider than this (a quarter of the audience) is reported as uncertain
PlanPrior = Literal["crossfit", "top"]
PLAN_ASSUMPTION = (
    "expected precision assumes the customers most like the seed are of its kind; where customers of "
    "another kind look the same (overlapping segments) the realised precision is lower, which the seed "
    "alone cannot show"
)
CURVE_FRACTIONS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)


@dataclass(frozen=True)
class ReachPoint:
    """One audience size and what to expect of it."""

    size: int
    fraction: float
    expected_precision: float  # share of the audience that is like the seed
    expected_recall: float  # share of all seed-like customers (outside the seed) it reaches
    expected_similar: float  # precision x size
    precision_low: float = 0.0  # the PLAN_INTERVAL bootstrap interval of expected_precision
    precision_high: float = 1.0


@dataclass(frozen=True)
class ReachCurve:
    """A lookalike plan: the reach curve of a seed and the three presets (see :meth:`LookalikeModel.reach_curve`)."""

    seed_size: int
    seed_known: int
    unknown_seed_ids: list[str]
    population: int
    candidates: int
    estimated_similar: float  # seed-like customers among the candidates
    label_frequency: float  # c: the share of seed-like customers that are in the seed
    folds: int
    points: list[ReachPoint]
    presets: dict[str, ReachPoint]
    warnings: list[str] = field(default_factory=list)
    method: str = "classifier"
    similar_low: float = 0.0  # the PLAN_INTERVAL bootstrap interval of estimated_similar
    similar_high: float = 0.0
    prior: str = "crossfit"  # the class-prior estimator (see LookalikeModel.reach_curve)
    note: str = PLAN_ASSUMPTION


# ---- the representation ---------------------------------------------------------------------------------


@dataclass
class Representation:
    """Features -> embedding: log1p, robust scaling, clipping, missing indicators, PCA (partial whitening).

    All parameters are plain arrays, so transforming needs numpy only. Fitted by
    ``training.lookalike.fit_representation``.
    """

    features: list[str]
    log_mask: np.ndarray  # (d,) bool: log1p applied (non-negative features)
    center: np.ndarray  # (d,) median after log
    scale: np.ndarray  # (d,) robust scale after log
    clip: float
    indicator_columns: list[int]  # feature positions whose missingness is an extra indicator column
    indicator_mean: np.ndarray
    indicator_scale: np.ndarray
    indicator_weight: float
    pca_mean: np.ndarray  # (d_in,)
    components: np.ndarray  # (k, d_in)
    component_scale: np.ndarray  # (k,) sigma ** whiten

    @property
    def dim(self) -> int:
        """Number of embedding dimensions."""
        return int(self.components.shape[0])

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The features of ``frame`` as a float matrix in training order (missing values stay NaN)."""
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise KeyError(f"lookalike: missing feature columns {missing}")
        return np.column_stack(
            [
                pd.to_numeric(frame[f], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                for f in self.features
            ]
        )

    def scaled(self, x: np.ndarray) -> np.ndarray:
        """The scaled input of the PCA (before centring): scaled features then weighted indicators."""
        x = np.array(x, dtype=np.float64, copy=True)
        missing = np.isnan(x)
        logged = x[:, self.log_mask]
        x[:, self.log_mask] = np.log1p(np.maximum(logged, 0.0))
        z = (x - self.center) / self.scale
        z[missing] = 0.0
        np.clip(z, -self.clip, self.clip, out=z)
        if not self.indicator_columns:
            return z
        ind = (
            missing[:, self.indicator_columns].astype(np.float64) - self.indicator_mean
        ) / self.indicator_scale
        return np.hstack([z, self.indicator_weight * ind])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Embedding vectors (float32) of a feature matrix."""
        out = np.empty((len(x), self.dim), dtype=np.float32)
        for lo in range(0, len(x), _CHUNK):
            part = self.scaled(x[lo : lo + _CHUNK]) - self.pca_mean
            out[lo : lo + _CHUNK] = (part @ self.components.T) / self.component_scale
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays, for ``numpy.savez``."""
        return {
            "log_mask": self.log_mask,
            "center": self.center,
            "scale": self.scale,
            "indicator_columns": np.asarray(self.indicator_columns, dtype=np.int64),
            "indicator_mean": self.indicator_mean,
            "indicator_scale": self.indicator_scale,
            "pca_mean": self.pca_mean,
            "components": self.components,
            "component_scale": self.component_scale,
        }

    @classmethod
    def from_arrays(
        cls, features: list[str], clip: float, indicator_weight: float, arrays: Mapping[str, np.ndarray]
    ) -> Representation:
        """Rebuild from :meth:`to_arrays` output and the scalar settings."""
        return cls(
            features=list(features),
            log_mask=np.asarray(arrays["log_mask"], dtype=bool),
            center=np.asarray(arrays["center"], dtype=np.float64),
            scale=np.asarray(arrays["scale"], dtype=np.float64),
            clip=float(clip),
            indicator_columns=[int(i) for i in arrays["indicator_columns"]],
            indicator_mean=np.asarray(arrays["indicator_mean"], dtype=np.float64),
            indicator_scale=np.asarray(arrays["indicator_scale"], dtype=np.float64),
            indicator_weight=float(indicator_weight),
            pca_mean=np.asarray(arrays["pca_mean"], dtype=np.float64),
            components=np.asarray(arrays["components"], dtype=np.float64),
            component_scale=np.asarray(arrays["component_scale"], dtype=np.float64),
        )


@dataclass
class LookalikeParams:
    """Knobs of the representation, the scorers and the index (the tuned ones are searched by Optuna)."""

    n_components: int = 32
    whiten: float = 1.0  # 0: plain PCA scores, 1: full whitening
    clip: float = 5.0
    indicator_weight: float = 1.0
    l2: float = 1.0  # ridge penalty of the PU classifier (on standardised features)
    classifier_min_seed: int = 1000  # "auto" uses the classifier from this many known seed ids
    negatives_per_positive: float = 4.0
    min_negatives: int = 5_000
    max_negatives: int = 20_000
    ann_oversample: float = 1.25
    ann_max_candidates: int = 20_000  # larger candidate pools are scored exactly (it is as fast)
    ann_max_share: float = 0.05  # ... and so are pools larger than this share of the population
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    hnsw_ef_search: int = 64
    random_seed: int = 7

    def as_dict(self) -> dict[str, Any]:
        """The knobs as a plain dict (MLflow parameters, the artefact header)."""
        return asdict(self)


# ---- the model ------------------------------------------------------------------------------------------


@dataclass
class _Population:
    """The population a model serves: ids, vectors and what scoring needs precomputed."""

    ids: np.ndarray  # (n,) str, sorted ascending
    vectors: np.ndarray  # (n, k) float32 embeddings
    inv_norms: np.ndarray  # (n,) float32, 1 / |v| (0 for a zero vector)
    quad_mean: np.ndarray  # (2k,) population mean of [v, v**2]
    quad_scale: np.ndarray  # (2k,) population std of [v, v**2]
    index: Any = None  # hnswlib.Index over the vectors (cosine), or None


class LookalikeModel(mlflow.pyfunc.PythonModel):
    """The lookalike artefact: representation, population embeddings and their hnswlib index.

    Build with :meth:`from_vectors` (training), save with :meth:`save`, load with :meth:`load` (a local
    folder) or through MLflow (``mlflow.pyfunc.load_model``, which calls :meth:`load_context`). The pickled
    Python object is small; the arrays and the index live in the artefact folder.
    """

    def __init__(
        self,
        representation: Representation | None = None,
        params: LookalikeParams | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.representation = representation
        self.params = params or LookalikeParams()
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._pop: _Population | None = None
        self._ann_lock = threading.Lock()  # the index's ef is shared state: one ANN query at a time

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_vectors(
        cls,
        representation: Representation,
        customer_ids: Sequence[str] | np.ndarray,
        vectors: np.ndarray,
        params: LookalikeParams | None = None,
        *,
        build_index: bool = True,
        index_threads: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LookalikeModel:
        """A model over ``customer_ids`` with embedding ``vectors`` (rows in the same order)."""
        ids = np.asarray(customer_ids).astype(str)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} customer ids but {len(vectors)} vectors")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("customer ids must be unique")
        order = np.argsort(ids, kind="stable")
        model = cls(representation, params, metadata)
        model._pop = _population(ids[order], np.ascontiguousarray(vectors[order], dtype=np.float32))
        if build_index:
            model.build_index(threads=index_threads)
        return model

    def build_index(self, threads: int | None = None) -> float:
        """Build the hnswlib index (cosine) over the population; returns the seconds it took.

        With one thread the graph is reproducible; more threads build faster but not identically.
        """
        import hnswlib

        pop = self._population
        threads = threads or (1 if len(pop.ids) <= 200_000 else available_cores())
        started = time.perf_counter()
        index = hnswlib.Index(space="cosine", dim=pop.vectors.shape[1])
        index.init_index(
            max_elements=len(pop.ids),
            ef_construction=self.params.hnsw_ef_construction,
            M=self.params.hnsw_m,
            random_seed=self.params.random_seed,
        )
        index.add_items(pop.vectors, np.arange(len(pop.ids)), num_threads=threads)
        index.set_ef(self.params.hnsw_ef_search)
        pop.index = index
        seconds = time.perf_counter() - started
        logger.info(
            "hnswlib index over %d customers built in %.1fs (%d threads)", len(pop.ids), seconds, threads
        )
        return seconds

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write the artefact folder: ``lookalike.json``, ``representation.npz``, ``population.parquet``,
        ``vectors.npy`` and ``index.bin`` (when an index was built)."""
        if self.representation is None:
            raise ValueError("cannot save a lookalike model without a representation")
        pop = self._population
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "representation.npz", **self.representation.to_arrays())
        np.save(path / "vectors.npy", pop.vectors)
        pq.write_table(
            pa.table({"customer_id": pa.array(pop.ids.tolist(), pa.string())}), path / "population.parquet"
        )
        if pop.index is not None:
            pop.index.save_index(str(path / "index.bin"))
        header = {
            "format": 1,
            "features": self.representation.features,
            "clip": self.representation.clip,
            "indicator_weight": self.representation.indicator_weight,
            "params": self.params.as_dict(),
            "metadata": self.metadata,
            "population": len(pop.ids),
            "dim": int(pop.vectors.shape[1]),
            "has_index": pop.index is not None,
        }
        (path / "lookalike.json").write_text(json.dumps(header, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: Path, *, mmap: bool = False) -> LookalikeModel:
        """Load an artefact folder written by :meth:`save` (``mmap``: map the vectors instead of reading)."""
        model = cls()
        model._load_dir(Path(path), mmap=mmap)
        return model

    def _load_dir(self, path: Path, *, mmap: bool = False) -> None:
        header = json.loads((path / "lookalike.json").read_text())
        with np.load(path / "representation.npz") as arrays:
            self.representation = Representation.from_arrays(
                header["features"], header["clip"], header["indicator_weight"], dict(arrays)
            )
        self.params = LookalikeParams(**header["params"])
        self.metadata = header.get("metadata", {})
        ids = np.asarray(pq.read_table(path / "population.parquet").column("customer_id").to_pylist()).astype(
            str
        )
        vectors = np.load(path / "vectors.npy", mmap_mode="r" if mmap else None)
        self._pop = _population(ids, vectors)
        if header.get("has_index") and (path / "index.bin").exists():
            import hnswlib

            index = hnswlib.Index(space="cosine", dim=int(header["dim"]))
            index.load_index(str(path / "index.bin"), max_elements=len(ids))
            index.set_ef(self.params.hnsw_ef_search)
            self._pop.index = index
        logger.debug("lookalike model loaded from %s: %d customers, dim %d", path, len(ids), header["dim"])

    def __getstate__(self) -> dict[str, Any]:
        # The arrays and the index travel as artefact files, not inside the pickle.
        state = self.__dict__.copy()
        state["_pop"] = None
        state.pop("_ann_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ann_lock = threading.Lock()

    def load_context(self, context: Any) -> None:
        """MLflow hook: read the artefact folder logged under ``artifacts={"lookalike": <folder>}``."""
        self._load_dir(Path(context.artifacts[ARTIFACT_KEY]))

    # -- properties -----------------------------------------------------------------------------------
    @property
    def _population(self) -> _Population:
        if self._pop is None:
            raise RuntimeError("the lookalike model has no population loaded")
        return self._pop

    @property
    def customer_ids(self) -> np.ndarray:
        """The population's customer ids, sorted."""
        return self._population.ids

    @property
    def vectors(self) -> np.ndarray:
        """The population's embedding vectors, in ``customer_ids`` order."""
        return self._population.vectors

    @property
    def has_index(self) -> bool:
        """Whether an hnswlib index is loaded."""
        return self._pop is not None and self._pop.index is not None

    @property
    def population_size(self) -> int:
        """Number of customers the model knows."""
        return len(self._population.ids)

    def positions(self, customer_ids: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        """Positions of known ids (unique, ascending) and the unknown ids (first-seen order, unique)."""
        wanted = list(dict.fromkeys(str(c) for c in customer_ids))
        if not wanted:
            return np.empty(0, dtype=np.int64), []
        ids = self._population.ids
        query = np.asarray(wanted).astype(str)
        pos = np.searchsorted(ids, query)
        pos_clipped = np.minimum(pos, len(ids) - 1)
        known = (pos < len(ids)) & (ids[pos_clipped] == query)
        unknown = [w for w, k in zip(wanted, known, strict=True) if not k]
        return np.unique(pos[known]).astype(np.int64), unknown

    # -- expansion ------------------------------------------------------------------------------------
    def expand(self, request: ExpansionRequest | Mapping[str, Any]) -> ExpansionResult:
        """The customers most like the seed, best first. Raises :class:`LookalikeError` on a bad request."""
        if not isinstance(request, ExpansionRequest):
            request = ExpansionRequest.from_mapping(request)
        pop = self._population
        n = len(pop.ids)
        if request.method not in METHODS:
            raise LookalikeError(
                "bad_method", f"method must be one of {', '.join(METHODS)}, not {request.method!r}"
            )
        if isinstance(request.seed_ids, str):
            raise LookalikeError("bad_seed", "seed_ids must be a list of customer ids, not one string")
        seed_unique = list(dict.fromkeys(str(c).strip() for c in request.seed_ids or () if str(c).strip()))
        if not seed_unique:
            raise LookalikeError("empty_seed", "the seed audience is empty: give at least one customer id")
        seed_pos, unknown = self.positions(seed_unique)
        if len(seed_pos) == 0:
            raise LookalikeError(
                "unknown_seed",
                f"none of the {len(seed_unique)} seed ids is a known customer of this model "
                f"(population of {n:,}, snapshot {self.metadata.get('snapshot', 'unknown')})",
            )
        size = _resolve_size(request.size, request.fraction, n)
        excluded = np.zeros(n, dtype=bool)
        if request.exclude_seed:
            excluded[seed_pos] = True
        if isinstance(request.exclude_ids, str):
            raise LookalikeError("bad_exclude", "exclude_ids must be a list of customer ids, not one string")
        exclude_pos, _ = self.positions(request.exclude_ids or ())
        excluded[exclude_pos] = True
        n_excluded = int(excluded.sum())
        available = n - n_excluded
        if size > available:
            raise LookalikeError(
                "size_too_large",
                f"asked for {size:,} customers but only {available:,} are available "
                f"({n:,} in the population, {n_excluded:,} excluded)",
            )
        min_score = _resolve_min_score(request.min_score)
        method = request.method
        if method == "auto":
            method = "classifier" if len(seed_pos) >= self.params.classifier_min_seed else "similarity"
        warnings: list[str] = []
        if len(seed_pos) < MIN_RECOMMENDED_SEED:
            warnings.append(
                f"only {len(seed_pos)} known seed customers; "
                f"seeds of {MIN_RECOMMENDED_SEED}+ give steadier audiences"
            )
        if unknown:
            warnings.append(f"{len(unknown)} seed ids are not in the model's population and were ignored")
        if method == "classifier" and n - len(seed_pos) < 1:
            warnings.append("no customers outside the seed to contrast with: used similarity instead")
            method = "similarity"

        used_index = False
        with _one_blas_thread():
            if method == "similarity":
                positions, scores, used_index = self._similarity(seed_pos, excluded, size, n_excluded)
            else:
                positions, scores = self._classifier(seed_pos, excluded, size)
        below = 0
        if min_score is not None:
            keep = scores >= min_score
            below = int((~keep).sum())
            positions, scores = positions[keep], scores[keep]
        logger.debug(
            "lookalike: %d seed (%d unknown) -> %d customers by %s",
            len(seed_unique),
            len(unknown),
            len(positions),
            method,
        )
        return ExpansionResult(
            customer_ids=pop.ids[positions].tolist(),
            scores=[float(s) for s in scores],
            method=method,
            requested=size,
            population=n,
            seed_size=len(seed_unique),
            seed_known=int(len(seed_pos)),
            unknown_seed_ids=unknown,
            excluded=n_excluded,
            available=available,
            below_min_score=below,
            used_index=used_index,
            warnings=warnings,
        )

    def _similarity(
        self, seed_pos: np.ndarray, excluded: np.ndarray, size: int, n_excluded: int
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Cosine similarity to the seed centroid: ANN candidates when the pool is small, else exact."""
        pop = self._population
        n = len(pop.ids)
        centroid = pop.vectors[seed_pos].astype(np.float64).mean(axis=0)
        c_norm = float(np.linalg.norm(centroid))
        unit = (centroid / c_norm if c_norm > 0 else centroid).astype(np.float32)
        # Excluded customers may take pool slots, so fetch enough to drop them all.
        pool = math.ceil(self.params.ann_oversample * size) + n_excluded
        use_index = (
            pop.index is not None
            and pool <= self.params.ann_max_candidates
            and pool <= self.params.ann_max_share * n
            and c_norm > 0
        )
        cand = np.empty(0, dtype=np.int64)
        if use_index:
            try:
                with self._ann_lock:
                    pop.index.set_ef(max(self.params.hnsw_ef_search, pool))
                    labels, _ = pop.index.knn_query(unit[None, :], k=pool, num_threads=1)
                cand = np.unique(labels[0].astype(np.int64))
                cand = cand[~excluded[cand]]
            except RuntimeError as exc:  # hnswlib could not return k neighbours
                logger.warning("ANN query failed (%s): scoring exactly", exc)
            if len(cand) >= size:
                raw = _cosine(pop, cand, unit)
                order = _rank(_round(raw), size)
                return cand[order], _round(raw[order]), True
            logger.info("ANN pool too small after exclusions (%d < %d): scoring exactly", len(cand), size)
        raw = np.empty(n, dtype=np.float64)
        for lo in range(0, n, _SCORE_CHUNK):
            hi = min(lo + _SCORE_CHUNK, n)
            raw[lo:hi] = (pop.vectors[lo:hi] @ unit) * pop.inv_norms[lo:hi]
        raw[excluded] = -np.inf
        order = _rank(_round(raw), size)
        return order, _round(raw[order]), False

    def _classifier(
        self, seed_pos: np.ndarray, excluded: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """PU logistic regression on [v, v**2]: seed vs a fixed-seed sample of everyone else."""
        logit = self._pu_logits(seed_pos)
        logit[excluded] = -np.inf
        # Rank and score on the same rounded logits: customers tied on the rounded logit (ranked by id)
        # then get equal scores, never a later one 1e-6 above an earlier one.
        rounded = _round(logit)
        order = _rank(rounded, size)
        scores = _round(1.0 / (1.0 + np.exp(-np.clip(rounded[order], -700.0, 700.0))))
        return order, scores

    def _pu_logits(self, seed_pos: np.ndarray) -> np.ndarray:
        """The PU classifier's logit of every customer (class-balanced fit: the log density ratio of seed
        against everyone else, up to the fit's error)."""
        pop = self._population
        n = len(pop.ids)
        p = self.params
        is_seed = np.zeros(n, dtype=bool)
        is_seed[seed_pos] = True
        n_neg = int(
            min(
                max(p.negatives_per_positive * len(seed_pos), p.min_negatives),
                p.max_negatives,
                n - len(seed_pos),
            )
        )
        # Draw enough distinct customers to drop the seed members among them (fixed seed: reproducible).
        rng = np.random.default_rng(p.random_seed)
        drawn = rng.choice(n, size=min(n, n_neg + len(seed_pos)), replace=False)
        negatives = np.sort(drawn[~is_seed[drawn]][:n_neg])
        x_pos = _quadratic(pop.vectors[seed_pos], pop.quad_mean, pop.quad_scale)
        x_neg = _quadratic(pop.vectors[negatives], pop.quad_mean, pop.quad_scale)
        weights, bias = _fit_logistic(x_pos, x_neg, p.l2)
        # Fold the standardisation into the weights and score every customer in chunks.
        k = pop.vectors.shape[1]
        w = weights / pop.quad_scale
        b = bias - float(np.dot(w, pop.quad_mean))
        w_lin, w_sq = w[:k].astype(np.float32), w[k:].astype(np.float32)
        logit = np.empty(n, dtype=np.float64)
        squares = np.empty((min(_SCORE_CHUNK, n), k), dtype=np.float32)
        for lo in range(0, n, _SCORE_CHUNK):
            v = pop.vectors[lo : lo + _SCORE_CHUNK]
            logit[lo : lo + len(v)] = v @ w_lin + np.square(v, out=squares[: len(v)]) @ w_sq
        logit += b
        return logit

    # -- planning -------------------------------------------------------------------------------------------
    def reach_curve(
        self,
        seed_ids: Sequence[str],
        *,
        exclude_ids: Sequence[str] = (),
        folds: int = PLAN_FOLDS,
        fractions: Sequence[float] = CURVE_FRACTIONS,
        prior: PlanPrior = "crossfit",
    ) -> ReachCurve:
        """Audience size against expected precision and recall for a seed, before any audience is made.

        The ranking is the PU classifier's (``method="classifier"``). Cross-fitting: the seed is cut into
        ``folds`` parts; each part is held out while a classifier is fitted on the rest, and the held-out
        members' ranks among the candidates (everyone not in the seed and not excluded) give the **recall**
        curve R(k): the share of the seed-like customers that the top k reach (held-out members are a random
        part of them, so R(k) is unbiased). How many candidates are seed-like, P (the class prior times the
        candidates), comes from the same ranks, and the expected **precision** at size k is R(k) x P / k.

        P is what the seed identifies only up to the positive-unlabelled assumptions: it is the mixture
        proportion under irreducibility (the customers most like the seed are of its kind; Blanchard et
        al., 2010; Elkan & Noto's c = |seed| / (|seed| + P) is the same quantity). ``prior="crossfit"``
        (default, :func:`_similar_crossfit`) picks the top of the ranking on one random half of the held-out
        members and measures its density on the other half, so the pick's noise does not bias P;
        ``prior="top"`` is the earlier estimate (:func:`_similar_count`: pick and measure on the same
        members; P comes out low where the top is pure). Each point carries a bootstrap interval over the
        held-out members (``precision_low`` .. ``precision_high``, :data:`PLAN_INTERVAL`); a preset whose
        interval is wider than :data:`PLAN_WIDE` is named in a warning. Where the seed's kind of customer
        overlaps others, P and the precision are overestimated whatever the estimator, and nothing in the
        seed shows it (:data:`PLAN_ASSUMPTION`, ``curve.note``); measured on the synthetic segments and UCI
        Online Retail in benchmarks/RESULTS.md (Audiences).

        Refuses (:class:`LookalikeError`) seeds with fewer than :data:`MIN_RECOMMENDED_SEED` known customers
        and seeds holding more than :data:`MAX_SEED_SHARE` of the population; unknown ids are a warning.
        """
        pop = self._population
        n = len(pop.ids)
        if isinstance(seed_ids, str):
            raise LookalikeError("bad_seed", "seed_ids must be a list of customer ids, not one string")
        seed_unique = list(dict.fromkeys(str(c).strip() for c in seed_ids or () if str(c).strip()))
        if not seed_unique:
            raise LookalikeError("empty_seed", "the seed audience is empty: give at least one customer id")
        seed_pos, unknown = self.positions(seed_unique)
        warnings: list[str] = []
        if unknown:
            sample = ", ".join(unknown[:5])
            warnings.append(
                f"{len(unknown):,} of {len(seed_unique):,} seed ids are not customers the model knows and were "
                f"ignored (e.g. {sample})"
            )
        if len(seed_pos) == 0:
            raise LookalikeError(
                "unknown_seed", f"none of the {len(seed_unique):,} seed ids is a known customer of this model"
            )
        if len(seed_pos) < MIN_RECOMMENDED_SEED:
            raise LookalikeError(
                "seed_too_small",
                f"only {len(seed_pos)} known seed customers: a reach curve needs at least "
                f"{MIN_RECOMMENDED_SEED} (add customers to the seed"
                + (f"; {len(unknown):,} of its ids are unknown" if unknown else "")
                + ")",
            )
        if len(seed_pos) > MAX_SEED_SHARE * n:
            raise LookalikeError(
                "seed_too_large",
                f"the seed holds {len(seed_pos) / n:.0%} of the population ({len(seed_pos):,} of {n:,}): "
                f"a lookalike of a seed that is most of the population finds nobody new; use a seed of at "
                f"most {MAX_SEED_SHARE:.0%}",
            )
        folds = int(min(max(folds, 2), len(seed_pos)))
        excluded = np.zeros(n, dtype=bool)
        excluded[seed_pos] = True
        exclude_pos, _ = self.positions(exclude_ids or ())
        excluded[exclude_pos] = True
        candidates = ~excluded
        n_cand = int(candidates.sum())
        if n_cand < 1:
            raise LookalikeError("size_too_large", "no customer is left outside the seed and the exclusions")
        rng = np.random.default_rng([self.params.random_seed, len(seed_pos)])
        parts = np.array_split(rng.permutation(seed_pos), folds)
        ranks: list[np.ndarray] = []
        with _one_blas_thread():
            for part in parts:
                logit = self._pu_logits(np.setdiff1d(seed_pos, part, assume_unique=True))
                ordered = np.sort(logit[candidates])
                # Candidates scoring above each held-out member (ties count half).
                right = np.searchsorted(ordered, logit[part], side="right")
                left = np.searchsorted(ordered, logit[part], side="left")
                ranks.append((n_cand - right) + (right - left) / 2.0)
        held = np.sort(np.concatenate(ranks))
        if prior not in ("crossfit", "top"):
            raise LookalikeError("bad_prior", f"prior must be crossfit or top, not {prior!r}")
        plan_rng = np.random.default_rng([self.params.random_seed, len(seed_pos), 1])

        def estimate(members: np.ndarray, splits: int) -> float:
            if prior == "top":
                return _similar_count(members, n_cand, PLAN_START_SHARE)
            return _similar_crossfit(members, n_cand, plan_rng, splits)

        similar = estimate(held, PLAN_SPLITS)
        sizes = sorted({max(1, min(round(f * n), n_cand)) for f in fractions if f > 0})
        preset_sizes = {name: max(1, min(round(share * n), n_cand)) for name, share in PRESETS.items()}
        all_sizes = np.asarray(sorted(set(sizes) | set(preset_sizes.values())), dtype=np.float64)
        # Bootstrap over the held-out members: P and R(k) re-estimated together (they share the members).
        boot_similar = np.empty(PLAN_BOOTSTRAP)
        boot_precision = np.empty((PLAN_BOOTSTRAP, len(all_sizes)))
        for b in range(PLAN_BOOTSTRAP):
            resampled = np.sort(held[plan_rng.integers(0, len(held), len(held))])
            boot_similar[b] = estimate(resampled, 2)
            recall_b = np.searchsorted(resampled, all_sizes, side="left") / len(resampled)
            boot_precision[b] = np.minimum(1.0, recall_b * boot_similar[b] / all_sizes)
        tail = (1.0 - PLAN_INTERVAL) / 2.0
        low, high = np.quantile(boot_precision, [tail, 1.0 - tail], axis=0)
        bounds = {int(s): (float(lo), float(hi)) for s, lo, hi in zip(all_sizes, low, high, strict=True)}

        def point(size: int) -> ReachPoint:
            recall = float(np.searchsorted(held, size, side="left") / len(held))
            precision = min(1.0, recall * similar / size) if size > 0 else 0.0
            lo, hi = bounds[size]
            return ReachPoint(size=size, fraction=size / n, expected_precision=precision,
                              expected_recall=recall, expected_similar=precision * size,
                              precision_low=min(lo, precision), precision_high=max(hi, precision))  # fmt: skip

        presets = {}
        for name, fraction in PRESETS.items():
            size = preset_sizes[name]
            if size < round(fraction * n):
                warnings.append(
                    f"preset {name} is capped at the {n_cand:,} customers outside seed and exclusions"
                )
            presets[name] = point(size)
        if similar <= 0:
            warnings.append("the seed does not stand out from the population: expect precision near zero")
        wide = [f"{k} {p.precision_low:.2f}-{p.precision_high:.2f}" for k, p in presets.items()
                if p.precision_high - p.precision_low > PLAN_WIDE]  # fmt: skip
        if wide:
            warnings.append(
                "the expected precision is uncertain ("
                + ", ".join(wide)
                + f", {PLAN_INTERVAL:.0%} intervals): the seed says little about how many customers are like "
                "it; a larger seed narrows this"
            )
        s_lo, s_hi = np.quantile(boot_similar, [tail, 1.0 - tail])
        return ReachCurve(
            seed_size=len(seed_unique),
            seed_known=int(len(seed_pos)),
            unknown_seed_ids=unknown,
            population=n,
            candidates=n_cand,
            estimated_similar=similar,
            label_frequency=len(seed_pos) / (len(seed_pos) + similar),
            folds=folds,
            points=[point(s) for s in sizes],
            presets=presets,
            warnings=warnings,
            similar_low=float(min(s_lo, similar)),
            similar_high=float(max(s_hi, similar)),
            prior=prior,
        )

    # -- the pyfunc interface ------------------------------------------------------------------------------
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """pyfunc entry point. ``model_input`` has a ``customer_id`` column (the seed) and optionally a
        boolean ``exclude`` column marking ids to exclude instead; ``params``: ``size`` (0 = use
        ``fraction``), ``fraction``, ``exclude_seed``, ``min_score`` (-1 = none), ``method``.
        Returns ``customer_id``, ``score``, ``rank`` and ``method``."""
        params = dict(params or {})
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "customer_id" not in frame.columns:
            raise LookalikeError("bad_seed", "model_input needs a customer_id column")
        ids = frame["customer_id"].astype(str)
        is_excl = (
            frame["exclude"].fillna(False).astype(bool)
            if "exclude" in frame.columns
            else pd.Series(False, index=frame.index)
        )
        size = int(params.get("size") or 0)
        fraction = float(params.get("fraction") or 0.0)
        min_score = params.get("min_score")
        request = ExpansionRequest(
            seed_ids=ids[~is_excl].tolist(),
            size=size if size > 0 else None,
            fraction=fraction if size <= 0 else None,
            exclude_seed=bool(params.get("exclude_seed", True)),
            exclude_ids=ids[is_excl].tolist(),
            min_score=None if min_score is None or float(min_score) <= -1.0 else float(min_score),
            method=str(params.get("method", "auto")),  # type: ignore[arg-type]
        )
        result = self.expand(request)
        out = result.to_frame()
        out["method"] = result.method
        return out


# ---- helpers --------------------------------------------------------------------------------------------


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread while scoring: per-request matrices are small, and concurrent requests (several
    workers on few cores) would otherwise fight over BLAS threads -- 10-50x slower under load."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    if "controller" not in _BLAS:
        _BLAS["controller"] = ThreadpoolController()
    return _BLAS["controller"].limit(limits=1, user_api="blas")


def _population(ids: np.ndarray, vectors: np.ndarray) -> _Population:
    """Wrap the population, with 1/|v| and the mean and std of [v, v**2] (to standardise the classifier)."""
    n, k = vectors.shape
    inv_norms = np.empty(n, dtype=np.float32)
    s1, s2, s4 = np.zeros(k), np.zeros(k), np.zeros(k)
    for lo in range(0, n, _SCORE_CHUNK):
        v = np.asarray(vectors[lo : lo + _SCORE_CHUNK], dtype=np.float64)
        sq = v * v
        norms = np.sqrt(sq.sum(axis=1))
        inv_norms[lo : lo + len(v)] = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        s1 += v.sum(axis=0)
        s2 += sq.sum(axis=0)
        s4 += (sq * sq).sum(axis=0)
    count = max(n, 1)
    mean = np.concatenate([s1, s2]) / count
    second = np.concatenate([s2, s4]) / count
    std = np.sqrt(np.maximum(second - mean * mean, 0.0))
    std[std < 1e-9] = 1.0
    return _Population(ids=ids, vectors=vectors, inv_norms=inv_norms, quad_mean=mean, quad_scale=std)


def _cosine(pop: _Population, positions: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Cosine similarity of the customers at ``positions`` to a unit vector."""
    return ((pop.vectors[positions] @ unit) * pop.inv_norms[positions]).astype(np.float64)


def _quadratic(v: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised ``[v, v**2]`` features of the PU classifier."""
    v = np.asarray(v, dtype=np.float64)
    return (np.hstack([v, v * v]) - mean) / scale


def _fit_logistic(
    x_pos: np.ndarray, x_neg: np.ndarray, l2: float, max_iter: int = 30
) -> tuple[np.ndarray, float]:
    """Class-balanced, ridge-penalised logistic regression by Newton's method (deterministic)."""
    x = np.vstack([x_pos, x_neg])
    y = np.r_[np.ones(len(x_pos)), np.zeros(len(x_neg))]
    sample_w = np.where(y == 1.0, 0.5 / len(x_pos), 0.5 / len(x_neg))
    xb = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(xb.shape[1], float(l2) / len(x))
    penalty[-1] = 0.0
    beta = np.zeros(xb.shape[1])
    for _ in range(max_iter):
        prob = 1.0 / (1.0 + np.exp(-np.clip(xb @ beta, -35.0, 35.0)))
        grad = xb.T @ (sample_w * (prob - y)) + penalty * beta
        xw = xb * np.sqrt(sample_w * prob * (1.0 - prob))[:, None]
        hess = xw.T @ xw + np.diag(penalty + 1e-9)  # X'WX as a symmetric rank-k update (BLAS syrk)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-7:
            break
    return beta[:-1], float(beta[-1])


def _similar_count(held_ranks: np.ndarray, candidates: int, start_share: float = PLAN_START_SHARE) -> float:
    """How many candidates are like the seed, from the held-out seed members' ranks among the candidates.

    With R(k) the share of held-out members ranked within the top k, the top k hold R(k) x P of the P seed-like
    candidates, and at most k of them: P <= k / R(k) for every k, tight where the top of the ranking is pure
    (mixture proportion estimation: Blanchard et al., 2010; Scott, 2015). Precision R(k) x P / k falls as k
    grows down a good ranking, so R(k) / k is smoothed by an antitonic (non-increasing) least-squares fit,
    weighted by the number of held-out members behind each point, over the ranks from the
    ``max(20, start_share)``-th member on (fewer are noise); P is one over the fit's largest value. The fit
    pools the flat top of a ranking into one average, where the raw minimum of k / R(k) would pick its
    noisiest low point.

    Used by ``reach_curve(prior="top")``, the earlier default. Its bias, measured (benchmarks/RESULTS.md,
    Audiences): the fit's largest value is the best of several noisy averages over the same members, so P
    comes out low and the precision conservative where the top is pure (by about 0.05 on the synthetic
    segments, 0.1 on UCI Online Retail's); :func:`_similar_crossfit` removes that bias by picking the top on
    other members than those it is measured on.
    """
    m = len(held_ranks)
    if m == 0:
        return 0.0
    start = min(max(20, int(m * start_share)), m) - 1
    order = np.arange(1, m + 1, dtype=np.float64)
    ratio = (order / m) / (np.sort(held_ranks) + 1.0)  # R(k) / k at each held-out member's rank
    fitted = _antitonic(ratio[start:], order[start:])
    top = float(fitted[0]) if len(fitted) else 0.0
    return float(min(1.0 / top, candidates)) if top > 0 else float(candidates)


def _top_window(held_ranks: np.ndarray) -> float:
    """The rank that ends the top of the ranking, picked on sorted held-out ranks: the window [0, K) where
    the density of seed-like customers, R(K) / K, is largest by a lower confidence bound, (j - sqrt(j)) /
    (m K) for the j-th of m members (one Poisson standard error; TIcE picks its subsets the same way,
    Bekker & Davis, 2018), among windows holding at least :data:`PLAN_WINDOW_SHARE` of the members (and
    20). The bound prefers windows holding many members to a noisy peak of a few."""
    m = len(held_ranks)
    j = np.arange(1, m + 1, dtype=np.float64)
    bound = (j - np.sqrt(j)) / (m * (held_ranks + 1.0))
    first = min(max(20, int(PLAN_WINDOW_SHARE * m)), m) - 1  # windows of fewer members are noise
    best = first + int(np.argmax(bound[first:]))
    return float(held_ranks[best] + 1.0)


def _similar_crossfit(
    held_ranks: np.ndarray, candidates: int, rng: np.random.Generator, splits: int = PLAN_SPLITS
) -> float:
    """How many candidates are like the seed: the irreducibility estimate of :func:`_similar_count`,
    cross-fitted so that picking the top does not bias it.

    The held-out members are halved at random; the top of the ranking (:func:`_top_window`, K) is picked on
    one half and the density of seed-like customers there, R(K) / K, measured on the other half, and the
    other way round; the densities of ``splits`` halvings are averaged and P is one over the average (at
    most ``candidates``). Picked and measured on the same members (:func:`_similar_count`), the top is
    where those members happen to crowd, so its density comes out high and P low; measured on other members
    it is unbiased for the picked window. Under the positive-unlabelled assumptions (seed members a random
    part of the seed-like customers, the top of the ranking of their kind) P is then unbiased up to the
    window's impurity (Bekker & Davis, 2018, TIcE, bound the same quantity on picked subsets).
    """
    held_ranks = np.sort(np.asarray(held_ranks, dtype=np.float64))
    m = len(held_ranks)
    if m < 4:
        return _similar_count(held_ranks, candidates)
    densities = []
    for _ in range(max(1, splits)):
        first = np.zeros(m, dtype=bool)
        first[rng.permutation(m)[: m // 2]] = True
        halves = held_ranks[first], held_ranks[~first]
        for pick, measure in (halves, halves[::-1]):
            window = _top_window(pick)
            densities.append(np.searchsorted(measure, window, side="left") / len(measure) / window)
    density = float(np.mean(densities))
    return float(min(1.0 / density, candidates)) if density > 0 else float(candidates)


def _antitonic(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-increasing weighted least-squares fit of ``values`` (pool adjacent violators)."""
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(value)
        totals.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] < means[-1]:
            total = totals[-2] + totals[-1]
            means[-2] = (means[-2] * totals[-2] + means[-1] * totals[-1]) / total
            totals[-2] = total
            sizes[-2] += sizes[-1]
            means.pop()
            totals.pop()
            sizes.pop()
    return np.repeat(np.asarray(means), sizes)


def _round(values: np.ndarray) -> np.ndarray:
    """Scores rounded to ``SCORE_DECIMALS`` so that ranking ties are exact (then broken by id)."""
    return np.round(values, SCORE_DECIMALS)


def _rank(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first; ties go to the lower position (customer_id)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
        threshold = scores[part].min()
        above = np.flatnonzero(scores > threshold)
        ties = np.flatnonzero(scores == threshold)[: k - len(above)]
        chosen = np.concatenate([above, ties])
    else:
        chosen = np.arange(len(scores))
    return chosen[np.lexsort((chosen, -scores[chosen]))].astype(np.int64)


def _resolve_min_score(value: Any) -> float | None:
    """``min_score`` as a float, or None; anything else is a :class:`LookalikeError`."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise LookalikeError("bad_min_score", f"min_score must be a finite number, not {value!r}")
    return number


def _resolve_size(size: int | None, fraction: float | None, population: int) -> int:
    """The audience size from ``size`` or ``fraction`` of the population, validated."""
    if size is not None and fraction is not None:
        raise LookalikeError("bad_size", "give either size or fraction, not both")
    if size is None and fraction is None:
        raise LookalikeError("bad_size", "give the audience size (a count) or a fraction of the population")
    if fraction is not None:
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not (0.0 < float(fraction) <= 1.0)
        ):
            raise LookalikeError("bad_fraction", f"fraction must be a number in (0, 1], not {fraction!r}")
        resolved = round(float(fraction) * population)
        if resolved < 1:
            raise LookalikeError(
                "bad_fraction",
                f"fraction {fraction} of a population of {population:,} is less than one customer",
            )
        return resolved
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise LookalikeError("bad_size", f"size must be a whole number, not {size!r}")
    if size < 1:
        raise LookalikeError("bad_size", f"size must be at least 1, not {size}")
    return int(size)


# ---- CSV in, CSV out ------------------------------------------------------------------------------------

_HEADER_NAMES = {"customer_id", "customerid", "customer", "id", "ids", "customer id"}


def read_seed_csv(path: Path) -> list[str]:
    """Customer ids from a CSV: a ``customer_id`` column (header required then), or a single column of
    ids with an optional header. Blank cells are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise LookalikeError("bad_seed_file", f"cannot read the seed file {path}: {exc.strerror}") from exc
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if not rows:
        raise LookalikeError("empty_seed", f"the seed file {path} has no customer ids")
    header = [cell.strip().lower() for cell in rows[0]]
    if "customer_id" in header:
        col = header.index("customer_id")
        return [r[col].strip() for r in rows[1:] if len(r) > col and r[col].strip()]
    if max(len(r) for r in rows) > 1:
        raise LookalikeError("bad_seed_file", f"{path} has several columns but none is called customer_id")
    first = rows[0][0].strip()
    has_header = first.lower() in _HEADER_NAMES or (not re.search(r"\d", first) and len(rows) > 1)
    return [r[0].strip() for r in rows[1 if has_header else 0 :] if r and r[0].strip()]


def expand_csv(
    model: LookalikeModel, seed_csv: Path, size: int | None, out_csv: Path, **options: Any
) -> ExpansionResult:
    """Expand the seed in ``seed_csv`` and write ``customer_id,score,rank`` to ``out_csv`` (atomically).

    ``options`` are the other :class:`ExpansionRequest` fields (``fraction``, ``exclude_seed``,
    ``exclude_ids``, ``min_score``, ``method``); pass ``size=None`` with ``fraction=...``.
    """
    request = ExpansionRequest.from_mapping({"seed_ids": read_seed_csv(seed_csv), "size": size, **options})
    result = model.expand(request)
    with atomic_path(out_csv) as tmp:
        result.to_frame().to_csv(tmp, index=False)
    logger.info("%d lookalike customers (%s) written to %s", result.returned, result.method, out_csv)
    return result


__all__ = [
    "ARTIFACT_KEY",
    "PRESETS",
    "ReachCurve",
    "ReachPoint",
    "ExpansionRequest",
    "ExpansionResult",
    "LookalikeError",
    "LookalikeModel",
    "LookalikeParams",
    "Representation",
    "expand_csv",
    "read_seed_csv",
]

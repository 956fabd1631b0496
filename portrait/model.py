"""The artefact every tag model is logged as: a LightGBM booster with its own post-processing.

Training (``training/``) builds a :class:`TagModel` and logs it to MLflow as a pyfunc model; serving
(``serving/``) loads ``models:/<name>@champion`` and calls :meth:`TagModel.explain`. The model carries
everything needed to turn features into tags -- feature order, categorical codes, the probability
calibrator, the tier thresholds and the reason phrases -- so serving never imports training code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd
from scipy import sparse

from portrait.lgbm_internals import RowLeaves
from portrait.reasons import describer

Kind = Literal["classifier", "regressor"]
PARALLEL_ROWS = 256
"""From this many rows, the leaf look-up uses every core: 1,000 rows x 1,900 trees took 72 ms on one core
and 39 ms on two (idle machine; with the other core busy two threads were ~30% slower). Fewer rows stay on
one thread, where OpenMP's start-up would cost more than it saves. The service's ``Tagger`` uses the same
bound to spread the models' numeric work over its worker threads."""
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
SMALL_BATCH = 8
"""Up to this many rows, leaves are looked up row by row (:class:`RowLeaves`) and contributions gathered
densely (cheaper than a predictor's set-up and a sparse matrix)."""
Frame = pd.DataFrame | Mapping[str, Any]  # a DataFrame, or column name -> 1-D array of equal lengths
BASE_COLUMN = "base_raw_score"
"""Training frames' column with each row's base raw score (a model the trees correct, e.g. the log of a
purchase model's expected value, fitted at that row's snapshot): LightGBM's ``init_score``. A served model
computes its base itself (:attr:`TagModel.base`)."""


class PlattCalibrator:
    """Sigmoid calibration on the log-odds, fitted on validation data.

    Strictly monotone, so it keeps the model's ranking (AUC) intact -- isotonic regression's steps
    would create ties -- while correcting the probability level for out-of-time drift.
    """

    def __init__(self, coef: float, intercept: float) -> None:
        self.coef = coef
        self.intercept = intercept

    @classmethod
    def fit(cls, raw: np.ndarray, y: np.ndarray) -> PlattCalibrator:
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(raw).reshape(-1, 1), y.astype(int))
        return cls(float(lr.coef_[0, 0]), float(lr.intercept_[0]))

    def predict(self, raw: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.coef * _logit(raw) + self.intercept)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


@dataclass
class Tiers:
    """Ordered thresholds: a score >= ``thresholds[i]`` gets ``names[i]``; below all of them, ``default``."""

    thresholds: list[float]
    names: list[str]
    default: str

    def assign(self, scores: np.ndarray) -> list[str]:
        ordered = sorted(zip(self.thresholds, self.names, strict=True))
        labels = [self.default, *(name for _, name in ordered)]
        # 1 + the position of the highest threshold <= score (equal thresholds: the last in that order),
        # 0 below all of them; a NaN score is below all of them.
        positions = np.searchsorted([t for t, _ in ordered], scores, side="right")
        positions[np.isnan(scores)] = 0
        return [labels[i] for i in positions.tolist()]


@dataclass
class LeafPaths:
    """For every tree and leaf: the features split on along the root-to-leaf path and the change in
    expected value each split contributed (padded with feature -1)."""

    feature: np.ndarray  # (trees, max_leaves, max_depth) int
    delta: np.ndarray  # (trees, max_leaves, max_depth) float
    bias: float  # sum of the trees' root expected values

    @classmethod
    def from_booster(cls, booster: lgb.Booster, n_features: int) -> LeafPaths:
        trees = booster.dump_model()["tree_info"]
        per_tree: list[dict[int, list[tuple[int, float]]]] = []
        bias = 0.0
        for info in trees:
            root = info["tree_structure"]
            leaves: dict[int, list[tuple[int, float]]] = {}
            if "leaf_index" in root:  # a single-leaf tree
                bias += float(root.get("leaf_value", 0.0))
                leaves[0] = []
            else:
                bias += float(root["internal_value"])
                stack: list[tuple[dict[str, Any], list[tuple[int, float]]]] = [(root, [])]
                while stack:
                    node, path = stack.pop()
                    parent_value = float(node["internal_value"])
                    for side in ("left_child", "right_child"):
                        child = node[side]
                        value = float(
                            child["leaf_value"] if "leaf_index" in child else child["internal_value"]
                        )
                        step = [*path, (int(node["split_feature"]), value - parent_value)]
                        if "leaf_index" in child:
                            leaves[int(child["leaf_index"])] = step
                        else:
                            stack.append((child, step))
            per_tree.append(leaves)
        max_leaves = max((max(t) + 1 for t in per_tree if t), default=1)
        max_depth = max((len(p) for t in per_tree for p in t.values()), default=1) or 1
        feature = np.full((len(per_tree), max_leaves, max_depth), -1, dtype=np.int32)
        delta = np.zeros((len(per_tree), max_leaves, max_depth))
        for i, leaves in enumerate(per_tree):
            for leaf, path in leaves.items():
                for d, (f, v) in enumerate(path):
                    feature[i, leaf, d] = f
                    delta[i, leaf, d] = v
        return cls(feature=feature, delta=delta, bias=bias)

    def leaf_table(self, n_features: int) -> np.ndarray:
        """``(trees, max_leaves, n_features)``: each leaf's path deltas summed per feature (built once)."""
        table = getattr(self, "_table", None)
        if table is None or table.shape[2] != n_features:
            trees, leaves, depth = self.feature.shape
            table = np.zeros((trees, leaves, n_features))
            t, leaf, d = np.nonzero(self.feature >= 0)
            np.add.at(table, (t, leaf, self.feature[t, leaf, d]), self.delta[t, leaf, d])
            self._table = table
            self._serving = (
                table.reshape(trees * leaves, n_features).astype(np.float32),
                table.sum(axis=2).ravel(),
            )
        return table

    def serving_tables(self, n_features: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`leaf_table` in float32 (for reasons: half the memory traffic of the largest product) and
        each leaf's total change from the root in float64, both by flat leaf position
        (:func:`leaf_positions`): ``(trees * max_leaves, n_features)`` and ``(trees * max_leaves,)``; the
        totals give the exact score."""
        self.leaf_table(n_features)
        return self._serving


@dataclass
class TagModel(mlflow.pyfunc.PythonModel):
    """A fitted LightGBM model plus calibration, tiers and reasons."""

    name: str
    kind: Kind
    booster_text: str
    features: list[str]
    categories: dict[str, list[str]]
    tiers: Tiers
    calibrator: PlattCalibrator | None = None  # classifiers only
    feature_service: str = ""
    target: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    base: Any = None
    """A model the trees correct (log-link regressors), e.g. :class:`portrait.value.ValueParts`: anything
    with ``offset(x, columns) -> raw scores`` of a feature matrix, added to the trees' raw score, and
    ``derive(frame) -> {name: values}`` for the :attr:`derived` features."""
    derived: list[str] = field(default_factory=list)
    """Features the trees read that the model derives itself from ``features`` (through ``base``), e.g. the
    purchase model's P(active): after ``features`` in the matrix, never read from the feature store."""

    @property
    def columns(self) -> list[str]:
        """The booster's features: :attr:`features` (from the feature store), then :attr:`derived`."""
        derived = self.__dict__.get("derived") or []
        return [*self.features, *derived] if derived else self.features

    def __post_init__(self) -> None:
        self._booster: lgb.Booster | None = None
        self._paths: LeafPaths | None = None

    # -- pickling: keep the booster as text, rebuild it lazily ------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_booster"] = None
        state["_paths"] = None
        state.pop("_row_leaves", None)
        state.pop("_codes", None)
        state.pop("_describers", None)
        state.pop("_matrix_key", None)
        return state

    @property
    def booster(self) -> lgb.Booster:
        if self._booster is None:
            self._booster = lgb.Booster(model_str=self.booster_text)
        return self._booster

    # -- scoring --------------------------------------------------------------------------------
    def matrix(self, frame: Frame) -> np.ndarray:
        """Features as a float matrix in training order; categoricals become their training codes.

        ``frame`` is a DataFrame or a mapping of column name -> 1-D array (what serving builds from
        Feast's online response, without a DataFrame's per-call overhead).
        """
        # One conversion for training (DataFrames) and serving (columns), so the two cannot drift apart.
        columns = (
            {f: frame[f].to_numpy() for f in self.columns if f in frame}
            if isinstance(frame, pd.DataFrame)
            else frame
        )
        missing = [f for f in self.columns if f not in columns]
        if missing and getattr(self, "base", None) is not None and hasattr(self.base, "derive"):
            columns = {**columns, **self.base.derive(frame)}  # features derived from the base model
            missing = [f for f in self.columns if f not in columns]
        if missing:
            raise KeyError(f"{self.name}: missing feature columns {missing}")
        n = _n_rows(columns)
        x = np.empty((n, len(self.columns)))
        for i, name in enumerate(self.columns):
            values = columns[name]
            cats = self.categories.get(name)
            if cats is not None:  # the training code of each category; anything else is missing
                codes = self._category_codes(name, cats)
                x[:, i] = [codes.get(v, np.nan) if isinstance(v, str) else np.nan for v in values]
                continue
            try:
                x[:, i] = np.asarray(values, dtype="float64")
            except (TypeError, ValueError):
                x[:, i] = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
                    dtype="float64", na_value=np.nan
                )
        return x

    def _category_codes(self, name: str, cats: list[str]) -> dict[str, float]:
        cache = self.__dict__.setdefault("_codes", {})
        if name not in cache:
            cache[name] = {c: float(i) for i, c in enumerate(cats)}
        return cache[name]

    def raw_score(self, x: np.ndarray) -> np.ndarray:
        if getattr(self, "base", None) is not None:
            return np.exp(self.booster.predict(x, num_threads=1, raw_score=True) + self.base_offset(x))
        return self.booster.predict(x, num_threads=1)

    def base_offset(self, x: np.ndarray) -> np.ndarray | float:
        """The base's raw score of each row of ``x`` (0 without a base)."""
        base = getattr(self, "base", None)
        return 0.0 if base is None else base.offset(x, self.columns)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probability (classifier) or predicted value (regressor)."""
        return self._finish(self.raw_score(self.matrix(frame)))

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        if self.calibrator is not None:
            return np.clip(self.calibrator.predict(raw), 0.0, 1.0)
        return raw

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-feature contributions (last column: the expected value) that sum to the raw score.

        Path-based (Saabas) attributions from the tree structure: each split on the row's path credits
        its feature with the change in the node's expected value. One ``pred_leaf`` pass plus table
        look-ups, so reasons cost about as much as a prediction (LightGBM's exact TreeSHAP,
        :meth:`shap_contributions`, costs milliseconds per row on deep trees). Each leaf's path is
        pre-summed per feature (:meth:`LeafPaths.leaf_table`), so a row costs one ``n_features`` vector
        addition per tree (a sparse one-hot leaf matrix times that table).
        """
        table = self.paths.leaf_table(len(self.columns))
        contrib = tree_sums(
            leaf_positions(self.leaf_indices(x), table.shape[1]), table.reshape(-1, table.shape[2])
        )
        return np.column_stack([contrib, self.paths.bias + np.broadcast_to(self.base_offset(x), len(x))])

    def leaf_indices(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        """``(rows, trees)`` leaf index of every row in every tree: a few rows one by one through
        :class:`RowLeaves`, more through ``Booster.predict`` on ``threads`` threads (default: every core
        from :data:`PARALLEL_ROWS` rows)."""
        if len(x) <= SMALL_BATCH:
            row_leaves = self.__dict__.get("_row_leaves")
            if row_leaves is None:
                row_leaves = self.__dict__["_row_leaves"] = RowLeaves(self.booster, len(self.columns))
            return row_leaves(x)
        # Explicit counts: LightGBM keeps the last OpenMP thread count, so 0 ("default") would stay at 1.
        if threads is None:
            threads = CORES if len(x) >= PARALLEL_ROWS else 1
        return self.booster.predict(x, pred_leaf=True, num_threads=threads).astype(np.int64)

    def shap_contributions(self, x: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP contributions from LightGBM (slow on deep trees; for offline analysis)."""
        return self.booster.predict(x, pred_contrib=True)

    @property
    def paths(self) -> LeafPaths:
        if getattr(self, "_paths", None) is None:
            self._paths = LeafPaths.from_booster(self.booster, len(self.columns))
        return self._paths

    def explain(self, frame: Frame, top_k: int = 3) -> pd.DataFrame:
        """Score, tier and the ``top_k`` reasons behind each row's score."""
        scores, tiers, reasons = self.explain_columns(frame, top_k)
        return pd.DataFrame({"score": scores, "tier": tiers, "reasons": reasons})

    def matrix_key(self) -> tuple[Any, ...]:
        """Equal for models whose :meth:`matrix` of the same frame is equal (same features, same codes)."""
        key = self.__dict__.get("_matrix_key")
        if key is None:
            categories = tuple((k, tuple(v)) for k, v in sorted(self.categories.items()))
            key = self.__dict__["_matrix_key"] = (tuple(self.columns), categories)
        return key

    def scores_and_contributions(
        self, x: np.ndarray, threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores (float64, as LightGBM's ``raw_score``) and per-feature contributions (float32, no
        expected-value column) of ``x``: :meth:`contributions` for serving, where they only rank and show
        reasons, rounded to 4 decimals. Numeric work only (LightGBM and scipy release the GIL), so it can
        run on a worker thread; ``threads`` as :meth:`leaf_indices`."""
        table, totals = self.paths.serving_tables(len(self.columns))
        positions = leaf_positions(self.leaf_indices(x, threads), self.paths.feature.shape[1])
        raw = self.paths.bias + totals[positions].sum(axis=1) + self.base_offset(x)
        return raw, tree_sums(positions, table)

    def explain_columns(
        self,
        frame: Frame,
        top_k: int = 3,
        x: np.ndarray | None = None,
        parts: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, list[str], list[list[dict[str, Any]]]]:
        """:meth:`explain` as ``(scores, tiers, reasons)``, without building a DataFrame.

        ``x`` is :meth:`matrix` of ``frame`` and ``parts`` its :meth:`scores_and_contributions`, when the
        caller already has them (models sharing a matrix; the numeric part done on another thread).
        """
        base = getattr(self, "base", None)
        if base is not None and hasattr(base, "derive") and any(f not in frame for f in self.columns):
            derived = base.derive(frame)  # the reasons show the derived features' values too
            frame = frame.assign(**derived) if isinstance(frame, pd.DataFrame) else {**frame, **derived}
        if parts is None:
            parts = self.scores_and_contributions(self.matrix(frame) if x is None else x)
        raw, contrib = parts
        if self.kind == "classifier":
            raw = 1.0 / (1.0 + np.exp(-raw))
        elif self.metadata.get("log_link"):
            raw = np.exp(raw)
        scores = self._finish(raw)
        reasons = self._reasons(frame, contrib, top_k)
        return scores, self.tiers.assign(scores), reasons

    def _reasons(self, frame: Frame, contrib: np.ndarray, top_k: int) -> list[list[dict[str, Any]]]:
        order = np.argsort(-np.abs(contrib), axis=1)[:, :top_k]
        picked = np.take_along_axis(contrib, order, axis=1).astype(np.float64)
        effects = np.round(picked, 4).tolist()
        columns: dict[int, list[Any]] = {}  # feature position -> the frame's column as a list
        features = self.columns
        texts = self.__dict__.get("_describers")  # per feature: (lowers, raises) -> text of a value
        if texts is None:
            texts = self.__dict__["_describers"] = [
                (describer(f, self.target, False), describer(f, self.target, True)) for f in features
            ]
        out: list[list[dict[str, Any]]] = []
        for row, (picks, raw, rounded) in enumerate(
            zip(order.tolist(), picked.tolist(), effects, strict=True)
        ):
            items = []
            for j, effect, shown in zip(picks, raw, rounded, strict=True):
                if effect == 0.0 or effect != effect:  # no effect, or NaN
                    continue
                column = columns.get(j)
                if column is None:
                    column = columns[j] = frame[features[j]].tolist()
                value = column[row]
                if value is None or value != value:  # missing (None or NaN)
                    value = None
                elif not isinstance(value, str):
                    value = float(value)
                text = texts[j][effect > 0](value)
                items.append({"feature": features[j], "value": value, "effect": shown, "text": text})
            out.append(items)
        return out

    # -- the pyfunc interface -----------------------------------------------------------------------
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """pyfunc entry point: ``score`` and ``tier`` per row (reasons through :meth:`explain`)."""
        scores = self.score(model_input)
        return pd.DataFrame({"score": scores, "tier": self.tiers.assign(scores)})


def leaf_positions(leaves: np.ndarray, n_leaves: int) -> np.ndarray:
    """``(rows, trees)`` leaf indices as rows of a per-leaf table flattened to ``(trees * n_leaves, k)``."""
    return leaves + np.arange(leaves.shape[1], dtype=np.int64)[None, :] * n_leaves


def tree_sums(positions: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Every row's leaf entries of a flat per-leaf ``table`` (:func:`leaf_positions`) summed over the trees.

    A few rows gather their leaves' entries and add (no sparse matrix to build); more make a one-hot
    (row, tree's leaf) matrix and multiply it with the table: a sparse-dense product in C, summing each
    row's trees in tree order, in the table's precision.
    """
    n, n_trees = positions.shape
    if n <= SMALL_BATCH:
        return table[positions].sum(axis=1)
    indptr = np.arange(0, n * n_trees + 1, n_trees, dtype=np.int64)
    hits = sparse.csr_matrix(
        (np.ones(n * n_trees, dtype=np.float32), positions.ravel(), indptr), shape=(n, len(table))
    )
    return hits @ table


def _n_rows(columns: Mapping[str, Any]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def feature_frame(rows: dict[str, Sequence[Any]], features: Sequence[str]) -> pd.DataFrame:
    """A frame with exactly ``features`` as columns from Feast's column-oriented online response."""
    return pd.DataFrame({name: rows[name] for name in features})

"""The model catalogue: one declaration per model, from which everything else derives.

Training (label, windows, tiers, metric), tracking (experiment and registered-model name, headline
metric, promotion direction), the Feast feature services, serving (the ``/v1/tags`` response fields,
reason vocabulary), the CLI's choices and the review helpers all read :data:`CATALOGUE`. Adding a model
is one :class:`ModelEntry` here plus its spec module in ``training/`` (what only fitting needs, such as
monotone constraints); see ARCHITECTURE.md, "Adding a model".

This module is the ground floor: it imports nothing of Portrait's but the standard library.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

Kind = Literal["classifier", "regressor", "lookalike"]
LabelKind = Literal["churn", "conversion", "clv"]
"""How labels are built (``training.labels``): no purchase in the horizon among recent buyers (``churn``),
a purchase in the horizon (``conversion``), gross purchase value in the horizon (``clv``)."""
Population = Literal["all", "browsers"]

ALL_VIEWS = ("customer_profile", "customer_transactions", "customer_behaviour")
"""The Feast feature views, in the order every feature service lists them."""


@dataclass(frozen=True)
class TierScheme:
    """Tiers as shares of the validation population, highest first, e.g. high = top 20 %."""

    shares: tuple[float, ...]
    names: tuple[str, ...]
    default: str


@dataclass(frozen=True)
class LabelWindows:
    """What a model predicts and over which windows (days); the defaults of ``portrait train``."""

    kind: LabelKind
    horizon_days: int
    lookback_days: int = 365
    population: Population = "all"


@dataclass(frozen=True)
class CategoryScore:
    """One category and the probability of buying in it within the model's horizon."""

    category: str
    probability: float


@dataclass(frozen=True)
class Output:
    """An extra field of a model's tag beyond its score, tier and reasons, computed by the served model's
    parts (``TagModel.base.served``), e.g. the value's 80 % range. Null where it does not apply."""

    name: str
    type: Any
    """The field's Python type (``float``, ``date``, ``list[str]``, ``list[CategoryScore]``)."""
    description: str


@dataclass(frozen=True)
class ModelEntry:
    """Everything Portrait needs to know about one model, in one place."""

    name: str
    """Registered MLflow model, experiment and spec-module name (``training.<name>``)."""
    kind: Kind
    description: str
    feature_service: str
    """Feast FeatureService holding the model's features (training and serving read only it)."""
    headline_metric: str
    """Metric on the out-of-time test split that decides promotion and heads ``portrait models``."""
    higher_is_better: bool = True
    label: LabelWindows | None = None
    tiers: TierScheme | None = None
    response_field: str | None = None
    """Field of ``/v1/tags`` carrying this model's tag (None: not a tag model)."""
    score_field: str = "probability"
    """Name of the score inside the tag: ``probability`` (classifiers) or ``predicted_value``."""
    reason_words: tuple[str, str] = ("raises the score", "lowers the score")
    """How a reason says a feature pushes the score up / down."""
    views: dict[str, tuple[str, ...] | None] = field(default_factory=lambda: dict.fromkeys(ALL_VIEWS))
    """Feature view -> the features taken from it (None: all of them)."""
    spec_module: str | None = None
    """Module with the model's training specifics (default ``training.<name>``)."""
    outputs: tuple[Output, ...] = ()
    """Extra fields of the tag (see :class:`Output`); the model's ``/v1/tags`` type is extended by them."""

    @property
    def is_tag_model(self) -> bool:
        return self.kind in ("classifier", "regressor")

    @property
    def headline_key(self) -> str:
        """The MLflow metric key of the headline metric (tag models log it with a ``test_`` prefix)."""
        return f"test_{self.headline_metric}" if self.is_tag_model else self.headline_metric

    @property
    def training_module(self) -> str:
        return self.spec_module or f"training.{self.name}"


# ---- the catalogue -------------------------------------------------------------------------------------
CATALOGUE: list[ModelEntry] = [
    ModelEntry(
        name="churn",
        kind="classifier",
        description="Risk of no purchase in the churn horizon, among customers who bought in the lookback.",
        feature_service="churn_v1",
        headline_metric="auc",
        label=LabelWindows("churn", horizon_days=90, lookback_days=365),
        tiers=TierScheme(shares=(0.2, 0.3), names=("high", "medium"), default="low"),
        response_field="churn",
        reason_words=("raises churn risk", "lowers churn risk"),
    ),
    ModelEntry(
        name="conversion",
        kind="classifier",
        description="Propensity to purchase within the conversion horizon.",
        feature_service="conversion_v1",
        headline_metric="auc",
        label=LabelWindows("conversion", horizon_days=30),
        tiers=TierScheme(shares=(0.1, 0.2), names=("high", "medium"), default="low"),
        response_field="conversion",
        reason_words=("raises purchase propensity", "lowers purchase propensity"),
    ),
    ModelEntry(
        name="clv",
        kind="regressor",
        description="Expected gross purchase value over the CLV horizon.",
        feature_service="clv_v1",
        headline_metric="normalized_gini",
        label=LabelWindows("clv", horizon_days=365),
        tiers=TierScheme(shares=(0.1, 0.3), names=("high", "medium"), default="low"),
        response_field="value",
        score_field="predicted_value",
        reason_words=("raises predicted value", "lowers predicted value"),
        outputs=(
            Output(
                "p10", float, "Low end of the 80 % range of the value over the horizon (10th percentile)."
            ),
            Output(
                "p90", float, "High end of the 80 % range of the value over the horizon (90th percentile)."
            ),
            Output(
                "p_active",
                float,
                "P(still an active customer), from the purchase model (BG/NBD). Null: no purchase yet.",
            ),
            Output(
                "expected_orders",
                float,
                "Orders expected over the horizon if active: p_active x expected_orders x "
                "expected_order_value = predicted_value.",
            ),
            Output("expected_order_value", float, "Expected value of an order (Gamma-Gamma)."),
            Output("parts", list[str], "The parts of the value in words."),
            Output(
                "next_order_date",
                date,
                "Most likely date of the next order, if it comes within horizon_days (the median given that).",
            ),
            Output("next_order_probability", float, "P(an order within horizon_days)."),
            Output(
                "top_categories",
                list[CategoryScore],
                "The customer's top categories: P(buying in the category within horizon_days), highest first.",
            ),
        ),
    ),
    ModelEntry(
        name="lookalike",
        kind="lookalike",
        description="Behavioural and transactional similarity to a seed audience.",
        feature_service="lookalike_v1",
        headline_metric="recall_at_size",
        # Declared attributes are left out: audiences should be similar in behaviour, not demographics.
        views={
            "customer_profile": ("tenure_days",),
            "customer_transactions": None,
            "customer_behaviour": None,
        },
    ),
]

SEGMENT_MODEL = "churn"
"""The tag model whose artefact carries the RFM edges and whose tier decides ``at_risk`` (lifecycle)."""
SERVING_SERVICE = "tags_v1"
"""The FeatureService ``/v1/tags`` reads: every feature of the tag models' services."""


def entries() -> list[ModelEntry]:
    """Every model, in catalogue order."""
    return list(CATALOGUE)


def names() -> list[str]:
    return [e.name for e in CATALOGUE]


def tag_models() -> list[ModelEntry]:
    """The models whose scores are tags in ``/v1/tags`` (classifiers and regressors)."""
    return [e for e in CATALOGUE if e.is_tag_model]


def get(name: str) -> ModelEntry:
    """The entry of ``name``; ``KeyError`` naming the known models otherwise."""
    for entry in CATALOGUE:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown model {name!r}; known: {', '.join(names())}")


def feature_services() -> dict[str, str]:
    """Model name -> its FeatureService name."""
    return {e.name: e.feature_service for e in CATALOGUE}


def register(entry: ModelEntry) -> ModelEntry:
    """Add (or replace) a model at run time, e.g. from a plugin; the usual way is an entry above."""
    CATALOGUE[:] = [e for e in CATALOGUE if e.name != entry.name]
    CATALOGUE.append(entry)
    return entry


def spec_module(entry: ModelEntry) -> object:
    """The model's spec module (imported when training needs it, never at import time)."""
    return importlib.import_module(entry.training_module)


__all__ = [
    "ALL_VIEWS",
    "CATALOGUE",
    "CategoryScore",
    "Output",
    "SEGMENT_MODEL",
    "SERVING_SERVICE",
    "LabelWindows",
    "ModelEntry",
    "TierScheme",
    "entries",
    "feature_services",
    "get",
    "names",
    "register",
    "spec_module",
    "tag_models",
]

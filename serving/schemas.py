"""Request and response models of the HTTP API (``/v1``). The OpenAPI schema built from these is the
contract with the tag system and the ad teams: every field is documented."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator
from typing_extensions import TypedDict

from features.contract import CUSTOMER_ID_MAX_LENGTH, CUSTOMER_ID_PATTERN, CUSTOMER_ID_RULE
from portrait import catalogue
from portrait.predlog import Card, DriftSummary, Evaluation, Pending

MAX_IDS = 10_000
CustomerId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=CUSTOMER_ID_MAX_LENGTH, pattern=CUSTOMER_ID_PATTERN),
    Field(description=CUSTOMER_ID_RULE),
]
"""A customer id as the validator accepts it (``features.contract``): the same rule on both sides."""


class ErrorBody(BaseModel):
    """The body of every error response (4xx / 5xx) of every route."""

    error: str = Field(description="What went wrong, in one line, naming the field, limit or setting.")
    detail: list[dict[str, Any]] | None = Field(
        None, description="Validation errors, one per problem: `type`, `loc` (where) and `msg`."
    )
    reasons: list[str] | None = Field(None, description="503: why the service cannot answer now.")


# A TypedDict rather than a model: a 1,000-customer response holds 9,000 reasons, and validating them as
# dicts costs half as much as building model instances (same JSON, same schema).
class Reason(TypedDict):
    """One feature's contribution to a score."""

    feature: Annotated[str, Field(description="Feature name in the Feast feature service.")]
    value: Annotated[float | str | None, Field(description="The customer's value of the feature.")]
    effect: Annotated[
        float, Field(description="SHAP contribution (log-odds for probabilities, log-value for value).")
    ]
    text: Annotated[
        str, Field(description="The reason in words, e.g. 'last purchase 143 days ago (raises churn risk)'.")
    ]


class ProbabilityTag(BaseModel):
    probability: float = Field(ge=0, le=1, description="Calibrated probability.")
    tier: str = Field(description="Tier from thresholds chosen on validation data, e.g. high, medium or low.")
    horizon_days: int | None = Field(None, description="Days ahead the probability covers.")
    reasons: list[Reason] = Field(description="Top contributing features, strongest first.")


class ValueTag(BaseModel):
    predicted_value: float = Field(
        ge=0, description="Expected gross purchase value over the model's horizon."
    )
    tier: str = Field(
        description="Value tier from thresholds chosen on validation data, e.g. high, medium, low."
    )
    horizon_days: int | None = Field(None, description="Days ahead the predicted value covers.")
    reasons: list[Reason] = Field(description="Top contributing features, strongest first.")


class RealtimeTags(BaseModel):
    """Tags from the events of the last hours (``POST /v1/events`` or the stream), fresh to the second."""

    visited_today: bool = Field(description="An event today (UTC).")
    purchased_today: bool = Field(description="A purchase today (UTC).")
    cart_abandoned: bool = Field(
        description="An add-to-cart in the last `cart_abandon_hours` hours with no purchase since."
    )
    last_seen: datetime | None = Field(None, description="Time of the last event received in real time.")


TAG_TYPES: dict[str, type[BaseModel]] = {"classifier": ProbabilityTag, "regressor": ValueTag}
"""The tag a model of each catalogue kind answers with."""


def _customer_tags_model() -> type[BaseModel]:
    """``CustomerTags``: one optional tag field per catalogue tag model, between the fixed fields."""
    fields: dict[str, Any] = {
        "customer_id": (str, Field(description="The customer id as requested.")),
        "found": (bool, Field(description="False when the online store has no features for this id.")),
        "oneid": (
            str | None,
            Field(
                None,
                description="The customer's OneID when the request named another identifier "
                "(`email:…`, `phone:…`, a merged-away OneID).",
            ),
        ),
        "error": (
            str | None,
            Field(None, description="Why no tags were produced (e.g. 'unknown customer')."),
        ),
    }
    for entry in catalogue.tag_models():
        assert entry.response_field is not None
        tag_type = TAG_TYPES[entry.kind]
        if entry.outputs:  # the catalogue's extra fields of this model's tag (e.g. the value's range)
            extra = {o.name: (o.type | None, Field(None, description=o.description)) for o in entry.outputs}
            tag_type = create_model(f"{tag_type.__name__}_{entry.name}", __base__=tag_type, **extra)
        fields[entry.response_field] = (
            tag_type | None,
            Field(None, description=f"{entry.description} (model '{entry.name}'; see horizon_days)."),
        )
    fields |= {
        "lifecycle_stage": (str | None, Field(None, description="new, active, at_risk, dormant or churned.")),
        "rfm_segment": (
            str | None,
            Field(None, description="RFM segment name, e.g. 'champions', 'at risk'."),
        ),
        "rfm_score": (
            str | None,
            Field(None, description="Recency, frequency and monetary scores 1-5, e.g. '545'."),
        ),
        "model_versions": (
            dict[str, str],
            Field(default_factory=dict, description="Registered model versions used."),
        ),
        "unavailable": (
            dict[str, str],
            Field(
                default_factory=dict,
                description="Tag fields left empty because their model is not served, with the reason.",
            ),
        ),
        "features_timestamp": (
            datetime | None,
            Field(None, description="Snapshot time of the batch features used."),
        ),
        "realtime": (
            RealtimeTags | None,
            Field(None, description="Real-time tags from the latest events."),
        ),
        "features_timestamps": (
            dict[str, datetime | None],
            Field(
                default_factory=dict,
                description="How old the served features are, per source: 'batch' (the snapshot) and "
                "'realtime' (the last pushed event; null when none).",
            ),
        ),
    }
    return create_model(
        "CustomerTags", __doc__="Predictive tags of one customer, or why there are none.", **fields
    )


CustomerTags = _customer_tags_model()


class TagsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_ids: list[CustomerId] = Field(
        min_length=1, max_length=MAX_IDS, description=f"Customer ids to tag: 1 to {MAX_IDS:,} per request."
    )


class LookalikeRequest(BaseModel):
    """A seed audience and what to return: exactly one of ``size`` and ``fraction``."""

    # "Exactly one of size / fraction" for schema readers (a null counts as absent).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["size"], "properties": {"size": {"type": "integer"}}},
                {"required": ["fraction"], "properties": {"fraction": {"type": "number"}}},
            ]
        },
    )

    seed_ids: list[CustomerId] = Field(
        min_length=1, max_length=1_000_000, description="Seed customers (at least 100 recommended)."
    )
    size: int | None = Field(None, ge=1, description="Audience size as a count (give size or fraction).")
    # An inclusive lower bound: BentoML publishes OpenAPI 3.0, where a numeric exclusiveMinimum is invalid.
    fraction: float | None = Field(
        None, ge=1e-6, le=0.5, description="Audience size as a fraction of the population (e.g. 0.01 = 1 %)."
    )
    exclude_seed: bool = Field(True, description="Leave the seed customers out of the audience.")
    exclude_ids: list[CustomerId] = Field(
        default_factory=list,
        max_length=1_000_000,
        description="Ids never to return, e.g. a campaign's buyers.",
    )
    min_score: float | None = Field(None, description="Drop audience members scoring below this.")
    method: Literal["auto", "similarity", "classifier"] = Field(
        "auto",
        description="auto: similarity for small seeds, a seed-vs-population classifier for large ones.",
    )

    @model_validator(mode="after")
    def _one_size(self) -> LookalikeRequest:
        if (self.size is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'size' or 'fraction'")
        return self


class AudienceMember(BaseModel):
    customer_id: str
    score: float = Field(description="Similarity to the seed (higher is more alike).")


class LookalikeResponse(BaseModel):
    audience: list[AudienceMember] = Field(description="Ranked audience, most similar first.")
    method: str = Field(description="Scoring method used: similarity or classifier.")
    model_version: str = Field(description="Registered version of the lookalike model.")
    seed_size: int = Field(description="Seed ids received.")
    seed_known: int = Field(description="Seed ids found in the population.")
    unknown_seed_ids: list[str] = Field(description="Seed ids not in the population (ignored).")
    population: int = Field(description="Customers the model knows.")
    requested: int = Field(description="Audience size asked for.")
    returned: int = Field(description="Audience size returned (fewer when min_score cuts it).")
    warnings: list[str] = Field(default_factory=list, description="E.g. a seed smaller than 100 customers.")


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str = "champion"
    feature_service: str | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Headline metrics of the version's run."
    )
    run_id: str | None = None
    card: Card | None = Field(
        None,
        description="Quality card: a grade from the realised figures (`portrait monitor`), or from the test "
        "figures before any horizon has passed, the actual rate per tier and the date of the evidence.",
    )


class ModelDetail(BaseModel):
    """One model: what is served, how good it is, and what the monitoring found."""

    model: ModelInfo
    evaluations: list[Evaluation] = Field(
        default_factory=list, description="Realised performance per version and scoring date."
    )
    pending: list[Pending] = Field(default_factory=list, description="Scorings whose horizon has not passed.")
    drift: DriftSummary | None = Field(None, description="The latest drift check of the champion.")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    profile: str = Field(description="Deployment profile: local or production.")


class Health(BaseModel):
    ready: bool
    reasons: list[str] = Field(default_factory=list, description="Why the service is not ready.")
    models: dict[str, str] = Field(default_factory=dict, description="Loaded model versions.")


class EventIn(BaseModel):
    """A behavioural event as the contract's events input; checked item by item with the batch rules."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented, never coerced

    event_id: str | None = Field(
        None, max_length=256, description="Idempotency key; default: a hash of the other fields."
    )
    customer_id: str | None = Field(None, description="Customer who acted.")
    ts: str | None = Field(None, description="Event time, ISO 8601 (naive = UTC).")
    event_type: str | None = Field(None, description="view, add_to_cart, search, app_open or campaign_click.")
    category: str | None = Field(None, description="Product category, if any.")
    session_id: str | None = Field(None, description="Session identifier.")


class TransactionIn(BaseModel):
    """An order line as the contract's transactions input; idempotent by ``order_id`` and ``line``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented, never coerced

    order_id: str | None = Field(None, description="Order identifier.")
    line: int = Field(0, ge=0, description="Line number within the order (0 for a one-line order).")
    customer_id: str | None = Field(None, description="Customer who ordered.")
    ts: str | None = Field(None, description="Order time, ISO 8601 (naive = UTC).")
    amount: float | None = Field(None, description="Line value; <= 0 on returns.")
    quantity: int | None = Field(None, description="Units; <= 0 on returns.")
    category: str | None = Field(None, description="Product category.")
    is_return: bool = Field(False, description="True for a return line.")


MAX_EVENTS = 10_000


class EventsRequest(BaseModel):
    """At least one item, in ``events`` or ``transactions``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["events"], "properties": {"events": {"minItems": 1}}},
                {"required": ["transactions"], "properties": {"transactions": {"minItems": 1}}},
            ]
        },
    )

    events: list[EventIn] = Field(default_factory=list, max_length=MAX_EVENTS)
    transactions: list[TransactionIn] = Field(default_factory=list, max_length=MAX_EVENTS)

    @model_validator(mode="after")
    def _something(self) -> EventsRequest:
        if not self.events and not self.transactions:
            raise ValueError("send at least one item in 'events' or 'transactions'")
        return self


class RejectedItem(BaseModel):
    index: int = Field(description="Position in `events`, or in `transactions` when `kind` is transaction.")
    kind: Literal["event", "transaction"]
    reason: str = Field(description="The batch validator's reason, e.g. unknown_customer, future_timestamp.")


class EventsResponse(BaseModel):
    accepted: int = Field(description="New items, stored durably and applied to the real-time features.")
    duplicates: int = Field(
        description="Items already received (same event id / order line): not counted again."
    )
    rejected: list[RejectedItem] = Field(default_factory=list, description="Items refused, with the reason.")
    customers_updated: int = Field(
        description="Customers with new items, whose real-time features were pushed (those of duplicates are "
        "pushed again, not counted)."
    )


# ---- audiences (serving/audiences.py) ----------------------------------------------------------------------
from portrait.audience.filters import Filter as AudienceFilter  # noqa: E402
from portrait.audience.store import AudienceRecord  # noqa: E402

MAX_AUDIENCE_IDS = 1_000_000


class AudienceLookalike(BaseModel):
    """A lookalike audience: a seed (ids, or a stored audience) and a size (count, fraction or preset)."""

    model_config = ConfigDict(extra="forbid")

    seed_ids: list[CustomerId] | None = Field(
        None, max_length=MAX_AUDIENCE_IDS, description="Seed customers."
    )
    seed_audience_id: str | None = Field(None, max_length=64, description="A stored audience as the seed.")
    size: int | None = Field(None, ge=1, description="Audience size as a count.")
    fraction: float | None = Field(
        None, ge=1e-6, le=0.5, description="Audience size as a fraction of the population."
    )
    preset: Literal["narrow", "balanced", "broad"] | None = Field(
        None, description="narrow, balanced or broad: about 2.5 %, 5 % or 10 % of the population."
    )
    exclude_ids: list[CustomerId] = Field(default_factory=list, max_length=MAX_AUDIENCE_IDS)
    exclude_seed: bool = True
    min_score: float | None = None
    method: Literal["auto", "similarity", "classifier"] = "auto"

    @model_validator(mode="after")
    def _one_each(self) -> AudienceLookalike:
        if (self.seed_ids is None) == (self.seed_audience_id is None):
            raise ValueError("give exactly one of 'seed_ids' or 'seed_audience_id'")
        if sum(x is not None for x in (self.size, self.fraction, self.preset)) != 1:
            raise ValueError("give exactly one of 'size', 'fraction' or 'preset'")
        return self


class AudienceCreate(BaseModel):
    """A new audience: from a filter over tags and features, from an id list, or from a lookalike request."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="A name for people.")
    filter: AudienceFilter | None = Field(
        None,
        description='A filter, e.g. {"and": [{"field": "churn_tier", "op": "eq", "value": "high"}, '
        '{"field": "spend_365d", "op": ">=", "value": 100}]}; ops: eq ne lt lte gt gte between in not_in '
        "is_null not_null; combine with and / or / not.",
    )
    customer_ids: list[CustomerId] | None = Field(None, min_length=1, max_length=MAX_AUDIENCE_IDS)
    lookalike: AudienceLookalike | None = None
    dry_run: bool = Field(False, description="Only the size and its split by tier; nothing is stored.")
    control_share: float | None = Field(
        None, ge=0.001, le=0.999, description="Hold out this share of every tier as control."
    )
    stratify_by: str | None = Field(
        None, max_length=128, description="Tier column of the holdout's strata (default conversion_tier)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> AudienceCreate:
        if sum(x is not None for x in (self.filter, self.customer_ids, self.lookalike)) != 1:
            raise ValueError("give exactly one of 'filter', 'customer_ids' or 'lookalike'")
        return self


class AudienceDryRun(BaseModel):
    dry_run: Literal[True] = True
    size: int = Field(description="Customers the audience would hold.")
    population: int = Field(description="Customers in the population.")
    by_tier: dict[str, dict[str, int]] = Field(description="Tier column -> tier -> customers.")
    warnings: list[str] = Field(default_factory=list)


class AudienceList(BaseModel):
    audiences: list[AudienceRecord]


class AudiencePlanRequest(BaseModel):
    """A seed to plan a lookalike for (ids, or a stored audience)."""

    model_config = ConfigDict(extra="forbid")

    seed_ids: list[CustomerId] | None = Field(None, max_length=MAX_AUDIENCE_IDS)
    seed_audience_id: str | None = Field(None, max_length=64)
    exclude_ids: list[CustomerId] = Field(default_factory=list, max_length=MAX_AUDIENCE_IDS)

    @model_validator(mode="after")
    def _one_seed(self) -> AudiencePlanRequest:
        if (self.seed_ids is None) == (self.seed_audience_id is None):
            raise ValueError("give exactly one of 'seed_ids' or 'seed_audience_id'")
        return self


class ReachPointOut(BaseModel):
    size: int = Field(description="Audience size.")
    fraction: float = Field(description="Size as a share of the population.")
    expected_precision: float = Field(description="Expected share of the audience that is like the seed.")
    expected_recall: float = Field(description="Expected share of all seed-like customers reached.")
    expected_similar: float = Field(description="Expected seed-like customers in the audience.")
    precision_low: float = Field(0.0, description="Lower end of the 90% interval of expected_precision.")
    precision_high: float = Field(1.0, description="Upper end of the 90% interval of expected_precision.")


class AudiencePlan(BaseModel):
    """A lookalike plan: the reach curve and the presets to create with."""

    seed_size: int
    seed_known: int
    unknown_seed_ids: list[str] = Field(description="Seed ids the model does not know (first 100).")
    population: int
    candidates: int = Field(description="Customers outside the seed and the exclusions.")
    estimated_similar: float = Field(description="Estimated seed-like customers among the candidates.")
    method: str = Field(description="The ranking the curve describes (create with this method).")
    model_version: str
    curve: list[ReachPointOut]
    presets: dict[str, ReachPointOut]
    warnings: list[str] = Field(default_factory=list)
    note: str = Field("", description="The assumption behind expected precision (overlapping segments).")


class HoldoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    control_share: float = Field(
        ge=0.001, le=0.999, description="Share of every stratum held out as control."
    )
    stratify_by: str | None = Field(
        None, max_length=128, description="Tier column (default conversion_tier)."
    )


class MembersRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_ids: list[CustomerId] = Field(min_length=1, max_length=MAX_AUDIENCE_IDS)


class OutcomesRequest(BaseModel):
    """Who converted after the campaign (any id; non-members are counted and ignored)."""

    model_config = ConfigDict(extra="forbid")

    converted_ids: list[CustomerId] = Field(max_length=MAX_AUDIENCE_IDS)
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="Confidence level of the intervals.")

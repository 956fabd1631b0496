"""The Portrait HTTP service (BentoML 1.4 ``@bentoml.service``).

Endpoints (all under ``/v1``):

* ``POST /v1/tags``      -- predictive tags for 1..``max_ids_per_request`` customer ids (at most 10,000;
  scope ``tags:read``); batchable, so concurrent single-customer calls are served together by BentoML's
  adaptive batching;
* ``POST /v1/lookalike`` -- a lookalike audience for a seed list (scope ``lookalike:create``), audited;
* ``GET  /v1/models``    -- the champion versions being served and their headline metrics (any valid key);
* ``GET  /v1/health``    -- readiness with reasons; BentoML's ``/readyz`` uses the same check;
  ``/livez`` and Prometheus ``/metrics`` come from BentoML. The Swagger UI is at ``/`` (``/docs`` redirects
  there), the OpenAPI schema at ``/docs.json``.

``tags`` and ``lookalike`` are BentoML APIs; the GET routes are FastAPI class views on the app of
``serving.web``, mounted with ``@bentoml.asgi_app`` (which also brings API-key auth through FastAPI's security
schemes and JSON error bodies). Auth of the two BentoML APIs and the reasons in BentoML's 503 bodies are the
ASGI middlewares of ``serving.middleware``; what the service takes from BentoML's internals is in
``serving.bentoml_internals``.

Start with ``portrait serve`` or ``bentoml serve serving.service:Portrait``. Settings come from the
``PORTRAIT_*`` environment (``PORTRAIT_HOME`` selects the workspace).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import bentoml
from fastapi import HTTPException
from pydantic import Field
from starlette.responses import JSONResponse

from features import realtime
from features.landing import Landing
from features.validate import ContractError
from portrait import audit, catalogue, predlog
from portrait.audit import AuditUnavailable
from portrait.backends import BackendUnavailable
from portrait.lookalike import ExpansionRequest, LookalikeError
from portrait.quiet import quiet_third_party
from portrait.settings import get_settings
from serving import bentoml_internals
from serving.auditing import AuditMiddleware, unavailable_response
from serving.metrics import tag_metrics
from serving.middleware import (
    ApiKeyMiddleware,
    ContractMiddleware,
    LoopbackOnlyWithoutKeysMiddleware,
    RequestLimitsMiddleware,
    ServiceUnavailableMiddleware,
)
from serving.schemas import (
    MAX_IDS,
    CustomerId,
    CustomerTags,
    EventsRequest,
    EventsResponse,
    Health,
    LookalikeRequest,
    LookalikeResponse,
    ModelDetail,
    ModelsResponse,
    RejectedItem,
)
from serving.tagger import ServingError, Tagger, Unavailable, freeze_startup_objects
from serving.web import (
    EVENTS_ROUTE,
    HEALTH_ROUTE,
    LOOKALIKE_ROUTE,
    MODELS_ROUTE,
    TAGS_ROUTE,
    caller_of,
    create_app,
    log_client_error,
    require_key,
)

logger = logging.getLogger(__name__)

quiet_third_party()  # filters only, before the BentoML models below are built (see portrait.quiet)

TagsOutput = bentoml_internals.json_list_output(CustomerTags)
"""``/v1/tags``' output: BentoML's list output (same JSON, same OpenAPI schema), declared media type and
pydantic's JSON encoder."""

web = create_app()
"""The FastAPI app mounted on the service (BentoML takes it at class decoration): the GET routes below."""


async def _audit_unavailable(request: Any, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuditUnavailable)
    logger.error("503 on %s %s: %s", request.method, request.url.path, exc.message)
    return unavailable_response(exc.message)


web.add_exception_handler(AuditUnavailable, _audit_unavailable)

LOG_FLUSH_ROWS = 5_000
LOG_FLUSH_S = 60.0
CARDS_TTL_S = 60.0
"""How long /v1/models reuses the quality cards (they change when `portrait monitor` or training runs)."""

BATCH_MAX_LATENCY_MS = 10_000
"""How long a ``/v1/tags`` call may wait in BentoML's adaptive-batching queue before a 503 "overloaded".

BentoML refuses a queued call once its wait (plus the estimated time of the batch ahead) passes this bound,
and a batch of 1,000 customers takes about 1 s here: at 30 ms most concurrent calls were refused (see
benchmarks/RESULTS.md, Serving). Single calls are not delayed by it: the dispatcher only waits to fill a
batch as long as its learned average wait."""


def within_request_limit(service: Any, request: Any) -> str | None:
    """Why a ``/v1/tags`` request is refused for its size (``settings.max_ids_per_request``), or None.

    Checked per request before batching; :data:`~serving.schemas.MAX_IDS` stays the hard bound (the input
    schema's and the batch size's).
    """
    limit = min(service.settings.max_ids_per_request, MAX_IDS)
    n = len(request.customer_ids)
    if n > limit:
        return f"at most {limit} customer ids per request (max_ids_per_request), got {n}"
    return None


def _json_error(ctx: bentoml.Context, status: int, body: dict[str, Any]) -> JSONResponse:
    ctx.response.status_code = status  # BentoML sets the response's status from the context
    return JSONResponse(body, status_code=status)


@bentoml.service(
    name="portrait",
    traffic={"timeout": 60},
    workers=1,
    http={"host": "127.0.0.1", "port": 3000},
)
@bentoml.asgi_app(web)
class Portrait:
    """Predictive tags and lookalike audiences from the champion models and the Feast online store."""

    def __init__(self) -> None:
        self.settings = get_settings()
        if self.settings.max_ids_per_request > MAX_IDS:
            logger.warning(
                "max_ids_per_request=%d is above the service's bound: requests are limited to %d ids",
                self.settings.max_ids_per_request,
                MAX_IDS,
            )
        bentoml_internals.log_client_errors_as_warnings()
        self.tagger = Tagger(self.settings)
        self.metrics = tag_metrics()
        if self.tagger.load_errors:
            logger.warning("not ready: %s", "; ".join(self.tagger.load_errors.values()))
        freeze_startup_objects()

    def __is_ready__(self) -> bool:
        return not self.tagger.readiness()

    @bentoml_internals.strict_json_input(check=within_request_limit)
    @bentoml.api(
        route=TAGS_ROUTE,
        batchable=True,
        max_batch_size=MAX_IDS,
        max_latency_ms=BATCH_MAX_LATENCY_MS,
        output_spec=TagsOutput,
    )
    def tags(
        self,
        customer_ids: Annotated[
            list[CustomerId],
            Field(min_length=1, max_length=MAX_IDS, description=f"1 to {MAX_IDS:,} customer ids."),
        ],
    ) -> list[CustomerTags]:
        """Churn risk, purchase propensity, predicted value, lifecycle stage and RFM segment, with reasons.

        Unknown customers come back with ``found: false`` and an ``error``; the rest of the request is
        answered. Requires scope ``tags:read`` when API keys are configured.
        """
        try:
            tags = self.tagger.tags(customer_ids)
        except Unavailable as exc:  # the 503's body gets the current readiness (ServiceUnavailableMiddleware)
            raise bentoml.exceptions.ServiceUnavailable(exc.message) from None
        self.metrics.observe(tags)
        if self.settings.prediction_log_sample > 0:
            self._log_served(tags)
        return tags

    def _log_served(self, tags: list[Any]) -> None:
        """Buffer a ``prediction_log_sample`` share of the answered tags for the prediction log; written in
        blocks of :data:`LOG_FLUSH_ROWS` rows or every :data:`LOG_FLUSH_S` seconds (one file per block)."""
        import random

        share = self.settings.prediction_log_sample
        rows = []
        for t in tags:
            if not t.found or (share < 1 and random.random() >= share):  # noqa: S311 - sampling
                continue
            row: dict[str, Any] = {
                "customer_id": t.oneid or t.customer_id,
                "features_timestamp": t.features_timestamp,
            }
            for entry in catalogue.tag_models():
                tag = getattr(t, entry.response_field or "", None)
                if tag is None:
                    continue
                prefix = entry.response_field
                score = f"{prefix}_{'predicted' if entry.kind == 'regressor' else 'probability'}"
                row[score] = getattr(tag, entry.score_field)
                row[f"{prefix}_tier"] = tag.tier
                row[f"{prefix}_model_version"] = t.model_versions.get(entry.name, "")
            rows.append(row)
        buffer = self.__dict__.setdefault("_served_log", [])
        buffer.extend(rows)
        started = self.__dict__.setdefault("_served_log_since", time.monotonic())
        if len(buffer) >= LOG_FLUSH_ROWS or (buffer and time.monotonic() - started >= LOG_FLUSH_S):
            import pandas as pd

            frame = pd.DataFrame(buffer)
            self._served_log, self._served_log_since = [], time.monotonic()
            try:
                predlog.log_tags(self.settings, frame, source="served", share=1.0)
            except Exception as exc:  # noqa: BLE001 - the log must never fail a request
                logger.warning("served tags not logged (%d rows): %s", len(frame), exc)

    @bentoml_internals.strict_json_input()
    @bentoml.api(route=LOOKALIKE_ROUTE, input_spec=LookalikeRequest, output_spec=LookalikeResponse)
    def lookalike(self, ctx: bentoml.Context, **request: object) -> LookalikeResponse | JSONResponse:
        """Rank the customers most like a seed audience (scope ``lookalike:create``); every call is audited."""
        req = LookalikeRequest(**request)  # type: ignore[arg-type]
        started = time.perf_counter()
        try:
            result = self.tagger.expand(
                ExpansionRequest(
                    seed_ids=req.seed_ids,
                    size=req.size,
                    fraction=req.fraction,
                    exclude_seed=req.exclude_seed,
                    exclude_ids=req.exclude_ids,
                    min_score=req.min_score,
                    method=req.method,
                )
            )
        except LookalikeError as exc:
            message = f"{exc.code}: {exc}"
            log_client_error(400, "POST", LOOKALIKE_ROUTE, message)
            return _json_error(ctx, 400, {"error": message})
        except Unavailable as exc:
            reasons = self.tagger.readiness()
            if exc.message not in reasons:  # e.g. a lookalike model never trained (not required)
                reasons.append(exc.message)
            logger.warning("503 on %s: %s", LOOKALIKE_ROUTE, "; ".join(reasons))
            return _json_error(ctx, 503, {"error": "service unavailable", "reasons": reasons})
        version = self.tagger.versions.get("lookalike", "")
        try:
            self._audit(ctx, req, result.returned, result.method, version, time.perf_counter() - started)
        except AuditUnavailable as exc:  # an audience nobody can trace is not handed out
            logger.error("503 on %s: %s", LOOKALIKE_ROUTE, exc.message)
            return _json_error(ctx, 503, {"error": audit.UNAVAILABLE, "reasons": [exc.message]})
        return LookalikeResponse(
            audience=[{"customer_id": c, "score": s} for c, s in result.audience],
            method=result.method,
            model_version=version,
            seed_size=result.seed_size,
            seed_known=result.seed_known,
            unknown_seed_ids=result.unknown_seed_ids,
            population=result.population,
            requested=result.requested,
            returned=result.returned,
            warnings=result.warnings,
        )

    def _audit(
        self,
        ctx: bentoml.Context,
        req: LookalikeRequest,
        returned: int,
        method: str,
        version: str,
        seconds: float,
    ) -> None:
        """One record of the audit trail (:mod:`portrait.audit`; the HTTP layer adds caller, client, request
        id and action); raises :class:`~portrait.audit.AuditUnavailable` when it cannot be written."""
        line: dict[str, Any] = (
            {} if audit.CURRENT.get() else {"caller": caller_of(ctx.request.headers, self.settings)}
        )
        line |= {
            "operation": "lookalike",
            "seed_size": len(req.seed_ids),
            "audience_size": returned,
            "requested": req.size if req.size is not None else req.fraction,
            "exclude_ids": len(req.exclude_ids),
            "method": method,
            "model": "lookalike",
            "model_version": version,
            "ms": round(seconds * 1000, 1),
        }
        audit.record(self.settings.audit_log, line)

    @web.head(MODELS_ROUTE, dependencies=[require_key(MODELS_ROUTE)], include_in_schema=False)
    @web.get(
        MODELS_ROUTE,
        dependencies=[require_key(MODELS_ROUTE)],
        operation_id="portrait__models",
        tags=[bentoml_internals.APP_TAG_NAME],
    )
    def models(self) -> ModelsResponse:
        """The champion model versions being served, their feature services, headline metrics and quality
        cards."""
        cards = self._cards()
        infos = [
            info.model_copy(update={"card": cards.get(info.name)}) for info in self.tagger.infos.values()
        ]
        return ModelsResponse(models=infos, profile=self.settings.profile)

    @web.get(
        MODELS_ROUTE + "/{name}",
        dependencies=[require_key(MODELS_ROUTE)],
        operation_id="portrait__model",
        tags=[bentoml_internals.APP_TAG_NAME],
        responses={404: {"description": "No such model is served."}},
    )
    def model(self, name: str) -> ModelDetail:
        """One served model: version, metrics, quality card, realised performance (`portrait monitor`) and
        the latest drift check."""
        info = self.tagger.infos.get(name)
        if info is None:
            known = ", ".join(self.tagger.infos) or "none"
            raise HTTPException(404, f"no served model {name!r}; served: {known}")
        report = predlog.read_report(self.settings)
        return ModelDetail(
            model=info.model_copy(update={"card": self._cards().get(name)}),
            evaluations=[e for e in report.evaluations if e.model == name],
            pending=[p for p in report.pending if p.model == name],
            drift=report.drift.get(name),
        )

    def _cards(self) -> dict[str, Any]:
        """The champions' quality cards, read at most every :data:`CARDS_TTL_S` seconds."""
        cached = getattr(self, "_cards_cache", None)
        if cached is not None and time.monotonic() - cached[0] < CARDS_TTL_S:
            return cached[1]
        try:
            cards = predlog.quality_cards(self.settings)
        except Exception as exc:  # noqa: BLE001 - cards are informative; /v1/models answers without them
            logger.warning("quality cards unavailable: %s", exc)
            cards = {}
        self._cards_cache = (time.monotonic(), cards)
        return cards

    @web.post(
        EVENTS_ROUTE,
        dependencies=[require_key(EVENTS_ROUTE)],
        operation_id="portrait__events",
        tags=[bentoml_internals.APP_TAG_NAME],
        responses={503: {"description": "The online store or the landing zone is unavailable."}},
    )
    def events(self, body: EventsRequest) -> EventsResponse:
        """Behavioural events and / or transactions as they happen (scope ``events:write``).

        Each item is checked with the batch validator's rules; rejected items come back with their reason,
        accepted ones are stored durably (the next batch build includes them) and update the customers'
        real-time features and tags at once. Idempotent: an item already received (same ``event_id`` /
        ``order_id`` and ``line``) is counted as a duplicate, not again.
        """
        try:
            store = self.tagger.open_store()
            result = realtime.ingest(
                self.settings,
                [e.model_dump(exclude_none=True) for e in body.events],
                [t.model_dump(exclude_none=True) for t in body.transactions],
                store=store,
                landing=self._landing(),
            )
        except ContractError as exc:  # a batch the validator cannot read at all
            log_client_error(400, "POST", EVENTS_ROUTE, str(exc))
            raise HTTPException(400, str(exc)) from None
        except (Unavailable, BackendUnavailable, OSError) as exc:
            message = exc.message if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"
            logger.warning("503 on %s: %s", EVENTS_ROUTE, message)
            raise HTTPException(503, message) from None
        n_events = len(body.events)
        return EventsResponse(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[
                RejectedItem(
                    index=i if i < n_events else i - n_events,
                    kind="event" if i < n_events else "transaction",
                    reason=reason,
                )
                for i, reason in result.rejected
            ],
            customers_updated=len(result.customers),
        )

    def _landing(self) -> Landing:
        if getattr(self, "_landing_zone", None) is None:
            self._landing_zone = Landing(self.settings)
        return self._landing_zone

    @web.head(HEALTH_ROUTE, include_in_schema=False)
    @web.get(HEALTH_ROUTE, operation_id="portrait__health", tags=[bentoml_internals.APP_TAG_NAME])
    def health(self) -> Health:
        """Readiness with reasons (the same check as ``/readyz``), and the loaded model versions."""
        reasons = self.tagger.readiness()
        return Health(ready=not reasons, reasons=reasons, models=self.tagger.versions)


def add_middlewares(service: Any) -> None:
    """The ASGI middlewares every Portrait service carries (also ``benchmarks/portrait_variant.py``'s), the
    outermost first: the loopback-only rule without keys, the API keys of BentoML's APIs, the request
    limits (before anything parses a body), the reasons in 503s, and the contract (documentation routes, JSON
    bodies for Starlette's own 404 / 405)."""
    service.add_asgi_middleware(AuditMiddleware)  # outermost: request ids, and it sees every refusal
    service.add_asgi_middleware(LoopbackOnlyWithoutKeysMiddleware)
    service.add_asgi_middleware(ApiKeyMiddleware)
    service.add_asgi_middleware(RequestLimitsMiddleware)
    service.add_asgi_middleware(ServiceUnavailableMiddleware, overload_routes=(TAGS_ROUTE,))
    service.add_asgi_middleware(ContractMiddleware, bento=service)


add_middlewares(Portrait)

__all__ = ["BATCH_MAX_LATENCY_MS", "Portrait", "ServingError", "TagsOutput", "web"]

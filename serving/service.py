"""The Portrait HTTP service (BentoML 1.4 ``@bentoml.service``).

Endpoints (all under ``/v1``):

* ``POST /v1/tags``      -- predictive tags for 1..10,000 customer ids (scope ``tags:read``); batchable, so
  concurrent single-customer calls are served together by BentoML's adaptive batching;
* ``POST /v1/lookalike`` -- a lookalike audience for a seed list (scope ``lookalike:create``), audited;
* ``GET  /v1/models``    -- the champion versions being served and their headline metrics;
* ``GET  /v1/health``    -- readiness with reasons; BentoML's ``/readyz`` uses the same check;
  ``/livez`` and Prometheus ``/metrics`` come from BentoML.

Start with ``portrait serve`` or ``bentoml serve serving.service:Portrait``. Settings come from the
``PORTRAIT_*`` environment (``PORTRAIT_HOME`` selects the workspace).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import bentoml
from _bentoml_sdk.io_models import IORootModel  # BentoML's base of list outputs (no public alias)
from pydantic import Field, TypeAdapter

from portrait.lookalike import ExpansionRequest, LookalikeError
from portrait.settings import get_settings
from serving.middleware import PortraitMiddleware, caller_of, service_state
from serving.schemas import (
    MAX_IDS,
    CustomerId,
    CustomerTags,
    Health,
    LookalikeRequest,
    LookalikeResponse,
    ModelsResponse,
)
from serving.tagger import ServingError, Tagger, Unavailable, freeze_startup_objects

logger = logging.getLogger(__name__)


class BadRequest(bentoml.exceptions.InvalidArgument):
    """400 with the message shown to the caller."""


def _unavailable(message: str) -> bentoml.exceptions.ServiceUnavailable:
    service_state.last_error = message  # the middleware puts the reason into the 503 body
    return bentoml.exceptions.ServiceUnavailable(message)


_TAGS_JSON = TypeAdapter(list[CustomerTags])


class TagsOutput(IORootModel[list[CustomerTags]]):
    """``/v1/tags``' output: BentoML's list output with two costs removed (same JSON, same OpenAPI schema).

    * The media type is declared: otherwise BentoML rebuilds the list's JSON schema on every response just
      to find it (~3 ms per single-customer call, more than the scoring itself).
    * pydantic's own JSON encoder writes the body: BentoML's base class dumps the list to Python objects
      twice and runs ``json.dumps`` (~45 ms of a 1,000-customer response).
    """

    media_type: ClassVar[str | None] = "application/json"

    def model_dump(self, **kwargs: Any) -> Any:
        # BentoML calls model_dump() only to check whether an output is already str/bytes.
        return self.root if not kwargs else super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        return _TAGS_JSON.dump_json(self.root).decode()


BATCH_MAX_LATENCY_MS = 10_000
"""How long a ``/v1/tags`` call may wait in BentoML's adaptive-batching queue before a 503 "overloaded".

BentoML refuses a queued call once its wait (plus the estimated time of the batch ahead) passes this bound,
and a batch of 1,000 customers takes about 1 s here: at 30 ms most concurrent calls were refused (see
benchmarks/RESULTS.md, Serving). Single calls are not delayed by it: the dispatcher only waits to fill a
batch as long as its learned average wait."""


@bentoml.service(
    name="portrait",
    traffic={"timeout": 60},
    workers=1,
    http={"host": "127.0.0.1", "port": 3000},
)
class Portrait:
    """Predictive tags and lookalike audiences from the champion models and the Feast online store."""

    def __init__(self) -> None:
        self.settings = get_settings()
        self.tagger = Tagger(self.settings)
        service_state.settings = self.settings
        service_state.tagger = self.tagger
        if self.tagger.load_errors:
            logger.warning("not ready: %s", "; ".join(self.tagger.load_errors.values()))
        freeze_startup_objects()

    def __is_ready__(self) -> bool:
        reasons = self.tagger.readiness()
        service_state.not_ready = reasons
        return not reasons

    @bentoml.api(
        route="/v1/tags",
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
            return self.tagger.tags(customer_ids)
        except Unavailable as exc:
            raise _unavailable(exc.message) from None

    @bentoml.api(route="/v1/lookalike", input_spec=LookalikeRequest)
    def lookalike(self, ctx: bentoml.Context, **request: object) -> LookalikeResponse:
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
            raise BadRequest(f"{exc.code}: {exc}") from None
        except Unavailable as exc:
            raise _unavailable(exc.message) from None
        version = self.tagger.versions.get("lookalike", "")
        self._audit(ctx, req, result.returned, result.method, version, time.perf_counter() - started)
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
        line = {
            "at": datetime.now(UTC).isoformat(),
            "caller": caller_of(ctx.request.headers, self.settings),
            "seed_size": len(req.seed_ids),
            "audience_size": returned,
            "requested": req.size if req.size is not None else req.fraction,
            "exclude_ids": len(req.exclude_ids),
            "method": method,
            "model": "lookalike",
            "model_version": version,
            "ms": round(seconds * 1000, 1),
        }
        path = self.settings.audit_log
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    @bentoml.api(route="/v1/models")
    def models(self) -> ModelsResponse:
        """The champion model versions being served, their feature services and headline metrics."""
        return ModelsResponse(models=list(self.tagger.infos.values()), profile=self.settings.profile)

    @bentoml.api(route="/v1/health")
    def health(self) -> Health:
        """Readiness with reasons (the same check as ``/readyz``), and the loaded model versions."""
        reasons = self.tagger.readiness()
        return Health(ready=not reasons, reasons=reasons, models=self.tagger.versions)


Portrait.add_asgi_middleware(PortraitMiddleware)

__all__ = ["Portrait", "ServingError"]

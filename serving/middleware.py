"""The two ASGI middlewares of the service, for what only BentoML's own routes need and BentoML has no hook for.

The service's other HTTP extras live in its FastAPI app (``serving.web``: GET routes, their auth through
FastAPI's security dependencies, JSON error bodies). ``POST /v1/tags`` (adaptive batching) and
``POST /v1/lookalike`` are BentoML APIs, and ``/readyz`` a BentoML system route: BentoML routes them before
any mounted app, so FastAPI's dependencies and exception handlers never see them. Both middlewares get the
live service instance from ``bentoml.get_current_service()`` (one per worker process): no state of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio.to_thread
import bentoml
from starlette.responses import JSONResponse

from serving.web import LOOKALIKE_ROUTE, ROUTE_SCOPES, TAGS_ROUTE, check_key, key_from, log_client_error

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
ServiceProvider = Callable[[], Any]

API_ROUTES = (TAGS_ROUTE, LOOKALIKE_ROUTE)
"""The BentoML API routes that need an API key (the FastAPI routes check theirs with a dependency)."""
OVERLOADED = (
    "overloaded: the request waited longer than the batching queue allows; retry after the Retry-After "
    "delay or send fewer concurrent requests"
)
RETRY_AFTER_S = 1
STARTING = "service is starting"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _current(service: ServiceProvider) -> Any | None:
    try:
        return service()
    except bentoml.exceptions.BentoMLException:  # not instantiated yet (start-up)
        return None


class ApiKeyMiddleware:
    """API-key auth of BentoML's API routes (``/v1/tags``: ``tags:read``; ``/v1/lookalike``:
    ``lookalike:create``); nothing else.

    Why a middleware: these routes are BentoML APIs, not FastAPI routes (``/v1/tags`` must stay one for
    BentoML's adaptive batching), and BentoML 1.4 has no per-API auth hook; an API function could only
    check the key after BentoML has parsed (and, for ``/v1/tags``, batched) the request, and BentoML answers
    a 401/403 raised there with a fixed body that cannot say which scope is missing. The check is
    ``serving.web.check_key``, the one the FastAPI routes' dependency calls.
    """

    def __init__(self, app: App, service: ServiceProvider = bentoml.get_current_service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in API_ROUTES:
            await self.app(scope, receive, send)
            return
        current = _current(self.service)
        if current is None:  # cannot check yet: refuse rather than let the request through
            await JSONResponse({"error": "service unavailable", "reasons": [STARTING]}, 503)(
                scope, receive, send
            )
            return
        api_keys = current.settings.api_keys
        if api_keys:
            headers = _headers(scope)
            key = key_from(headers.get("authorization"), headers.get("x-api-key"))
            denied = check_key(key, api_keys, ROUTE_SCOPES[path], path)
            if denied is not None:
                log_client_error(denied.status, scope.get("method", ""), path, denied.message)
                response = JSONResponse(
                    {"error": denied.message}, denied.status, headers=denied.headers or None
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ServiceUnavailableMiddleware:
    """Gives BentoML's 503s a JSON body with the reason: the service's current readiness, or an overload.

    Why a middleware: BentoML answers every 5xx of an API call with one fixed body and a failed ``/readyz``
    with fixed text. A ``/v1/tags`` call gets a 503 either because the service is not ready (the API raises
    ``ServiceUnavailable``) or because BentoML's adaptive-batching queue refused it (it waited longer than
    ``max_latency_ms``); both come back as the same 503. So for a 503 on the ``overload_routes`` or
    ``/readyz``, the Tagger's ``readiness()`` is asked now: reasons -> ``{"error": "service unavailable",
    "reasons": [...]}``; none on a batching route -> the queue's refusal: ``{"error": "service overloaded"}``
    with ``Retry-After``. Other responses pass through untouched (no buffering).
    """

    def __init__(
        self,
        app: App,
        overload_routes: Iterable[str] = (TAGS_ROUTE,),
        readiness_routes: Iterable[str] = ("/readyz",),
        service: ServiceProvider = bentoml.get_current_service,
    ) -> None:
        self.app = app
        self.overload_routes = frozenset(overload_routes)
        self.routes = self.overload_routes | frozenset(readiness_routes)
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in self.routes:
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def send_or_hold(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                held["start"] = message
                return
            if "start" not in held:
                await send(message)
                return
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                status, body, headers = await self._reason(path)
                await JSONResponse(body, status, headers=headers)(scope, receive, send)

        await self.app(scope, receive, send_or_hold)

    async def _reason(self, path: str) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        current = _current(self.service)
        if current is None:
            return 503, {"error": "service unavailable", "reasons": [STARTING]}, None
        reasons = await anyio.to_thread.run_sync(current.tagger.readiness)
        if reasons:
            logger.warning("503 on %s: not ready: %s", path, "; ".join(reasons))
            return 503, {"error": "service unavailable", "reasons": reasons}, None
        if path in self.overload_routes:
            logger.warning("503 on %s: the batching queue refused the request (overloaded)", path)
            return (
                503,
                {"error": "service overloaded", "reasons": [OVERLOADED]},
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        return 503, {"error": "service unavailable", "reasons": ["service is not ready"]}, None

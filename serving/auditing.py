"""The HTTP side of the audit trail (:mod:`portrait.audit`): request ids, the request's context, refusals.

:class:`AuditMiddleware` is the outermost ASGI middleware of the service. For a request to a route that needs
an API key (``serving.web.ROUTE_SCOPES``) it

* gives the request an id: the caller's ``X-Request-ID`` when sane, else a new one; every response of such a
  route carries it back in ``X-Request-ID``;
* sets :data:`portrait.audit.CURRENT` (caller fingerprint, client address, request id, action), so that the
  records the endpoints write (``/v1/lookalike``, the audience routes) carry them;
* refuses a *privileged* call (:func:`privileged`) that its key allows with a 503 ``{"error": "audit log
  unavailable", ...}`` before it does anything while the audit log is known to be failing (a call the key
  does not allow gets its 401 / 403 as always);
* records every refused attempt (401 / 403, outcome ``denied <status>``) and every privileged call that failed
  (any other 4xx or 5xx, outcome ``error``) before the response starts; a refusal or an error is answered all
  the same when its record cannot be written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import bentoml
from starlette.responses import JSONResponse

from portrait import audit
from serving.web import LOOKALIKE_ROUTE, ROUTE_SCOPES, check_key, key_from, path_pattern, request_headers

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "X-Request-ID"


def _pattern(route: str) -> tuple[str | None, re.Pattern[str]]:
    method, _, path = route.rpartition(" ")
    return (method or None), path_pattern(path)


_ROUTES = [(_pattern(route), route) for route in ROUTE_SCOPES]


def route_of(method: str, path: str) -> str | None:
    """The :data:`~serving.web.ROUTE_SCOPES` entry a request matches (None: a route that needs no key)."""
    for (want, pattern), route in _ROUTES:
        if (want is None or want == method) and pattern.match(path):
            return route
    return None


def privileged(method: str, route: str) -> bool:
    """Whether an allowed call of ``route`` is recorded: a lookalike, or an audience write or export."""
    if route == LOOKALIKE_ROUTE:
        return True
    if not route.startswith(("POST /v1/audiences", "DELETE /v1/audiences", "GET /v1/audiences/")):
        return False
    return method != "GET" or route.endswith("/export")


def unavailable_response(message: str) -> JSONResponse:
    """The 503 of a privileged call whose audit record cannot be written."""
    return JSONResponse({"error": audit.UNAVAILABLE, "reasons": [message]}, 503)


class AuditMiddleware:
    """See the module docstring. Gets the live service (its settings) from ``bentoml.get_current_service``."""

    def __init__(self, app: App, service: Callable[[], Any] = bentoml.get_current_service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", ""), scope.get("path", "")
        route = route_of(method, path)
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            settings = self.service().settings
        except bentoml.exceptions.BentoMLException:  # start-up: the next middleware answers 503
            await self.app(scope, receive, send)
            return
        headers = request_headers(scope)
        rid = audit.request_id(headers.get("x-request-id"))
        rid_header = (REQUEST_ID_HEADER.lower().encode(), rid.encode())
        client = scope.get("client")
        is_privileged = privileged(method, route)
        key = key_from(headers.get("authorization"), headers.get("x-api-key"))
        # Only a call that would be let through is refused for the audit log: a refusal stays a refusal.
        is_privileged = (
            is_privileged and check_key(key, settings.api_keys, ROUTE_SCOPES[route], route) is None
        )
        try:
            who = audit.caller(key, settings)
        except audit.AuditUnavailable as exc:
            who = "unknown (no audit key)"
            if is_privileged:
                await self._refuse(exc.message, rid_header, scope, receive, send)
                return
        ctx = audit.RequestContext(
            caller=who,
            client=f"{client[0]}:{client[1]}" if client else "unknown",
            request_id=rid,
            action=f"{method} {path}",
        )
        if is_privileged:
            failing = audit.problem(settings.audit_log)
            if failing is not None:
                await self._refuse(failing, rid_header, scope, receive, send)
                return

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), rid_header]}
                outcome = None
                if status in (401, 403):
                    outcome = audit.denied(status)
                elif status >= 400 and is_privileged and not ctx.recorded:
                    outcome = audit.ERROR
                if outcome is not None:
                    await self._record(settings, ctx, route, outcome, status)
            await send(message)

        token = audit.CURRENT.set(ctx)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            audit.CURRENT.reset(token)

    async def _refuse(
        self, message: str, rid_header: tuple[bytes, bytes], scope: Scope, receive: Receive, send: Send
    ) -> None:
        logger.warning("503 on %s %s: %s", scope.get("method", ""), scope.get("path", ""), message)
        response = unavailable_response(message)
        response.raw_headers.append(rid_header)
        await response(scope, receive, send)

    async def _record(
        self, settings: Any, ctx: audit.RequestContext, route: str, outcome: str, status: int
    ) -> None:
        entry = {**audit.context_fields(ctx), "scope": ROUTE_SCOPES.get(route)}
        try:
            await anyio.to_thread.run_sync(
                lambda: audit.record(settings.audit_log, entry, outcome=outcome, status=status)
            )
        except audit.AuditUnavailable as exc:  # the refusal or the error is answered all the same
            logger.error("%s %s: %s", ctx.action, outcome, exc.message)


__all__ = ["REQUEST_ID_HEADER", "AuditMiddleware", "privileged", "route_of", "unavailable_response"]

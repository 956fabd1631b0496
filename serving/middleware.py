"""The two ASGI middlewares of the service, for what only BentoML's own routes need and BentoML has no hook for.

The service's other HTTP extras live in its FastAPI app (``serving.web``: GET routes, their auth through
FastAPI's security dependencies, JSON error bodies). ``POST /v1/tags`` (adaptive batching) and
``POST /v1/lookalike`` are BentoML APIs, and ``/readyz`` a BentoML system route: BentoML routes them before
any mounted app, so FastAPI's dependencies and exception handlers never see them. Both middlewares get the
live service instance from ``bentoml.get_current_service()`` (one per worker process): no state of their own.

Three more sit in front of every route, BentoML's and FastAPI's alike (issue 22):

* :class:`LoopbackOnlyWithoutKeysMiddleware` -- no API keys configured means auth is off, which is only safe
  on a loopback address: a request that reached the service through any other address is refused (403),
  however the server was started (``portrait serve`` refuses to start that way; ``bentoml serve --host``,
  a BentoML config or a container do not), unless ``allow_insecure_bind``.
* :class:`RequestLimitsMiddleware` -- explicit limits enforced before anything parses the request: header
  size (431), body size (413, read no further than the limit), a JSON content type on the JSON routes (415)
  and JSON nesting depth (400).
* :class:`ContractMiddleware` -- ``/docs.json`` is BentoML's OpenAPI document made to say what the routes
  answer (``serving.web.contract_spec``), ``/`` the Swagger UI without BentoML's third-party tag manager, and
  Starlette's plain-text 404 / 405 become JSON error bodies.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio.to_thread
import bentoml
import numpy as np
from starlette.responses import HTMLResponse, JSONResponse

from serving import bentoml_internals
from serving.web import (
    HTTP_METHODS,
    LOOKALIKE_ROUTE,
    ROUTE_SCOPES,
    TAGS_ROUTE,
    check_key,
    contract_spec,
    key_from,
    log_client_error,
    path_pattern,
    request_headers,
)

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
            headers = request_headers(scope)
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


# ---- the HTTP boundary (issue 22) ------------------------------------------------------------------------

LOCAL_ONLY = (
    "auth is off (no API keys configured), so this service answers only on a loopback address: configure "
    "PORTRAIT_API_KEYS, or start it with `portrait serve --insecure` to accept this deliberately"
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose body is parsed: every route taking one takes JSON."""
BULK_ROUTES = re.compile(r"^/v1/(lookalike|audiences|audiences/plan|audiences/[^/]+/(members|outcomes))$")
"""Routes that take customer-id lists: their body may be up to ``max_bulk_request_bytes``."""
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _non_loopback(host: str) -> bool:
    """Whether ``host`` (the address a request came in on) is an IP address other than a loopback one.

    A server socket always gives an IP address; a name (``testserver`` of an in-process test client) or no
    address (a Unix socket) is not a network interface.
    """
    try:
        return not ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, message: str, **extra: Any
) -> None:
    log_client_error(status, scope.get("method", ""), scope.get("path", ""), message)
    await JSONResponse({"error": message, **extra}, status)(scope, receive, send)


class LoopbackOnlyWithoutKeysMiddleware:
    """With no API keys configured (auth off), answers only requests that came in on a loopback address.

    The check is on the address each request reached (the ASGI ``server``), so it holds however the server
    was bound (``bentoml serve --host 0.0.0.0``, a BentoML config file, a container's port mapping). With
    ``allow_insecure_bind`` (``portrait serve --insecure``) every request is answered.
    """

    def __init__(self, app: App, service: ServiceProvider = bentoml.get_current_service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "http" or not server or not _non_loopback(str(server[0])):
            await self.app(scope, receive, send)
            return
        current = _current(self.service)
        if current is None:  # start-up: the settings are not known yet
            await JSONResponse({"error": "service unavailable", "reasons": [STARTING]}, 503)(
                scope, receive, send
            )
            return
        settings = current.settings
        if settings.api_keys or settings.allow_insecure_bind:
            await self.app(scope, receive, send)
            return
        await _refuse(scope, receive, send, 403, LOCAL_ONLY)


def json_too_deep(body: bytes, limit: int) -> int | None:
    """The nesting depth of the JSON text ``body`` when it is deeper than ``limit``, else None.

    Linear and without recursion, whatever the input: brackets inside strings are removed with one regular
    expression, the depth is a running sum over what remains.
    """
    if body.count(b"[") + body.count(b"{") <= limit:  # the common case: cannot be deeper
        return None
    brackets = np.frombuffer(_STRING.sub(b"", body).translate(None, _NOT_BRACKET), dtype=np.uint8)
    if brackets.size == 0:
        return None
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1).astype(np.int32)
    depth = int(np.cumsum(steps).max())
    return depth if depth > limit else None


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


class RequestLimitsMiddleware:
    """Limits every request before anything parses it; each refusal is a JSON ``{"error": ...}`` naming the
    limit and its setting.

    * headers larger than ``max_header_bytes`` in all: 431;
    * a body larger than ``max_request_bytes`` (``max_bulk_request_bytes`` on :data:`BULK_ROUTES`): 413, from
      its ``Content-Length`` before reading anything, or as soon as a streamed body passes the limit (never
      read further);
    * on a JSON route (every ``POST`` / ``PUT`` / ``PATCH``): a content type other than JSON: 415; JSON
      nested deeper than ``max_json_depth``: 400. The body read here is handed on as is.
    """

    def __init__(self, app: App, service: ServiceProvider = bentoml.get_current_service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        current = _current(self.service)
        if current is None:
            await self.app(scope, receive, send)  # start-up: ApiKeyMiddleware / BentoML answer
            return
        settings = current.settings
        header_bytes = sum(len(k) + len(v) for k, v in scope.get("headers", ()))
        if header_bytes > settings.max_header_bytes:
            message = f"request headers too large: {header_bytes} bytes, at most {settings.max_header_bytes}"
            await _refuse(scope, receive, send, 431, f"{message} (max_header_bytes)")
            return
        path = scope.get("path", "")
        bulk = BULK_ROUTES.match(path) is not None
        limit = settings.max_bulk_request_bytes if bulk else settings.max_request_bytes
        setting = "max_bulk_request_bytes" if bulk else "max_request_bytes"
        headers = request_headers(scope)
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _refuse(scope, receive, send, 400, f"invalid Content-Length {length[:40]!r}")
                return
            if int(length) > limit:
                message = f"request body too large: {int(length)} bytes, at most {limit} ({setting})"
                await _refuse(scope, receive, send, 413, message)
                return
        if scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        media = _media_type(headers.get("content-type"))
        if media and media != "application/json" and not media.endswith("+json"):
            message = (
                f"unsupported media type {media[:80]!r}: send JSON with 'Content-Type: application/json'"
            )
            await _refuse(scope, receive, send, 415, message)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(
                    scope, receive, send, 413, f"request body too large: over {limit} bytes ({setting})"
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        depth = json_too_deep(body, settings.max_json_depth)
        if depth is not None:
            message = (
                f"JSON nested too deeply: {depth} levels of arrays / objects, at most {settings.max_json_depth} "
                "(max_json_depth)"
            )
            await _refuse(scope, receive, send, 400, message)
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already read ``body`` once, then waits on the client as before."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class ContractMiddleware:
    """Makes every route answer as ``/docs.json`` says, and serves the documentation.

    * ``/docs.json``: the service's OpenAPI document as the routes answer (``serving.web.contract_spec`` of
      BentoML's); ``/``: the Swagger UI page without BentoML's third-party tag-manager script, with a
      Content-Security-Policy that lets it load scripts from the service only. Both built once per process.
    * A plain-text 4xx (Starlette's "Not Found" / "Method Not Allowed" for a path or method no route takes)
      becomes the JSON error body, and every 405's ``Allow`` lists each method documented for the path (a
      FastAPI route answers for its own methods only). Other responses pass through untouched.
    """

    CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"

    def __init__(self, app: App, bento: Any) -> None:
        self.app = app
        self.bento = bento
        self._spec: dict[str, Any] | None = None
        self._spec_body: bytes | None = None
        self._page: str | None = None
        self._methods: list[tuple[re.Pattern[str], list[str]]] = []

    def spec(self) -> dict[str, Any]:
        if self._spec is None:
            self._spec = contract_spec(
                bentoml_internals.openapi_dict(self.bento), bentoml_internals.BENTOML_ERROR_SCHEMAS
            )
            self._spec_body = json.dumps(self._spec).encode()
            for template, item in self._spec["paths"].items():
                methods = sorted(m.upper() for m in item if m in HTTP_METHODS)
                self._methods.append((path_pattern(template), methods))
        return self._spec

    def allowed(self, path: str) -> list[str]:
        self.spec()
        methods = next((m for pattern, m in self._methods if pattern.match(path)), [])
        return sorted({*methods, "HEAD"} if "GET" in methods else set(methods))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if scope.get("method") in ("GET", "HEAD") and path in ("/", "/docs.json"):
            await self._docs(path, scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def send_json_errors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                plain = 400 <= status < 500 and content_type.startswith(b"text/plain")
                if plain or status == 405:
                    held["start"], held["body"], held["plain"] = message, b"", plain
                    return
            if "start" not in held:
                await send(message)
                return
            held["body"] += message.get("body", b"")
            if not message.get("more_body", False):
                status = held["start"]["status"]
                text = held["body"].decode("utf-8", "replace").strip() or "error"
                headers = {"Allow": ", ".join(self.allowed(path))} if status == 405 else None
                if status == 405:
                    text = f"method {scope.get('method')} not allowed on {path}; allowed: {headers['Allow']}"
                else:
                    text = f"{text}: no route {path}" if status == 404 else text
                if held["plain"]:  # FastAPI's own error handler has logged the others
                    log_client_error(status, scope.get("method", ""), path, text)
                await JSONResponse({"error": text}, status, headers=headers)(scope, receive, send)

        await self.app(scope, receive, send_json_errors)

    async def _docs(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.responses import Response

        if path == "/docs.json":
            self.spec()
            await Response(self._spec_body, media_type="application/json")(scope, receive, send)
            return
        if self._page is None:
            self._page = bentoml_internals.swagger_page()
        await HTMLResponse(self._page, headers={"Content-Security-Policy": self.CSP})(scope, receive, send)

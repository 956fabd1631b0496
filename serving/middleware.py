"""ASGI middleware in front of the BentoML app: API-key scopes, malformed JSON and 503 reasons.

BentoML answers 401/403 and 5xx with generic bodies; the tag system needs to know *why*. This
middleware (one per worker process) therefore:

* checks ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` against ``settings.api_keys`` (key ->
  scopes) for the ``/v1`` routes: no or unknown key -> 401, key without the route's scope -> 403;
* rejects a body that is not valid JSON on ``POST /v1/...`` with a 400 that says so;
* replaces the body of any 503 (an API call or ``/readyz``) with the reason the service is not ready.

With no API keys configured, auth is off (the local default; the service binds to 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from portrait.settings import Settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ROUTE_SCOPES: dict[str, str | None] = {
    "/v1/tags": "tags:read",
    "/v1/lookalike": "lookalike:create",
    "/v1/models": None,  # any valid key
}


@dataclass
class ServiceState:
    """What the service shares with the middleware inside one worker process."""

    settings: Settings | None = None
    tagger: Any = None
    not_ready: list[str] = field(default_factory=list)
    last_error: str | None = None

    def reasons(self) -> list[str]:
        if self.tagger is not None:
            current = self.tagger.readiness()
            if current:
                return current
        return [self.last_error] if self.last_error else self.not_ready or ["service is starting"]


service_state = ServiceState()
OVERLOAD_MARKER = b"overloaded"
"""What BentoML's 503 says when a request waited in the adaptive-batching queue past ``max_latency_ms``."""
OVERLOADED = (
    "overloaded: the request waited longer than the batching queue allows; retry after the Retry-After "
    "delay or send fewer concurrent requests"
)
RETRY_AFTER_S = 1
GET_ROUTES = ("/v1/models", "/v1/health")


def _constant_body(body: bytes) -> Receive:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _key_from(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


def caller_of(headers: Mapping[str, str], settings: Settings) -> str:
    """Who called, for the audit log: a fingerprint of the API key (never the key itself)."""
    key = _key_from({k.lower(): v for k, v in headers.items()})
    if not key:
        return "anonymous (auth disabled)" if not settings.api_keys else "anonymous"
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


async def _json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class PortraitMiddleware:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path in GET_ROUTES and scope.get("method") in ("GET", "HEAD"):
            # BentoML APIs are POST endpoints; these read-only ones are also offered as GET.
            scope = dict(
                scope,
                method="POST",
                headers=[
                    *[
                        (k, v)
                        for k, v in scope.get("headers", [])
                        if k.lower() not in (b"content-type", b"content-length")
                    ],
                    (b"content-type", b"application/json"),
                    (b"content-length", b"2"),
                ],
            )
            receive = _constant_body(b"{}")
        if path in ROUTE_SCOPES:
            denied = self._authorize(scope, path)
            if denied:
                await _json(send, denied[0], denied[1])
                return
            if scope.get("method") == "POST":
                body, more = b"", True
                while more:
                    message = await receive()
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                try:
                    json.loads(body or b"null")
                except ValueError as exc:
                    await _json(send, 400, {"error": f"malformed JSON body: {exc}"})
                    return
                replayed = False

                async def replay() -> dict[str, Any]:
                    nonlocal replayed
                    if replayed:
                        return await receive()
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}

                receive = replay
        await self.app(scope, receive, self._rewrite_503(send))

    def _authorize(self, scope: Scope, path: str) -> tuple[int, dict[str, Any]] | None:
        settings = service_state.settings
        if settings is None or not settings.api_keys:
            return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = _key_from(headers)
        if not key:
            return 401, {"error": "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"}
        scopes = settings.api_keys.get(key)
        if scopes is None:
            return 401, {"error": "unknown API key"}
        needed = ROUTE_SCOPES[path]
        if needed and needed not in scopes:
            return 403, {"error": f"this API key lacks the scope '{needed}' required by {path}"}
        return None

    @staticmethod
    def _rewrite_503(send: Send) -> Send:
        """Give every 503 a JSON body with its reason: overload (retry soon) or not ready (why)."""
        held: dict[str, Any] = {}

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                held["start"], held["body"] = message, b""
                return
            if "start" in held and message["type"] == "http.response.body":
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                if OVERLOAD_MARKER in held["body"]:
                    # BentoML's batching queue refused the request: the service is up but saturated.
                    await _json(
                        send,
                        503,
                        {"error": "service overloaded", "reasons": [OVERLOADED]},
                        headers=[(b"retry-after", str(RETRY_AFTER_S).encode())],
                    )
                    return
                await _json(send, 503, {"error": "service unavailable", "reasons": service_state.reasons()})
                return
            await send(message)

        return wrapped

"""The service's HTTP extras as a FastAPI app: API-key auth, the GET routes' JSON error bodies, ``/docs``.

``serving.service`` mounts the app on the BentoML service with ``@bentoml.asgi_app`` and declares its GET
routes (``/v1/models``, ``/v1/health``) on it as class views, so their handlers get the live service
instance as ``self`` and FastAPI's security schemes (``HTTPBearer``, ``APIKeyHeader``) appear in the service's
OpenAPI (``/docs.json``) next to BentoML's own APIs.

Auth: ``settings.api_keys`` maps each API key to its scopes; a key is sent as ``Authorization: Bearer <key>``
or ``X-API-Key: <key>``. No keys configured: auth is off (the local default; the service binds to
127.0.0.1). :func:`check_key` is the one check: the FastAPI dependency (:func:`require_key`) and the ASGI
middleware guarding BentoML's own API routes (``serving.middleware.ApiKeyMiddleware``) both call it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import bentoml
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from portrait.settings import Settings

logger = logging.getLogger(__name__)

TAGS_ROUTE = "/v1/tags"
LOOKALIKE_ROUTE = "/v1/lookalike"
MODELS_ROUTE = "/v1/models"
HEALTH_ROUTE = "/v1/health"
EVENTS_ROUTE = "/v1/events"
ROUTE_SCOPES: dict[str, str | None] = {
    EVENTS_ROUTE: "events:write",
    TAGS_ROUTE: "tags:read",
    LOOKALIKE_ROUTE: "lookalike:create",
    MODELS_ROUTE: None,  # any valid key
    # /v1/audiences (serving/audiences.py): one key per method and route
    "POST /v1/audiences": "audiences:write",
    "GET /v1/audiences": "audiences:read",
    "POST /v1/audiences/plan": "audiences:write",
    "GET /v1/audiences/{audience_id}": "audiences:read",
    "DELETE /v1/audiences/{audience_id}": "audiences:write",
    "GET /v1/audiences/{audience_id}/export": "audiences:read",
    "GET /v1/audiences/{audience_id}/insight": "audiences:read",
    "GET /v1/audiences/{audience_id}/insight.html": "audiences:read",
    "POST /v1/audiences/{audience_id}/holdout": "audiences:write",
    "POST /v1/audiences/{audience_id}/members": "audiences:write",
    "POST /v1/audiences/{audience_id}/outcomes": "audiences:write",
}
"""The routes that need an API key (when keys are configured) and the scope each needs."""

MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="An API key as a bearer token: `Authorization: Bearer <key>`.",
)
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="APIKeyHeader",
    description="An API key in the `X-API-Key` header.",
)


@dataclass(frozen=True)
class Denied:
    """Why a request may not use a route: its status (401 or 403) and the message for the caller."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def key_from(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key of a request: the bearer token, else the ``X-API-Key`` header."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return x_api_key or None


def check_key(
    key: str | None, api_keys: Mapping[str, Sequence[str]], scope: str | None, route: str
) -> Denied | None:
    """None when ``key`` may use ``route`` (which needs ``scope``; None: any valid key), else why not.

    No keys configured (``api_keys`` empty): auth is off and every request may.
    """
    if not api_keys:
        return None
    if not key:
        return Denied(401, MISSING_KEY, {"WWW-Authenticate": "Bearer"})
    scopes = api_keys.get(key)
    if scopes is None:
        return Denied(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
    if scope and scope not in scopes:
        return Denied(403, f"this API key lacks the scope '{scope}' required by {route}")
    return None


def caller_of(headers: Mapping[str, str], settings: Settings) -> str:
    """Who called, for the audit log: a fingerprint of the API key (never the key itself)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    key = key_from(lowered.get("authorization"), lowered.get("x-api-key"))
    if not key:
        return "anonymous (auth disabled)" if not settings.api_keys else "anonymous"
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def require_key(route: str) -> Any:
    """A FastAPI dependency: the request's API key may use ``route`` (:data:`ROUTE_SCOPES`), else 401/403.

    Declared through FastAPI's security schemes, so the OpenAPI schema documents both ways to send a key.
    """
    scope = ROUTE_SCOPES[route]

    def authorized(
        service: Annotated[Any, Depends(bentoml.get_current_service)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
        header: Annotated[str | None, Security(API_KEY_HEADER)],
    ) -> None:
        key = bearer.credentials.strip() if bearer is not None else header
        denied = check_key(key or None, service.settings.api_keys, scope, route)
        if denied is not None:
            raise HTTPException(denied.status, denied.message, headers=denied.headers or None)

    return Security(authorized)


def log_client_error(status: int, method: str, path: str, message: str) -> None:
    """One line at WARNING for a request refused with a 4xx: the caller's mistake, not the service's."""
    logger.warning("client error %d on %s %s: %s", status, method, path, message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code < 500:
        log_client_error(exc.status_code, request.method, request.url.path, str(exc.detail))
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    summary = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors)
    log_client_error(422, request.method, request.url.path, summary)
    body = {
        "error": f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}: {summary}",
        "detail": jsonable_encoder([{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in errors]),
    }
    return JSONResponse(body, status_code=422)


def add_error_handlers(app: FastAPI) -> None:
    """JSON error bodies ``{"error": ...}`` like BentoML's, and client errors logged as one WARNING line."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


def create_app() -> FastAPI:
    """The app ``serving.service`` mounts at ``/``; the service adds its GET routes as class views.

    FastAPI's own documentation routes are off: BentoML serves the service's Swagger UI at ``/`` and the
    OpenAPI schema (this app's routes included) at ``/docs.json``; ``/docs`` redirects to the UI.
    """
    app = FastAPI(title="portrait", docs_url=None, redoc_url=None, openapi_url=None)
    add_error_handlers(app)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/", status_code=307)

    from serving.audiences import router as audiences  # here: serving.audiences imports this module

    app.include_router(audiences)
    return app

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

import hmac
import json
import logging
import re
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

from portrait import audit
from portrait.settings import Settings
from serving.schemas import ErrorBody

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


def request_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """An ASGI request's headers by lower-case name (the middlewares read them before any framework does)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def path_pattern(template: str) -> re.Pattern[str]:
    """A regular expression matching the paths of a route template (``/v1/audiences/{audience_id}``)."""
    return re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")


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
    scopes = _scopes_of(key, api_keys)
    if scopes is None:
        return Denied(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
    if scope and scope not in scopes:
        return Denied(403, f"this API key lacks the scope '{scope}' required by {route}")
    return None


def _scopes_of(key: str, api_keys: Mapping[str, Sequence[str]]) -> Sequence[str] | None:
    """The scopes of ``key`` (None: not a configured key), comparing it with every configured key in
    constant time (``hmac.compare_digest``), so the time taken does not tell how much of a guess was right."""
    given = key.encode()
    found: Sequence[str] | None = None
    for known, scopes in api_keys.items():
        if hmac.compare_digest(given, known.encode()):
            found = scopes
    return found


def caller_of(headers: Mapping[str, str], settings: Settings) -> str:
    """Who called, for the audit log: a keyed fingerprint of the API key (:func:`portrait.audit.caller`)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return audit.caller(key_from(lowered.get("authorization"), lowered.get("x-api-key")), settings)


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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str, limit: int = 500) -> str:
    """``text`` safe for one log line: control characters escaped (a path or field can hold a newline)."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def log_client_error(status: int, method: str, path: str, message: str) -> None:
    """One line at WARNING for a request refused with a 4xx: the caller's mistake, not the service's."""
    logger.warning(
        "client error %d on %s %s: %s", status, one_line(method, 20), one_line(path), one_line(message)
    )


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


ERROR_RESPONSES: dict[str, str] = {
    "400": "Bad request: malformed or invalid JSON (a BentoML API: the fields in `detail`), JSON nested "
    "deeper than `max_json_depth`, or a domain error (e.g. an unknown seed).",
    "401": "Missing or unknown API key (when API keys are configured).",
    "403": "The API key lacks the route's scope, or auth is off and the request did not come in on a "
    "loopback address.",
    "413": "Request body larger than `max_request_bytes` (`max_bulk_request_bytes` on id-list routes).",
    "415": "A body that is not JSON (`Content-Type: application/json`).",
    "422": "Invalid request (a FastAPI route: the fields in `detail`).",
    "431": "Request headers larger than `max_header_bytes`.",
    "503": "The service is not ready (the `reasons`), or overloaded (`Retry-After`).",
}
"""What every route may answer besides its success, all with :class:`~serving.schemas.ErrorBody`."""
NOT_FOUND = "No such resource (e.g. an unknown audience id or model name)."
SECURED_API_ROUTES = (TAGS_ROUTE, LOOKALIKE_ROUTE)
"""BentoML APIs guarded by ``serving.middleware.ApiKeyMiddleware``: BentoML does not declare their security."""
SECURITY = [{BEARER.scheme_name: []}, {API_KEY_HEADER.scheme_name: []}]
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def contract_spec(spec: dict[str, Any], replaced: Sequence[str] = ()) -> dict[str, Any]:
    """The OpenAPI document made to say what the routes answer (a new dict; ``spec`` is BentoML's).

    * Every error response of every operation is :class:`~serving.schemas.ErrorBody`, and every operation
      declares :data:`ERROR_RESPONSES` (the limits, auth and readiness apply to every route).
    * The BentoML APIs get their security schemes; their undocumented 404 goes, and the error components
      they used (``replaced``, BentoML's) and FastAPI's ``HTTPValidationError`` are dropped when unused.
    """
    import copy

    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            responses = {str(code): answer for code, answer in operation.get("responses", {}).items()}
            if path in SECURED_API_ROUTES:
                operation["security"] = SECURITY
                if "requestBody" in operation:  # BentoML leaves it optional; every API needs its body
                    operation["requestBody"]["required"] = True
                responses.pop("404", None)  # BentoML's generic NotFound: an API route always exists
            for code, answer in responses.items():
                if code[0] in "45":
                    answer["content"] = copy.deepcopy(error_ref)
            for code, description in ERROR_RESPONSES.items():
                responses.setdefault(code, {"description": description, "content": copy.deepcopy(error_ref)})
            if "{" in path:  # a path parameter can name nothing
                responses.setdefault("404", {"description": NOT_FOUND, "content": copy.deepcopy(error_ref)})
            operation["responses"] = dict(sorted(responses.items()))
    used = json.dumps(spec.get("paths", {}))
    for name in (*replaced, "HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}" not in used and name in schemas:
            referenced_elsewhere = f'"#/components/schemas/{name}"' in json.dumps(
                {k: v for k, v in schemas.items() if k != name}
            )
            if not referenced_elsewhere:
                del schemas[name]
    return spec


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

"""The ASGI middlewares on their own (no workspace): API-key auth of BentoML's API routes, and the reasons
in BentoML's 503 bodies -- an overloaded batching queue told apart from a service that is not ready."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import bentoml
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.middleware import OVERLOADED, ApiKeyMiddleware, ServiceUnavailableMiddleware
from serving.web import MISSING_KEY, check_key, key_from


class FakeTagger:
    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        self.calls = 0

    def readiness(self) -> list[str]:
        self.calls += 1
        return list(self.reasons)


def _service(
    reasons: list[str] | None = None, api_keys: dict[str, list[str]] | None = None
) -> SimpleNamespace:
    return SimpleNamespace(
        tagger=FakeTagger(reasons or []), settings=SimpleNamespace(api_keys=api_keys or {})
    )


def _bentoml_like_app(status: int = 503) -> Starlette:
    """Answers the way BentoML does: a 5xx of an API call with its fixed JSON body, /readyz with text."""

    async def api(request):
        if status >= 500:
            body = {"error": "An unexpected error has occurred, please check the server log."}
            return JSONResponse(body, status_code=status)
        return JSONResponse([{"customer_id": "a"}], status_code=status)

    async def readyz(request):
        return PlainTextResponse("Service is not ready because .__is_ready__() returns False.", 503)

    async def other(request):
        return JSONResponse({"error": "other"}, status_code=503)

    return Starlette(
        routes=[
            Route("/v1/tags", api, methods=["POST"]),
            Route("/v1/lookalike", api, methods=["POST"]),
            Route("/readyz", readyz),
            Route("/elsewhere", other),
        ]
    )


def _unavailable(service: SimpleNamespace, status: int = 503) -> TestClient:
    app = ServiceUnavailableMiddleware(_bentoml_like_app(status), service=lambda: service)
    return TestClient(app)


def test_overloaded_queue_gets_its_own_reason_and_retry_after():
    service = _service(reasons=[])  # ready: the 503 is the batching queue's refusal
    response = _unavailable(service).post("/v1/tags", json={"customer_ids": ["a"]})
    assert response.status_code == 503
    assert response.json() == {"error": "service overloaded", "reasons": [OVERLOADED]}
    assert response.headers["retry-after"] == "1"


def test_other_503s_carry_the_readiness_reasons():
    service = _service(reasons=["no champion version of model 'churn' is registered"])
    client = _unavailable(service)
    response = client.post("/v1/tags", json={"customer_ids": ["a"]})
    assert response.status_code == 503
    assert response.json()["reasons"] == ["no champion version of model 'churn' is registered"]
    assert "retry-after" not in response.headers
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "error": "service unavailable",
        "reasons": ["no champion version of model 'churn' is registered"],
    }


def test_the_reasons_are_the_current_readiness_never_a_stale_error():
    service = _service(reasons=["online store unavailable: ConnectionError"])
    client = _unavailable(service)
    assert client.post("/v1/tags", json={}).json()["reasons"] == ["online store unavailable: ConnectionError"]
    service.tagger.reasons = []  # the store is back: a later 503 is not blamed on the old outage
    later = client.post("/v1/tags", json={})
    assert later.json()["error"] == "service overloaded"
    assert service.tagger.calls == 2


def test_other_responses_pass_through_untouched():
    service = _service(reasons=["down"])
    ok = _unavailable(service, status=200).post("/v1/tags", json={})
    assert ok.status_code == 200 and ok.json() == [{"customer_id": "a"}]
    client = _unavailable(service)
    assert client.get("/elsewhere").json() == {"error": "other"}  # not a route it watches
    assert service.tagger.calls == 0


def test_a_service_still_starting_is_said_so():
    def starting():
        raise bentoml.exceptions.BentoMLException("service isn't instantiated yet")

    app = ServiceUnavailableMiddleware(_bentoml_like_app(), service=starting)
    assert TestClient(app).get("/readyz").json()["reasons"] == ["service is starting"]
    auth = ApiKeyMiddleware(_bentoml_like_app(200), service=starting)
    assert TestClient(auth).post("/v1/tags", json={}).status_code == 503  # fails closed


KEYS = {"tag-key": ["tags:read"], "ad-key": ["lookalike:create"]}


def _auth(api_keys: dict[str, list[str]]) -> TestClient:
    service = _service(api_keys=api_keys)
    return TestClient(ApiKeyMiddleware(_bentoml_like_app(200), service=lambda: service))


def test_api_keys_guard_bentomls_api_routes_by_scope():
    c = _auth(KEYS)
    missing = c.post("/v1/tags", json={})
    assert missing.status_code == 401 and missing.json() == {"error": MISSING_KEY}
    assert missing.headers["www-authenticate"] == "Bearer"
    assert c.post("/v1/tags", json={}, headers={"Authorization": "Bearer wrong"}).json() == {
        "error": "unknown API key"
    }
    assert c.post("/v1/tags", json={}, headers={"Authorization": "Bearer tag-key"}).status_code == 200
    assert c.post("/v1/tags", json={}, headers={"X-API-Key": "tag-key"}).status_code == 200
    denied = c.post("/v1/tags", json={}, headers={"X-API-Key": "ad-key"})
    assert denied.status_code == 403 and "tags:read" in denied.json()["error"]
    assert c.post("/v1/lookalike", json={}, headers={"X-API-Key": "tag-key"}).status_code == 403
    assert c.post("/v1/lookalike", json={}, headers={"X-API-Key": "ad-key"}).status_code == 200
    assert c.get("/readyz").status_code == 503  # other routes are not its business (BentoML's answer here)


def test_no_keys_configured_means_auth_off():
    assert _auth({}).post("/v1/tags", json={}).status_code == 200


def test_refusals_are_logged_as_one_warning_line(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.DEBUG):
        _auth(KEYS).post("/v1/tags", json={}, headers={"X-API-Key": "ad-key"})
    refusals = [r for r in caplog.records if "client error 403" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING and refusals[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "key"),
    [
        ("Bearer k1", None, "k1"),
        ("bearer   k1 ", None, "k1"),
        ("Basic abc", "k2", "k2"),
        ("Bearer ", None, None),
        (None, "k2", "k2"),
        (None, "", None),
        ("Bearer k1", "k2", "k1"),
    ],
)
def test_key_from_headers(authorization, x_api_key, key):
    assert key_from(authorization, x_api_key) == key


def test_check_key():
    assert check_key(None, {}, "tags:read", "/v1/tags") is None
    assert check_key(None, KEYS, "tags:read", "/v1/tags").status == 401
    assert check_key("nope", KEYS, None, "/v1/models").status == 401
    assert check_key("ad-key", KEYS, None, "/v1/models") is None  # any valid key
    assert check_key("ad-key", KEYS, "tags:read", "/v1/tags").status == 403

"""The FastAPI app on its own (no workspace): auth dependency, JSON error bodies, the logs of client errors
(a 422 included: the service's own GET routes take no input, so a route is added here), ``/docs``."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import bentoml
import pytest
from starlette.testclient import TestClient

from serving.web import MISSING_KEY, MODELS_ROUTE, create_app, require_key

KEYS = {"tag-key": ["tags:read"], "ad-key": ["lookalike:create"]}


@pytest.fixture
def client() -> TestClient:
    app = create_app()
    service = SimpleNamespace(settings=SimpleNamespace(api_keys=dict(KEYS)))
    app.dependency_overrides[bentoml.get_current_service] = lambda: service

    @app.get(MODELS_ROUTE, dependencies=[require_key(MODELS_ROUTE)])
    def models() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/count")
    def count(n: int) -> dict[str, int]:
        return {"n": n}

    client = TestClient(app)
    client.service = service  # type: ignore[attr-defined]
    return client


def test_any_valid_key_may_read_the_models(client: TestClient):
    assert client.get(MODELS_ROUTE, headers={"X-API-Key": "ad-key"}).json() == {"ok": "yes"}
    assert client.get(MODELS_ROUTE, headers={"Authorization": "Bearer tag-key"}).status_code == 200
    missing = client.get(MODELS_ROUTE)
    assert missing.status_code == 401 and missing.json() == {"error": MISSING_KEY}
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.get(MODELS_ROUTE, headers={"Authorization": "Bearer nope"}).json() == {
        "error": "unknown API key"
    }
    client.service.settings.api_keys = {}  # type: ignore[attr-defined]
    assert client.get(MODELS_ROUTE).status_code == 200  # no keys configured: auth off


def test_client_errors_get_json_bodies_and_one_warning_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.DEBUG):
        unauthorized = client.get(MODELS_ROUTE)
        invalid = client.get("/count", params={"n": "many"})
        not_allowed = client.post("/count")
    assert unauthorized.status_code == 401
    assert invalid.status_code == 422
    body = invalid.json()
    assert body["error"].startswith("1 validation error: query.n: Input should be a valid integer")
    assert body["detail"] == [{"type": "int_parsing", "loc": ["query", "n"], "msg": body["detail"][0]["msg"]}]
    assert not_allowed.status_code == 405 and not_allowed.json() == {"error": "Method Not Allowed"}
    refusals = [r for r in caplog.records if r.getMessage().startswith("client error")]
    assert [r.getMessage().split(" on ")[0] for r in refusals] == [
        "client error 401",
        "client error 422",
        "client error 405",
    ]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in refusals)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


def test_docs_redirects_to_the_swagger_ui(client: TestClient):
    response = client.get("/docs", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/"

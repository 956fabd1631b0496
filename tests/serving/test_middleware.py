"""The middleware's 503 bodies: an overloaded batching queue is told apart from a service that is not ready."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.middleware import OVERLOADED, PortraitMiddleware, service_state


def _app(message: str) -> PortraitMiddleware:
    async def refuse(request):  # what BentoML answers when its batching queue gives up on a call
        return PlainTextResponse(message, status_code=503)

    return PortraitMiddleware(Starlette(routes=[Route("/v1/tags", refuse, methods=["POST"])]))


def test_overloaded_queue_gets_its_own_reason_and_retry_after(monkeypatch):
    monkeypatch.setattr(service_state, "not_ready", ["the online store is down"])
    response = TestClient(_app("process is overloaded")).post("/v1/tags", json={"customer_ids": ["a"]})
    assert response.status_code == 503
    assert response.json() == {"error": "service overloaded", "reasons": [OVERLOADED]}
    assert response.headers["retry-after"] == "1"


def test_other_503s_carry_the_readiness_reasons(monkeypatch):
    monkeypatch.setattr(service_state, "tagger", None)
    monkeypatch.setattr(service_state, "last_error", None)
    monkeypatch.setattr(service_state, "not_ready", ["no champion version of model 'churn' is registered"])
    response = TestClient(_app("service unavailable")).post("/v1/tags", json={"customer_ids": ["a"]})
    assert response.status_code == 503
    assert response.json()["reasons"] == ["no champion version of model 'churn' is registered"]
    assert "retry-after" not in response.headers

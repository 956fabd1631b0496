"""The HTTP service: in-process (to_asgi + TestClient) and a real `bentoml serve` subprocess."""

from __future__ import annotations

import json
import logging

import httpx
import mlflow
import numpy as np
import pytest

from portrait.registry import connect
from serving.process import ServiceProcess
from tests.serving.conftest import SNAPSHOT, offline_features

KNOWN = ["C0000001", "C0000002", "C0000003", "C0000010"]


def test_tags_for_known_and_unknown_customers(client):
    r = client.post("/v1/tags", json={"customer_ids": [*KNOWN[:2], "nobody"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [b["customer_id"] for b in body] == [*KNOWN[:2], "nobody"]
    first = body[0]
    assert first["found"] is True
    assert 0 <= first["churn"]["probability"] <= 1 and first["churn"]["tier"] in {"high", "medium", "low"}
    assert 0 <= first["conversion"]["probability"] <= 1
    assert first["value"]["predicted_value"] >= 0
    assert first["lifecycle_stage"] in {"new", "active", "at_risk", "dormant", "churned"}
    assert first["rfm_segment"] and len(first["rfm_score"]) == 3
    assert set(first["model_versions"]) == {"churn", "conversion", "clv"}
    assert first["features_timestamp"].startswith(SNAPSHOT.date().isoformat())
    assert all(r["text"] for r in first["churn"]["reasons"])
    assert body[2] == {**body[2], "found": False} and "unknown customer" in body[2]["error"]


def test_tags_match_offline_predictions(client, served):
    connect(served)
    offline = offline_features(served, KNOWN)
    api = {b["customer_id"]: b for b in client.post("/v1/tags", json={"customer_ids": KNOWN}).json()}
    for name, key in (("churn", "probability"), ("conversion", "probability"), ("clv", "predicted_value")):
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion").unwrap_python_model()
        expected = model.score(offline)
        got = np.array([api[c]["value" if name == "clv" else name][key] for c in KNOWN])
        np.testing.assert_allclose(
            got, np.maximum(expected, 0) if name == "clv" else expected, rtol=1e-6, atol=1e-9
        )


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "malformed JSON"),
        (json.dumps({"customer_ids": []}).encode(), 400, "at least 1"),
        (json.dumps({"customer_ids": "C0000001"}).encode(), 400, "valid array"),
        (json.dumps({"customer_ids": [1, 2]}).encode(), 400, "string"),
        (json.dumps({"ids": ["C0000001"]}).encode(), 400, "customer_ids"),
        (json.dumps({"customer_ids": [f"C{i}" for i in range(10_001)]}).encode(), 400, "at most 10000"),
    ],
)
def test_bad_tag_requests_get_a_400_naming_the_problem(client, body, status, needle):
    r = client.post("/v1/tags", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.text


def test_lookalike_request_and_errors(client, served):
    seed = [f"C{i:07d}" for i in range(1, 201)]
    r = client.post(
        "/v1/lookalike", json={"seed_ids": [*seed, "ghost"], "size": 100, "exclude_ids": ["C0000300"]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [m["customer_id"] for m in body["audience"]]
    assert len(ids) == 100 and body["returned"] == 100
    assert not set(ids) & set(seed) and "C0000300" not in ids
    assert body["unknown_seed_ids"] == ["ghost"] and body["method"] in {"similarity", "classifier"}
    scores = [m["score"] for m in body["audience"]]
    assert scores == sorted(scores, reverse=True)
    bad = [
        ({"seed_ids": [], "size": 10}, "at least 1"),
        ({"seed_ids": ["ghost1", "ghost2"], "size": 10}, "unknown"),
        ({"seed_ids": seed, "size": 0}, "greater than or equal to 1"),
        ({"seed_ids": seed, "size": 10_000_000}, "population"),
        ({"seed_ids": seed}, "exactly one of 'size' or 'fraction'"),
    ]
    for payload, needle in bad:
        r = client.post("/v1/lookalike", json=payload)
        assert r.status_code == 400, (payload, r.text)
        assert needle in r.text, (payload, r.text)
    records = [json.loads(x) for x in served.audit_log.read_text().splitlines()]
    assert [x["outcome"] for x in records[-len(bad) :]] == ["error"] * len(bad)  # failed calls are audited
    allowed = records[-len(bad) - 1]
    assert allowed["seed_size"] == len(seed) + 1 and allowed["outcome"] == "allowed"


def test_models_and_health(client):
    models = client.get("/v1/models").json()
    assert {m["name"] for m in models["models"]} == {"churn", "conversion", "clv", "lookalike"}
    assert all(m["version"] for m in models["models"])
    health = client.get("/v1/health").json()
    assert health["ready"] is True and health["reasons"] == []
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "bentoml_service_request" in metrics.text


def test_openapi_documents_every_field(client):
    spec = client.get("/docs.json").json()
    assert {"/v1/tags", "/v1/lookalike", "/v1/models", "/v1/health"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    tags = schemas["CustomerTags"]["properties"]
    undocumented = [name for name, prop in tags.items() if not prop.get("description")]
    assert undocumented == []


def test_api_keys_and_scopes(client, served, live, monkeypatch):
    keys = {"tag-key": ["tags:read"], "ad-key": ["lookalike:create"]}
    monkeypatch.setattr(live.settings, "api_keys", keys)
    seed = {"seed_ids": [f"C{i:07d}" for i in range(1, 150)], "size": 20}
    before = len(served.audit_log.read_text().splitlines()) if served.audit_log.exists() else 0
    c = client
    ids = {"customer_ids": ["C0000001"]}
    assert c.post("/v1/tags", json=ids).status_code == 401
    assert c.post("/v1/tags", json=ids, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.post("/v1/tags", json=ids, headers={"Authorization": "Bearer tag-key"}).status_code == 200
    denied = c.post("/v1/tags", json=ids, headers={"X-API-Key": "ad-key"})
    assert denied.status_code == 403 and "tags:read" in denied.text
    assert c.post("/v1/lookalike", json=seed, headers={"X-API-Key": "tag-key"}).status_code == 403
    assert c.post("/v1/lookalike", json=seed, headers={"X-API-Key": "ad-key"}).status_code == 200
    assert c.post("/v1/lookalike", json=seed).status_code == 401
    assert c.get("/v1/models", headers={"X-API-Key": "ad-key"}).status_code == 200
    assert c.get("/readyz").status_code == 200  # probes stay open
    records = [json.loads(x) for x in served.audit_log.read_text().splitlines()][before:]
    # every refusal is audited, and the one authorised privileged call (the lookalike) with its details
    assert [(x["action"], x["outcome"]) for x in records] == [
        ("POST /v1/tags", "denied 401"),
        ("POST /v1/tags", "denied 401"),
        ("POST /v1/tags", "denied 403"),
        ("POST /v1/lookalike", "denied 403"),
        ("POST /v1/lookalike", "allowed"),
        ("POST /v1/lookalike", "denied 401"),
    ]
    entry = records[4]
    assert entry["caller"].startswith("key:") and "ad-key" not in entry["caller"]
    assert entry["seed_size"] == 149 and entry["audience_size"] == 20 and entry["model_version"]


def test_missing_champion_makes_readiness_fail_with_a_reason(client, served, live, tmp_path):
    tagger = live.tagger
    empty = served.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'empty.db'}",
            # Every model required: a registry without any champion is otherwise "nothing trained yet".
            "required_models": ["churn", "conversion", "clv", "lookalike"],
        }
    )
    tagger.__init__(empty)  # the live service now sees a registry without champions
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "no champion version of model 'churn'" in ready.text
        r = client.post("/v1/tags", json={"customer_ids": ["C0000001"]})
        assert r.status_code == 503 and "churn" in r.json()["reasons"][0]
        assert r.json()["error"] == "service unavailable" and "retry-after" not in r.headers
        seed = {"seed_ids": [f"C{i:07d}" for i in range(1, 150)], "size": 20}
        expand = client.post("/v1/lookalike", json=seed)
        assert expand.status_code == 503 and any("lookalike" in x for x in expand.json()["reasons"])
        health = client.get("/v1/health")
        assert health.status_code == 200 and health.json()["ready"] is False and health.json()["reasons"]
    finally:
        tagger.__init__(served)
    assert client.get("/readyz").status_code == 200


def test_request_size_limit_comes_from_the_settings(client, live, monkeypatch):
    monkeypatch.setattr(live.settings, "max_ids_per_request", 3)
    r = client.post("/v1/tags", json={"customer_ids": KNOWN})  # 4 ids
    assert r.status_code == 400 and "at most 3 customer ids per request" in r.text, r.text
    assert client.post("/v1/tags", json={"customer_ids": KNOWN[:3]}).status_code == 200


def test_client_errors_are_logged_as_one_warning_line_without_traceback(client, live, monkeypatch, caplog):
    monkeypatch.setattr(live.settings, "api_keys", {"tag-key": ["tags:read"], "ad-key": ["lookalike:create"]})
    tag, ad = {"X-API-Key": "tag-key"}, {"Authorization": "Bearer ad-key"}
    json_type = {"content-type": "application/json"}
    unknown_seed = {"seed_ids": ["ghost1", "ghost2"], "size": 10}
    with caplog.at_level(logging.DEBUG):
        answers = [
            client.post("/v1/tags", content=b"{not json", headers={**tag, **json_type}),
            client.post("/v1/tags", json={"customer_ids": []}, headers=tag),
            client.post("/v1/tags", json={"customer_ids": ["C0000001"]}),
            client.get("/v1/models", headers={"X-API-Key": "wrong"}),
            client.post("/v1/lookalike", json=unknown_seed, headers=tag),
            client.post("/v1/lookalike", json=unknown_seed, headers=ad),
            client.post("/v1/lookalike", json={"seed_ids": ["C0000001"]}, headers=ad),
            client.post("/v1/health"),
        ]
    assert [a.status_code for a in answers] == [400, 400, 401, 401, 403, 400, 400, 405]
    for answer in answers:  # JSON error bodies that name the problem
        assert answer.headers["content-type"].startswith("application/json"), answer.text
        assert answer.json()["error"], answer.text
    assert "unknown" in answers[5].json()["error"]  # the lookalike model's own refusal, not a list
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.stack_info]
    assert "Traceback" not in caplog.text
    refusals = [r for r in caplog.records if r.getMessage().startswith("client error")]
    assert len(refusals) == len(answers) and all(r.levelno == logging.WARNING for r in refusals)
    assert all("\n" not in r.getMessage() for r in refusals)


def test_get_routes_docs_redirect_and_security_schemes(client):
    assert client.get("/v1/models").status_code == 200 and client.get("/v1/health").status_code == 200
    assert client.head("/v1/health").status_code == 200  # probes may use HEAD
    docs = client.get("/docs", follow_redirects=False)
    assert docs.status_code == 307 and docs.headers["location"] == "/"
    ui = client.get("/docs")
    assert ui.status_code == 200 and ui.headers["content-type"].startswith("text/html")
    spec = client.get("/docs.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {**schemes["HTTPBearer"], "type": "http", "scheme": "bearer"}
    assert schemes["APIKeyHeader"] == {
        **schemes["APIKeyHeader"],
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    models = spec["paths"]["/v1/models"]
    assert set(models) == {"get"} and set(spec["paths"]["/v1/health"]) == {"get"}
    assert models["get"]["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]
    assert "security" not in spec["paths"]["/v1/health"]["get"]  # probes stay open
    assert models["get"]["tags"] == spec["paths"]["/v1/tags"]["post"]["tags"]  # one group in the UI
    assert "/docs" not in spec["paths"]


def test_tags_body_is_bentomls_default_encoding(client):
    """``TagsOutput`` writes the body with pydantic; BentoML's own list output would give the same JSON."""
    import bentoml

    from serving.schemas import CustomerTags
    from serving.service import TagsOutput

    r = client.post("/v1/tags", json={"customer_ids": [*KNOWN[:2], "nobody"]})
    assert r.headers["content-type"] == "application/json"

    def listing(self, ids: list[str]) -> list[CustomerTags]: ...

    listing.__annotations__["return"] = list[CustomerTags]  # resolved here, not from the module's names
    default = bentoml.IODescriptor.from_output(listing)
    tags = [CustomerTags.model_validate(item) for item in r.json()]
    assert json.loads(default(tags).model_dump_json()) == r.json()
    assert json.loads(TagsOutput(tags).model_dump_json()) == r.json()


def test_real_bentoml_server_answers_over_http(served, tmp_path):
    with ServiceProcess(served.home, tmp_path / "server.log") as server:
        server.wait_ready(120)
        base = server.url
        r = httpx.post(f"{base}/v1/tags", json={"customer_ids": ["C0000001", "nobody"]}, timeout=30)
        assert r.status_code == 200
        assert [b["found"] for b in r.json()] == [True, False]
        assert httpx.post(f"{base}/v1/tags", content=b"[", timeout=30).status_code == 400

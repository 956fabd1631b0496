"""The HTTP boundary under abuse (issue 22, points 1, 2, 3, 4, 6, 7 and 12), mostly through a real
``bentoml serve`` process (``real_server``, with API keys), where BentoML's own routes and the mounted FastAPI
app are parsed as in production."""

from __future__ import annotations

import concurrent.futures
import logging
import re
import socket

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from features.contract import CUSTOMER_ID_MAX_LENGTH
from features.validate import validate_table
from portrait.cli import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, app
from portrait.settings import API_SCOPES, Settings
from serving.schemas import ErrorBody
from serving.web import ROUTE_SCOPES
from tests.conftest import ts

DEEP = b"[" * 10_000 + b"]" * 10_000
BAD_IDS = {
    "too long": "x" * (CUSTOMER_ID_MAX_LENGTH + 72),
    "NUL": "ab\x00cd",
    "control": "ab\ncd",
    "leading space": " C1",
    "trailing space": "C1 ",
}
ERRORS = ("400", "401", "403", "413", "415", "422", "503")


def json_routes(spec: dict) -> list[str]:
    """Every documented POST route, with a harmless path parameter."""
    return [p.replace("{audience_id}", "nope") for p, item in spec["paths"].items() if "post" in item]


@pytest.fixture(scope="module")
def http(real_server):
    with httpx.Client(base_url=real_server.url, headers=real_server.auth, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def spec(http) -> dict:
    return http.get("/docs.json").json()


# ---- 1: no keys -> loopback only ---------------------------------------------------------------------------


def test_serve_refuses_a_public_address_without_api_keys_unless_insecure(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PORTRAIT_HOME", str(tmp_path))
    monkeypatch.delenv("PORTRAIT_API_KEYS", raising=False)
    refused = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "3999"])  # noqa: S104
    assert refused.exit_code == EXIT_BAD_INPUT and "Traceback" not in refused.output
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "refusing to serve on 0.0.0.0 with no API keys" in lines[0]
    assert "--insecure" in lines[0] and "PORTRAIT_API_KEYS" in lines[0]
    # --insecure gets past the refusal, loudly (then stops at the busy port instead of starting BentoML)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="portrait"):
            insecure = CliRunner().invoke(
                app,
                ["serve", "--host", "0.0.0.0", "--port", str(port), "--insecure"],  # noqa: S104
            )
    assert insecure.exit_code == EXIT_UNAVAILABLE, insecure.output
    assert any(r.levelno == logging.WARNING and "INSECURE" in r.getMessage() for r in caplog.records)


def test_without_keys_the_service_answers_only_on_loopback_however_it_was_bound(api, served, monkeypatch):
    """``bentoml serve --host 0.0.0.0`` bypasses the CLI: the service itself refuses a request that came in
    on another address (the ASGI ``server`` a real socket gives; here the test client's)."""
    import bentoml

    live = bentoml.get_current_service()
    public = TestClient(api.app, base_url="http://192.0.2.2:3000")
    refused = public.get("/v1/health")
    assert refused.status_code == 403 and "only on a loopback address" in refused.json()["error"]
    assert public.post("/v1/tags", json={"customer_ids": ["C1"]}).status_code == 403
    assert TestClient(api.app, base_url="http://127.0.0.1:3000").get("/v1/health").status_code == 200
    monkeypatch.setattr(live.settings, "allow_insecure_bind", True)
    assert public.get("/v1/health").status_code == 200
    monkeypatch.setattr(live.settings, "allow_insecure_bind", False)
    monkeypatch.setattr(live.settings, "api_keys", {"k": ["tags:read"]})
    assert public.get("/v1/health").status_code == 200  # with keys, auth decides


# ---- 2: nesting depth --------------------------------------------------------------------------------------


def test_deeply_nested_json_is_a_400_naming_the_limit_on_every_route(http, spec, real_server):
    routes = json_routes(spec)
    assert {"/v1/tags", "/v1/lookalike", "/v1/events", "/v1/audiences"} <= set(routes)

    def post(route: str) -> httpx.Response:
        return http.post(route, content=DEEP, headers={"content-type": "application/json"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # 32 at once, as in the report
        answers = list(pool.map(post, (routes * 4)[:32]))
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert "nested too deeply" in answer.json()["error"] and "max_json_depth" in answer.json()["error"]
    assert http.post("/v1/tags", json={"customer_ids": ["C1"]}).status_code == 200  # still serving


# ---- 3: body and header size -------------------------------------------------------------------------------


def test_bodies_and_headers_over_the_limits_are_refused_without_reading_them(http, real_server):
    limit = Settings().max_request_bytes
    before = real_server.rss_bytes()

    def stream():  # 200 MB, chunked (no Content-Length): the server must stop reading at the limit
        for _ in range(2_000):
            yield b" " * 100_000

    streamed = http.post("/v1/tags", content=stream(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "max_request_bytes" in streamed.json()["error"]
    declared = http.post("/v1/tags", content=b" " * (limit + 1), headers={"content-type": "application/json"})
    assert declared.status_code == 413 and f"{limit + 1} bytes" in declared.json()["error"]
    grown = real_server.rss_bytes() - before
    assert grown < 4 * limit, f"the server grew by {grown / 1e6:.0f} MB for refused bodies"
    header = http.get("/v1/health", headers={"x-padding": "a" * (1024 * 1024)})
    assert header.status_code == 431 and "max_header_bytes" in header.json()["error"]
    assert http.post("/v1/tags", json={"customer_ids": ["C1"]}).status_code == 200


# ---- 4: content types --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "application/x-www-form-urlencoded", "text/csv"]
)
def test_a_body_that_is_not_json_is_a_415_on_every_post_route(http, spec, content_type):
    for route in json_routes(spec):
        answer = http.post(route, content=b"customer_ids=C1", headers={"content-type": content_type})
        assert answer.status_code == 415, (route, answer.status_code, answer.text)
        assert content_type in answer.json()["error"] and "application/json" in answer.json()["error"]


# ---- 6: the OpenAPI contract -------------------------------------------------------------------------------


def test_every_operation_documents_its_errors_with_one_schema(spec):
    error_ref = "#/components/schemas/ErrorBody"
    assert "googletagmanager" not in str(spec)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert set(ERRORS) <= set(responses), (method, path, sorted(responses))
            for code, answer in responses.items():
                if code[0] in "45":
                    assert answer["content"]["application/json"]["schema"]["$ref"] == error_ref, (path, code)
    assert {"get"} <= set(spec["paths"]["/v1/models"]) and {"get"} <= set(spec["paths"]["/v1/health"])
    for route in ("/v1/tags", "/v1/lookalike"):
        assert spec["paths"][route]["post"]["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]
    assert set(spec["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    lookalike = spec["components"]["schemas"]["LookalikeRequestIODescriptor"]
    assert [sorted(s["required"]) for s in lookalike["oneOf"]] == [["size"], ["fraction"]]
    for name in ("LookalikeRequestIODescriptor", "tags__Input"):
        assert spec["components"]["schemas"][name]["additionalProperties"] is False, name


def test_error_bodies_match_the_schema_and_unknown_fields_are_refused_alike(http, real_server):
    seed = {"seed_ids": ["nobody-1", "nobody-2"], "size": 5}
    answers = {
        "unknown field on tags": http.post("/v1/tags", json={"customer_ids": ["C1"], "colour": "red"}),
        "unknown field on lookalike": http.post("/v1/lookalike", json={**seed, "colour": "red"}),
        "size and fraction": http.post("/v1/lookalike", json={**seed, "fraction": 0.1}),
        "domain error": http.post("/v1/lookalike", json=seed),
        "no key": httpx.post(f"{real_server.url}/v1/tags", json={"customer_ids": ["C1"]}),
        "fastapi 422": http.post("/v1/events", json={"events": "nope"}),
    }
    for name, answer in answers.items():
        assert 400 <= answer.status_code < 500, (name, answer.status_code)
        body = answer.json()
        assert isinstance(body, dict), (name, body)  # never a bare array
        ErrorBody.model_validate(body, strict=True)
    for name in ("unknown field on tags", "unknown field on lookalike"):
        answer = answers[name]
        assert answer.status_code == 400, (name, answer.text)
        assert [d["loc"] for d in answer.json()["detail"]] == [["colour"]], answer.text
        assert answer.json()["detail"][0]["type"] == "extra_forbidden"
    assert "exactly one of 'size' or 'fraction'" in answers["size and fraction"].text
    assert answers["domain error"].json()["error"].startswith("unknown_seed")
    assert answers["no key"].status_code == 401


# ---- 7: client errors in the log ---------------------------------------------------------------------------


def test_client_errors_of_bentoml_routes_are_one_warning_line_without_the_input(http, real_server):
    marker = "SECRET-INPUT-7f3a"
    start = len(real_server.log_text())
    for _ in range(5):
        assert http.post("/v1/tags", json={"customer_ids": [marker + "\x00"]}).status_code == 400
        assert http.post("/v1/tags", json={"customer_ids": [], marker: 1}).status_code == 400
        assert http.post("/v1/lookalike", json={"seed_ids": [marker], "size": 0}).status_code == 400
        assert http.post("/v1/tags", content=b"{" + marker.encode(), headers={}).status_code == 400
    assert http.get("/v1/health").status_code == 200  # a request after, so the log has caught up
    written = real_server.log_text()[start:]
    warnings = [line for line in written.splitlines() if "client error 400" in line]
    assert len(warnings) >= 20, written[-2000:]
    assert all("[WARNING]" in line for line in warnings)
    assert "Traceback" not in written and "[ERROR]" not in written, written[-3000:]
    assert marker + "\\x00" not in written and '"' + marker not in written


# ---- 12: the customer-id contract, settings read and checked, Swagger UI ----------------------------------


def test_ids_the_api_refuses_are_quarantined_by_validation(tmp_path, http):
    good = "C-0001"
    ids = [good, *BAD_IDS.values()]
    raw = tmp_path / "customers.parquet"
    pq.write_table(pa.table({"customer_id": ids, "signup_ts": [ts("2024-01-01")] * len(ids)}), raw)
    report = validate_table(
        "customers", raw, clean_path=tmp_path / "clean.parquet", quarantine_path=tmp_path / "q.parquet"
    )
    assert pq.read_table(tmp_path / "clean.parquet").column("customer_id").to_pylist() == [good]
    quarantined = pq.read_table(tmp_path / "q.parquet").to_pylist()
    assert {r["customer_id"] for r in quarantined} == set(BAD_IDS.values())
    assert {r["reason"] for r in quarantined} == {"invalid_customer_id"}
    assert report.by_reason == {"invalid_customer_id": len(BAD_IDS)}
    # ... and the API refuses exactly those, naming the field; the accepted one can be asked for
    for name, bad in BAD_IDS.items():
        answer = http.post("/v1/tags", json={"customer_ids": [bad]})
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["detail"][0]["loc"] == ["customer_ids", 0], (name, answer.text)
    assert http.post("/v1/tags", json={"customer_ids": [good]}).status_code == 200


def test_max_ids_per_request_is_read_from_the_environment(api, served, monkeypatch):
    import bentoml

    monkeypatch.setenv("PORTRAIT_MAX_IDS_PER_REQUEST", "3")
    live = bentoml.get_current_service()
    monkeypatch.setattr(live, "settings", Settings())
    assert live.settings.max_ids_per_request == 3
    answer = api.post("/v1/tags", json={"customer_ids": ["a", "b", "c", "d"]})
    assert (
        answer.status_code == 400
        and "at most 3 customer ids" in answer.text
        and "max_ids_per_request" in answer.text
    )


def test_unknown_scopes_are_a_settings_error_listing_the_valid_ones(tmp_path, monkeypatch):
    assert {s for s in ROUTE_SCOPES.values() if s} <= set(API_SCOPES)  # the one list covers every route
    with pytest.raises(ValueError, match=r"unknown scope\(s\) 'tag:read'; valid scopes: tags:read, "):
        Settings(api_keys={"a-secret-key": ["tags:read", "tag:read"]})
    monkeypatch.setenv("PORTRAIT_HOME", str(tmp_path))
    monkeypatch.setenv("PORTRAIT_API_KEYS", '{"a-secret-key": ["tag:read"]}')
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == EXIT_BAD_INPUT and "Traceback" not in result.output
    assert "unknown scope(s) 'tag:read'" in result.output and "audiences:write" in result.output
    assert "a-secret-key" not in result.output


def test_swagger_ui_loads_no_third_party_script(real_server):
    page = httpx.get(f"{real_server.url}/", timeout=30)
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "googletagmanager" not in page.text.lower()
    sources = re.findall(r"<(?:script|iframe)[^>]*\bsrc=\"([^\"]+)\"", page.text)
    assert sources and all(s.startswith("./") or s.startswith("/") for s in sources), sources
    assert "script-src 'self'" in page.headers["content-security-policy"]

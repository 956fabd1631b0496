"""What ``serving.bentoml_internals`` relies on in BentoML, pinned (no workspace needed): a BentoML upgrade that
changes it fails here. The service-level side (the real ``/v1/tags`` body, the logs of a 400) is in
``test_service.py``."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import bentoml
import pytest
from _bentoml_impl.serde import ALL_SERDE, JSONSerde
from _bentoml_sdk.io_models import IORootModel
from _bentoml_sdk.method import APIMethod
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request

from serving import bentoml_internals
from serving.bentoml_internals import (
    API_ERROR_LOGGER,
    ClientErrorsAsWarnings,
    json_list_output,
    strict_json_input,
)


class Item(BaseModel):
    name: str = Field(description="A name.")
    score: float | None = Field(None, description="A score.")
    at: datetime | None = Field(None, description="A time.")


Output = json_list_output(Item)
ITEMS = [
    Item(name="a", score=0.25, at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
    Item(name='é "quoted"', score=None),
]


def _listing(self: Any, ids: list[str]) -> list[Item]:
    return []


def _request(body: bytes, content_type: str = "application/json") -> Request:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "headers": [(b"content-type", content_type.encode())],
        "query_string": b"",
    }
    return Request(scope, receive)


def _body(response: Any) -> bytes:
    if hasattr(response, "body_iterator"):
        return b"".join(bytes(chunk) for chunk in response.body_iterator)
    return response.body


# ---- the list output spec ----------------------------------------------------------------------------


def test_the_output_is_bentomls_own_list_output():
    default = bentoml.IODescriptor.from_output(_listing)
    assert issubclass(default, IORootModel) and issubclass(Output, IORootModel)
    assert default.model_json_schema() == Output.model_json_schema()  # same OpenAPI schema
    assert default.mime_type() == Output.mime_type() == "application/json"


def test_the_openapi_of_an_api_is_unchanged():
    plain = APIMethod(_listing, route="/x")
    fast = APIMethod(_listing, route="/x", output_spec=Output)
    assert fast.openapi_response() == plain.openapi_response()
    assert fast.openapi_request() == plain.openapi_request()


def test_media_type_classvar_is_honoured(monkeypatch: pytest.MonkeyPatch):
    def no_schema(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the JSON schema was built to find the media type")

    monkeypatch.setattr(Output, "model_json_schema", classmethod(no_schema))
    assert Output.mime_type() == "application/json"
    response = asyncio.run(Output.to_http_response(ITEMS, JSONSerde()))
    assert response.media_type == "application/json"


def test_bentoml_calls_model_dump_then_model_dump_json(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[str, dict[str, Any]]] = []
    dump, dump_json = Output.model_dump, Output.model_dump_json

    def spy_dump(self: Any, **kwargs: Any) -> Any:
        calls.append(("model_dump", kwargs))
        return dump(self, **kwargs)

    def spy_dump_json(self: Any, **kwargs: Any) -> str:
        calls.append(("model_dump_json", kwargs))
        return dump_json(self, **kwargs)

    monkeypatch.setattr(Output, "model_dump", spy_dump)
    monkeypatch.setattr(Output, "model_dump_json", spy_dump_json)
    asyncio.run(Output.to_http_response(ITEMS, ALL_SERDE["application/json"]()))
    assert [name for name, _ in calls] == ["model_dump", "model_dump_json"]
    assert calls[0][1] == {}  # the str/bytes check: no arguments, so the fast path returns the list itself


def test_the_json_body_is_bentomls():
    default = bentoml.IODescriptor.from_output(_listing)
    fast = json.loads(_body(asyncio.run(Output.to_http_response(ITEMS, JSONSerde()))))
    plain = json.loads(_body(asyncio.run(default.to_http_response(ITEMS, JSONSerde()))))
    assert fast == plain
    assert fast[0] == {"name": "a", "score": 0.25, "at": "2025-01-02T03:04:05Z"}


# ---- the strict input spec ---------------------------------------------------------------------------


def _refuse_more_than_two(service: Any, data: Any) -> str | None:
    return f"at most 2 ids for {service.name}" if len(data.ids) > 2 else None


class _Svc:
    @strict_json_input(check=_refuse_more_than_two)
    @bentoml.api(route="/x")
    def listing(self, ids: Annotated[list[str], Field(min_length=1, description="Ids.")]) -> list[Item]:
        return []


def _parse(body: bytes) -> Any:
    spec = _Svc.__dict__["listing"].input_spec
    return asyncio.run(spec.from_http_request(_request(body), JSONSerde()))


@pytest.fixture
def current_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bentoml, "get_current_service", lambda: type("S", (), {"name": "svc"})())


def test_the_strict_input_keeps_bentomls_schema():
    strict = _Svc.__dict__["listing"]
    plain = APIMethod(_Svc.__dict__["listing"].func, route="/x")
    assert strict.input_spec.__name__ == plain.input_spec.__name__ == "Input"  # the OpenAPI component's name
    schema = strict.input_spec.model_json_schema()
    assert schema.pop("additionalProperties") is False  # unknown fields are refused (issue 22) ...
    assert schema == plain.input_spec.model_json_schema()  # ... and the rest is BentoML's own


def test_unknown_fields_are_refused_naming_them(current_service: None):
    with pytest.raises(ValidationError) as caught:
        _parse(b'{"ids": ["a"], "colour": "red"}')
    assert [(e["type"], e["loc"]) for e in caught.value.errors()] == [("extra_forbidden", ("colour",))]


def test_malformed_json_is_named(current_service: None):
    with pytest.raises(ValidationError) as caught:
        _parse(b"{not json")
    assert "malformed JSON body" in caught.value.errors()[0]["msg"]
    assert _parse(b'{"ids": ["a", "b"]}').ids == ["a", "b"]


def test_schema_errors_stay_pydantics(current_service: None):
    with pytest.raises(ValidationError) as caught:
        _parse(b'{"ids": []}')
    assert caught.value.errors()[0]["type"] == "too_short"


def test_the_check_runs_on_each_request_with_the_current_service(current_service: None):
    with pytest.raises(ValidationError) as caught:
        _parse(b'{"ids": ["a", "b", "c"]}')
    assert caught.value.errors()[0]["msg"] == "at most 2 ids for svc"


# ---- client errors in BentoML's error log --------------------------------------------------------------


def test_bentomls_api_error_log_is_the_filtered_logger():
    from bentoml._internal.server import http_app

    assert http_app.log_exception.__module__ == API_ERROR_LOGGER
    assert http_app.logger.name == API_ERROR_LOGGER


def _log_exception_during(exc: BaseException, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    from bentoml._internal.server.http_app import log_exception

    request = _request(b"{}")
    caplog.clear()
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - what BentoML's API wrapper does with any error
        log_exception(request)
    (record,) = [r for r in caplog.records if r.name == API_ERROR_LOGGER]
    return record


def test_client_errors_become_one_warning_line(caplog: pytest.LogCaptureFixture):
    bentoml_internals.log_client_errors_as_warnings()
    bentoml_internals.log_client_errors_as_warnings()  # idempotent
    target = logging.getLogger(API_ERROR_LOGGER)
    assert sum(isinstance(f, ClientErrorsAsWarnings) for f in target.filters) == 1
    with caplog.at_level(logging.DEBUG, logger=API_ERROR_LOGGER):
        try:
            Item.model_validate({"name": 3})
        except ValidationError as exc:
            invalid = exc
        record = _log_exception_during(invalid, caplog)
        assert record.levelno == logging.WARNING and record.exc_info is None
        message = record.getMessage()
        assert message.startswith("client error 400 (Exception on /x [POST]): name: Input should be")
        assert "\n" not in message

        record = _log_exception_during(bentoml.exceptions.InvalidArgument("bad\nthing"), caplog)
        assert record.levelno == logging.WARNING and record.getMessage().endswith(": bad thing")

        for server_side in (RuntimeError("boom"), bentoml.exceptions.ServiceUnavailable("down")):
            record = _log_exception_during(server_side, caplog)
            assert record.levelno == logging.ERROR and record.exc_info is not None  # left as they are


# ---- the OpenAPI document and the Swagger UI page (issue 22) ------------------------------------------------


@bentoml.service(name="pinned")
class _Pinned:
    @bentoml.api(route="/v1/x")
    def listing(self, ids: list[str]) -> list[Item]:
        return []


def test_bentoml_documents_its_apis_errors_with_the_components_named():
    spec = bentoml_internals.openapi_dict(_Pinned)
    operation = spec["paths"]["/v1/x"]["post"]
    refs = {
        code: answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        for code, answer in operation["responses"].items()
        if str(code)[0] in "45"
    }
    assert sorted(refs.values()) == sorted(bentoml_internals.BENTOML_ERROR_SCHEMAS), refs
    assert set(bentoml_internals.BENTOML_ERROR_SCHEMAS) <= set(spec["components"]["schemas"])
    assert "security" not in operation  # BentoML declares none: serving.web.contract_spec adds it


def test_the_swagger_page_is_bentomls_without_the_tag_manager():
    from pathlib import Path

    import _bentoml_impl.server.app as bentoml_app

    template = (Path(bentoml_app.__file__).parent / bentoml_internals.SWAGGER_TEMPLATE).read_text()
    assert "googletagmanager.com" in template  # what is removed is still there to remove
    page = bentoml_internals.swagger_page()
    assert "googletagmanager" not in page and "<noscript>" not in page
    assert "./static_content/swagger-initializer.js" in page and 'id="swagger-ui"' in page
    assert page.count("<script") == template.count("<script") - 1  # only the tag manager's script went
    assert not bentoml_app.BentoMLContainer.new_index  # BentoML's index route serves this template

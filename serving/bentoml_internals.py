"""The one door to BentoML's internals: what the service relies on beyond BentoML 1.4's public API.

BentoML (pinned by the lock file) exposes no hook for three things the service needs, so each leans on one
internal, named here and pinned by ``tests/serving/test_bentoml_internals.py``:

* :func:`json_list_output` -- ``/v1/tags``' output spec. It subclasses ``_bentoml_sdk.io_models.IORootModel``
  (BentoML's base of list outputs, no public alias) and relies on how BentoML's ``to_http_response`` uses an
  output spec: the ``media_type`` ClassVar is taken as is (no JSON schema built per response), and the body
  is ``model_dump()`` (checked only for str/bytes) then the JSON serde's ``model_dump_json()``.
* :func:`strict_json_input` -- an API's input spec whose parsing names a malformed JSON body and runs a
  per-request check (e.g. a request-size limit from the settings). It relies on BentoML parsing every API
  request through the input spec's ``from_http_request(request, serde)`` classmethod, and on it answering a
  ``pydantic.ValidationError`` with a 400 listing the errors.
* :func:`log_client_errors_as_warnings` -- BentoML's API wrapper logs every exception of an API call,
  a caller's invalid input included, at ERROR with a traceback (``bentoml._internal.server.http_app.
  log_exception``); this filter on that logger turns the records of client errors (4xx) into one WARNING line.

:data:`APP_TAG_NAME` is the OpenAPI tag BentoML files its APIs under, so the FastAPI routes join them in the UI.

Two more for the HTTP contract (issue 22):

* :func:`openapi_dict` -- the service's OpenAPI document as BentoML builds it (``Service.openapi_spec``, an
  ``OpenAPISpecification``, as a dict); it gives every BentoML API the error responses of
  :data:`BENTOML_ERROR_SCHEMAS` (component names), which ``serving.web.contract_spec`` replaces.
* :func:`swagger_page` -- BentoML's Swagger UI page (``_bentoml_impl/server/main-openapi.html``, served at
  ``/``) without its Google Tag Manager blocks, the one third-party script it loads.
* :func:`strict_json_input` also makes the API's input model refuse unknown fields (``extra="forbid"``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import bentoml
from _bentoml_sdk.io_models import IORootModel  # BentoML's base of list outputs (no public alias)
from bentoml._internal.service.openapi import APP_TAG
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from starlette.requests import Request

APP_TAG_NAME: str = APP_TAG.name
BENTOML_ERROR_SCHEMAS: tuple[str, ...] = ("InvalidArgument", "NotFound", "InternalServerError")
"""The components BentoML documents its APIs' 400 / 404 / 500 with (``_bentoml_sdk.service.openapi``)."""
SWAGGER_TEMPLATE = "main-openapi.html"
"""BentoML's Swagger UI page, next to ``_bentoml_impl.server.app`` (its index route serves it at ``/``)."""
_TAG_MANAGER = re.compile(
    r"\s*<!-- Google Tag Manager( \(noscript\))? -->.*?<!-- End Google Tag Manager( \(noscript\))? -->", re.S
)
API_ERROR_LOGGER = "bentoml._internal.server.http_app"
"""The logger of BentoML's ``log_exception``, which its API wrapper calls for every failed API call."""

RequestCheck = Callable[[Any, Any], str | None]
"""``check(service instance, parsed input)``: None to accept the request, else why it is refused (a 400)."""


def json_list_output(item: type[BaseModel]) -> type[bentoml.IODescriptor]:
    """BentoML's output spec of ``list[item]`` (same JSON, same OpenAPI schema) with two costs removed.

    * The media type is declared: otherwise BentoML rebuilds the list's JSON schema on every response just
      to find it.
    * pydantic's own JSON encoder writes the body: BentoML's base class dumps the list to Python objects
      twice and runs ``json.dumps``.
    """
    adapter = TypeAdapter(list[item])  # type: ignore[valid-type]

    class JSONListOutput(IORootModel[list[item]]):  # type: ignore[valid-type,misc]
        media_type: ClassVar[str | None] = "application/json"

        def model_dump(self, **kwargs: Any) -> Any:
            # BentoML calls model_dump() only to check whether an output is already str/bytes.
            return self.root if not kwargs else super().model_dump(**kwargs)

        def model_dump_json(self, **kwargs: Any) -> str:
            return adapter.dump_json(self.root).decode()

    return JSONListOutput


def strict_json_input(check: RequestCheck | None = None) -> Callable[[Any], Any]:
    """Decorate a ``@bentoml.api`` method: its input spec (BentoML's own, same OpenAPI schema) answers a body
    that is not JSON with a 400 that says "malformed JSON", and runs ``check`` on every parsed request.

    Use above ``@bentoml.api``::

        @strict_json_input(check=within_limit)
        @bentoml.api(route="/v1/tags", ...)
        def tags(self, customer_ids: list[str]) -> ...
    """

    def decorate(method: Any) -> Any:
        method.input_spec = _strict_spec(method.input_spec, check)
        return method

    return decorate


def _strict_spec(spec: type[bentoml.IODescriptor], check: RequestCheck | None) -> type[bentoml.IODescriptor]:
    async def from_http_request(cls: type[bentoml.IODescriptor], request: Request, serde: Any) -> Any:
        try:
            data = await super(strict, cls).from_http_request(request, serde)  # type: ignore[misc]
        except ValidationError as exc:
            invalid = next((e for e in exc.errors() if e["type"] == "json_invalid"), None)
            if invalid is None:
                raise
            raise _validation_error(
                cls, "json_invalid", f"malformed JSON body: {invalid['msg']}", invalid["loc"]
            ) from None
        if check is not None:
            refused = check(bentoml.get_current_service(), data)
            if refused:
                raise _validation_error(cls, "request_refused", refused, ())
        return data

    # Same name and module: BentoML names the OpenAPI components after the spec class. Unknown fields are
    # refused (a 400 naming them), the same on every API.
    strict = type(
        spec.__name__,
        (spec,),
        {
            "__module__": spec.__module__,
            "from_http_request": classmethod(from_http_request),
            "model_config": {**spec.model_config, "extra": "forbid"},
        },
    )
    return strict


def openapi_dict(service: Any) -> dict[str, Any]:
    """The OpenAPI document BentoML builds for ``service`` (the ``@bentoml.service`` class), as a dict."""
    return service.openapi_spec.asdict()


def swagger_page() -> str:
    """BentoML's Swagger UI page without the Google Tag Manager script (and its noscript iframe)."""
    import _bentoml_impl.server.app as bentoml_app

    page = (Path(bentoml_app.__file__).parent / SWAGGER_TEMPLATE).read_text(encoding="utf-8")
    return _TAG_MANAGER.sub("", page)


def _validation_error(cls: type, kind: str, message: str, loc: tuple[Any, ...]) -> ValidationError:
    return ValidationError.from_exception_data(
        cls.__name__,
        [{"type": PydanticCustomError(kind, "{message}", {"message": message}), "loc": loc, "input": None}],
    )


def client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx BentoML's API wrapper answers ``exc`` with, or None when it is not a client error."""
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, bentoml.exceptions.BentoMLException):
        status = int(exc.error_code)
        return status if 400 <= status < 500 else None
    return None


def _summary(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        text = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
    else:
        text = str(exc)
    text = " ".join(text.split())  # one line
    return text if len(text) <= 500 else text[:497] + "..."


class ClientErrorsAsWarnings(logging.Filter):
    """Turns BentoML's ERROR-with-traceback record of a client error (4xx) into one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = client_error_status(exc)
        if status is None or exc is None:
            return True
        where = record.getMessage()  # BentoML's "Exception on <path> [<method>]"
        record.msg = "client error %d (%s): %s"
        record.args = (status, where, _summary(exc))
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def log_client_errors_as_warnings() -> None:
    """Install :class:`ClientErrorsAsWarnings` on BentoML's API error logger (once per process)."""
    target = logging.getLogger(API_ERROR_LOGGER)
    if not any(isinstance(f, ClientErrorsAsWarnings) for f in target.filters):
        target.addFilter(ClientErrorsAsWarnings())

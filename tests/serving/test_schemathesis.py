"""Property-based requests generated from the service's own OpenAPI schema never get a 5xx.

Drives schemathesis' Hypothesis strategies directly (its pytest plugin does not load under this
pytest version).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

TRANSPORT_KEYS = ("method", "url", "params", "headers", "cookies", "json", "data", "content")


def test_no_server_errors_on_generated_requests(api, served):
    # The schema is fetched with the session's client too (from_asgi would run the app's lifespan).
    schema = schemathesis.openapi.from_dict(api.get("/docs.json").json())
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.path.startswith("/v1/")]
    assert {op.path for op in operations} >= {"/v1/tags", "/v1/lookalike", "/v1/models", "/v1/health"}
    seen: dict[str, set[int]] = {}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            # Sent through the session's client: schemathesis' own ASGI client would run BentoML's
            # lifespan (start-up and shut-down of the service) around every call.
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            kwargs = {k: v for k, v in kwargs.items() if k in TRANSPORT_KEYS}
            if isinstance(kwargs.get("data"), bytes | str):
                kwargs["content"] = kwargs.pop("data")
            response = api.request(**kwargs)
            seen.setdefault(case.path, set()).add(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.path} {case.body!r:.200} -> {response.status_code}: {response.text[:300]}"
            )

        check()
    assert all(codes for codes in seen.values())

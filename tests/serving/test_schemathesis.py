"""Property-based requests generated from the service's own OpenAPI schema never get a 5xx.

Drives schemathesis' Hypothesis strategies directly (its pytest plugin does not load under this
pytest version).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from serving.service import Portrait


def test_no_server_errors_on_generated_requests(served):
    app = Portrait.to_asgi()
    with TestClient(app):  # runs the lifespan so the service instance is loaded
        schema = schemathesis.openapi.from_asgi("/docs.json", app)
        operations = [r.ok() for r in schema.get_all_operations()]
        operations = [op for op in operations if op.path.startswith("/v1/")]
        assert {op.path for op in operations} >= {"/v1/tags", "/v1/lookalike", "/v1/models", "/v1/health"}
        seen: dict[str, set[int]] = {}
        for op in operations:

            @given(case=op.as_strategy())
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case) -> None:
                response = case.call()
                seen.setdefault(case.path, set()).add(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.path} {case.body!r:.200} -> {response.status_code}: {response.text[:300]}"
                )

            check()
        assert all(codes for codes in seen.values())

"""schemathesis over the service's own OpenAPI document (``/docs.json``), against a real ``bentoml serve``
process with API keys: every check, positive and negative generation, all phases (examples, coverage,
fuzzing, stateful), bounded in time. The service must answer with no server error and as documented.

``run_schemathesis`` is shared with ``benchmarks/bench_reliability.py``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import schemathesis
from schemathesis.engine import events, from_schema

MAX_TIME_S = 45
"""The run's time budget (schemathesis stops generating then); the session's server start comes on top."""
DOMAIN_REFUSALS = {
    "POST /v1/lookalike",
    "POST /v1/audiences",
    "POST /v1/audiences/plan",
    "POST /v1/audiences/{audience_id}/holdout",
}
"""Operations where schema-valid data can still be refused for what it means (a 400 / 422 naming it):
seeds that are no known customer, a filter on a feature that does not exist, an empty seed list with a
seed audience id that names nothing, a holdout stratified by a column the data does not have (the
categorical columns depend on the user's data, so the schema cannot list them).
``positive_data_acceptance`` may fail there and nowhere else."""


@dataclass
class FuzzRun:
    """What a schemathesis run did: cases sent, and failures (and one example of each) per check."""

    cases: int = 0
    seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    where: dict[str, set[str]] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def failing(self, check: str) -> set[str]:
        return self.where.get(check, set())


def run_schemathesis(base_url: str, key: str, *, max_time_s: float, max_examples: int = 25) -> FuzzRun:
    """Run schemathesis' engine (every phase and check, positive and negative data) against ``base_url``."""
    config = schemathesis.Config.from_dict(
        {
            "base-url": base_url,
            "max-time": max_time_s,
            "seed": 22,
            "workers": 1,
            "request-timeout": 60,
            "headers": {"Authorization": f"Bearer {key}"},
            "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
            "checks": {"enabled": True},
            "cache": {"enabled": False},  # no state left in the checkout
        }
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/docs.json", config=config)
    run = FuzzRun()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            run.cases += len(recorder.cases)
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status.name != "FAILURE":
                        continue
                    case = recorder.cases[case_id].value
                    run.failures[check.name] += 1
                    run.where.setdefault(check.name, set()).add(f"{case.method} {case.path}")
                    failure = check.failure_info.failure if check.failure_info else None
                    run.examples.setdefault(
                        check.name,
                        f"{case.method} {case.path} {str(case.body)[:200]!r}: "
                        f"{getattr(failure, 'title', '')} {str(getattr(failure, 'message', ''))[:300]}",
                    )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            run.errors.append(str(getattr(event, "info", None) or getattr(event, "exception", event))[:500])
        elif isinstance(event, events.EngineFinished):
            run.seconds = event.running_time
    return run


def test_the_service_answers_generated_requests_as_documented(real_server):
    run = run_schemathesis(real_server.url, real_server.key, max_time_s=MAX_TIME_S)
    assert run.cases > 500, f"only {run.cases} cases in {run.seconds:.0f} s"
    assert not run.errors, run.errors
    contract = {name: n for name, n in run.failures.items() if name != "positive_data_acceptance"}
    assert not contract, {name: run.examples[name] for name in contract}  # 5xx, schema, auth, ... all 0
    assert run.failing("positive_data_acceptance") <= DOMAIN_REFUSALS, run.examples

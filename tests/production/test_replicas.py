"""Two replicas of the service on the production profile: two real `bentoml serve serving.service:Portrait`
processes, each with its own empty workspace, sharing one Redis and one registry (Feast and MLflow on
PostgreSQL). They answer the same tags, and when one is killed (SIGKILL) the other keeps serving."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from features import store as fs
from serving.process import ServiceProcess
from tests.production.conftest import PLAN, SNAPSHOT, production_settings, snapshot_customers
from training import churn
from training import fit as fit_module
from training.train import train_model

pytestmark = [pytest.mark.production, pytest.mark.slow]
READY_S = 240


class Replica(ServiceProcess):
    """One `bentoml serve` process on its own port and workspace; its log goes to a file."""

    def __init__(self, name: str, home: Path, env: dict[str, str], log: Path) -> None:
        self.name = name
        home.mkdir(parents=True, exist_ok=True)
        super().__init__(home, log, env=env)

    def tags(self, ids: list[str]) -> list[dict]:
        response = httpx.post(f"{self.url}/v1/tags", json={"customer_ids": ids}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()


def _serve_from_any(replicas: list[Replica], ids: list[str], start: int) -> tuple[str, list[dict]]:
    """What a load balancer does: try the replicas in turn from ``start``, skipping one that refuses."""
    for k in range(len(replicas)):
        replica = replicas[(start + k) % len(replicas)]
        try:
            return replica.name, replica.tags(ids)
        except httpx.TransportError:
            continue
    raise AssertionError("no replica answered")


@pytest.fixture
def replicas(prod_home, pg_database, key_prefix, servers, tmp_path, monkeypatch) -> Iterator[list[Replica]]:  # noqa: ANN001
    monkeypatch.setattr(fit_module, "MAX_ROUNDS", 25)
    settings = production_settings(
        prod_home, postgres_url=pg_database, redis_url=servers.redis_url, key_prefix=key_prefix
    )
    train_model(settings, churn.spec(), trials=1, **PLAN)  # registered and promoted in the shared registry
    fs.materialize(settings, end=SNAPSHOT + timedelta(days=1))  # the shared online store
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    env |= {
        "PORTRAIT_PROFILE": "production",
        "PORTRAIT_POSTGRES_URL": pg_database,
        "PORTRAIT_REDIS_URL": servers.redis_url,
        "PORTRAIT_REDIS_KEY_PREFIX": key_prefix,
        "BENTOML_DO_NOT_TRACK": "True",
    }
    started = [
        Replica(name, tmp_path / f"replica_{name}", env, tmp_path / f"replica_{name}.log")
        for name in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + READY_S
        while not all(r.ready() for r in started):
            if time.monotonic() > deadline:
                pytest.fail(f"the replicas were not ready in {READY_S} s")
            time.sleep(1)
        yield started
    finally:
        for replica in started:
            replica.kill()


def test_two_replicas_serve_the_same_tags_and_survive_a_kill(
    replicas: list[Replica], prod_home: Path
) -> None:
    a, b = replicas
    ids = snapshot_customers(prod_home)[:40]
    from_a, from_b = a.tags(ids), b.tags(ids)
    assert all(t["found"] and t["churn"]["probability"] is not None for t in from_a)
    assert from_a == from_b
    assert (
        httpx.get(f"{a.url}/v1/models", timeout=10).json()
        == httpx.get(f"{b.url}/v1/models", timeout=10).json()
    )

    a.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{a.url}/readyz", timeout=2)
    answered = [_serve_from_any(replicas, ids, start) for start in range(4)]
    assert {name for name, _ in answered} == {"b"}
    assert all(tags == from_a for _, tags in answered)
    assert b.ready()

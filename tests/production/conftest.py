"""Fixtures for the production-profile tests against real Redis and PostgreSQL servers.

Every test gets its own PostgreSQL database (created here, dropped afterwards) and its own Feast project
(``redis_key_prefix``), whose Redis keys are deleted afterwards. The servers come from
``PORTRAIT_REDIS_URL`` / ``PORTRAIT_POSTGRES_URL`` (default 127.0.0.1:6379 / 127.0.0.1:5432). When one is
unreachable the tests are skipped with instructions, or fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
import redis
from sqlalchemy.engine import make_url

from features.pipeline import compute_features
from features.synth import SynthConfig
from portrait.backends import drop_postgres_database, normalize_postgres_url
from portrait.settings import Settings
from portrait.workflow import synthesize
from serving.process import free_port
from tests.conftest import ci_required
from training import churn
from training.train import plan_for

END = datetime(2025, 1, 1, tzinfo=UTC)
SNAPSHOT = END + timedelta(days=1)
PLAN = {"n_train": 2, "step_days": 60}
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
HOW_TO = (
    "start Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres), or set "
    "PORTRAIT_REDIS_URL / PORTRAIT_POSTGRES_URL; then run `pytest tests/production -m production`"
)


def unavailable(reason: str) -> None:
    """Fail under CI (the servers are part of the CI contract), else skip with instructions."""
    message = f"{reason}: {HOW_TO}"
    if ci_required():
        pytest.fail(message)
    pytest.skip(message)


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Servers:
    redis_url: str
    postgres_url: str  # of the server; tests swap in their own database name


@pytest.fixture(scope="session")
def servers() -> Servers:
    redis_url = os.environ.get("PORTRAIT_REDIS_URL", DEFAULT_REDIS)
    pg_url = normalize_postgres_url(os.environ.get("PORTRAIT_POSTGRES_URL", DEFAULT_POSTGRES))
    r = urlsplit(redis_url)
    if not _reachable(r.hostname or "127.0.0.1", r.port or 6379):
        unavailable(f"Redis at {r.hostname}:{r.port or 6379} is unreachable")
    pg = make_url(pg_url)
    if not _reachable(pg.host or "127.0.0.1", pg.port or 5432):
        unavailable(f"PostgreSQL at {pg.host}:{pg.port or 5432} is unreachable")
    return Servers(redis_url, pg_url)


@pytest.fixture
def pg_database(servers: Servers) -> Iterator[str]:
    """The URL of a fresh, uniquely named database on the server (dropped afterwards)."""
    name = f"portrait_test_{uuid.uuid4().hex[:10]}"
    url = make_url(servers.postgres_url).set(database=name).render_as_string(hide_password=False)
    yield url
    drop_postgres_database(url)


@pytest.fixture
def key_prefix(servers: Servers) -> Iterator[str]:
    """A unique Feast project suffix; the project's keys in the shared Redis are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(servers.redis_url, socket_timeout=5)
    project = f"portrait_{prefix}".encode()
    keys = list(client.scan_iter(match=b"*" + project, count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def prod_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic workspace (1,500 customers) with validated inputs and feature snapshots."""
    home = tmp_path_factory.mktemp("prod_data")
    settings = Settings(home=home)
    settings.ensure_dirs()
    synthesize(settings, SynthConfig(n_customers=1500, seed=3, start=END - timedelta(days=3 * 365), end=END))
    snapshots = sorted({*plan_for(settings, churn.spec(), **PLAN).all, SNAPSHOT})
    compute_features(settings.clean_dir, settings.features_dir, snapshots)
    return home


@pytest.fixture
def prod_home(prod_data: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic workspace's inputs and features."""
    home = tmp_path / "ws"
    for part in ("clean", "features"):
        shutil.copytree(prod_data / "data" / part, home / "data" / part)
    return home


def snapshot_customers(home: Path) -> list[str]:
    """The customer ids of the serving snapshot, in file order."""
    path = home / "data" / "features" / "customer_profile" / f"snapshot={SNAPSHOT:%Y%m%dT%H%M%S}.parquet"
    return pd.read_parquet(path, columns=["customer_id"]).customer_id.tolist()


def production_settings(home: Path, *, postgres_url: str, redis_url: str, key_prefix: str) -> Settings:
    """Production-profile settings that ignore any PORTRAIT_* overrides in the environment."""
    settings = Settings(
        home=home,
        profile="production",
        postgres_url=postgres_url,
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        mlflow_tracking_uri=None,
        mlflow_artifact_root=None,
        api_keys={},
    )
    settings.ensure_dirs()
    return settings


class PrivateRedis:
    """A throwaway ``redis-server`` on its own port, started and stopped by the test (no persistence)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("the redis-server binary is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis(servers: Servers) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port())
    server.start()
    yield server
    server.stop()

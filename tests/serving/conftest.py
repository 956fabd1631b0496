"""A small workspace with all four models trained and promoted and the online store materialized."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from features.synth import SynthConfig
from portrait.settings import Settings
from portrait.workflow import build_workspace

END = datetime(2025, 1, 1, tzinfo=UTC)
SNAPSHOT = END + timedelta(days=1)


def offline_features(settings: Settings, ids: list[str]) -> pd.DataFrame:
    """The served snapshot's feature rows of ``ids``, joined from the Parquet feature tables (not Feast)."""
    frames = [
        pd.read_parquet(settings.features_dir / view / f"snapshot={SNAPSHOT:%Y%m%dT%H%M%S}.parquet")
        for view in ("customer_profile", "customer_transactions", "customer_behaviour")
    ]
    offline = frames[0]
    for f in frames[1:]:
        offline = offline.merge(f.drop(columns=["event_timestamp", "created_timestamp"]), on="customer_id")
    return offline.set_index("customer_id").loc[ids].reset_index()


@pytest.fixture(scope="session")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("served_ws")
    settings = Settings(home=home)
    settings.ensure_dirs()
    build_workspace(
        settings,
        synth=SynthConfig(n_customers=2500, seed=5, start=END - timedelta(days=3 * 365), end=END),
        snapshot=SNAPSHOT,
        trials=1,
        n_train=2,
        step_days=60,
    )
    return home


@pytest.fixture
def served(served_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("PORTRAIT_HOME", str(served_home))
    monkeypatch.delenv("PORTRAIT_API_KEYS", raising=False)
    return Settings(home=served_home)


@pytest.fixture(scope="session")
def api(served_home: Path):
    """One in-process app for the session (BentoML registers its Prometheus metrics process-wide)."""
    import os

    from starlette.testclient import TestClient

    from serving.service import Portrait

    old = os.environ.get("PORTRAIT_HOME")
    os.environ["PORTRAIT_HOME"] = str(served_home)
    os.environ.pop("PORTRAIT_API_KEYS", None)
    app = Portrait.to_asgi()
    with TestClient(app) as client:
        yield client
    if old is None:
        os.environ.pop("PORTRAIT_HOME", None)
    else:
        os.environ["PORTRAIT_HOME"] = old


class RealServer:
    """A real ``bentoml serve serving.service:Portrait`` subprocess on ``served_home``, with API keys.

    ``key`` has every scope. The server's log goes to ``log`` (read it with :meth:`log_text`).
    """

    SCOPES = ("tags:read", "lookalike:create", "events:write", "audiences:read", "audiences:write")

    def __init__(self, home: Path, log: Path) -> None:
        import json
        import os
        import socket
        import subprocess
        import sys

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = "test-key-all-scopes"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
        env |= {"PORTRAIT_HOME": str(home), "PORTRAIT_API_KEYS": json.dumps({self.key: list(self.SCOPES)})}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bentoml",
                    "serve",
                    "serving.service:Portrait",
                    "--port",
                    str(self.port),
                ],
                cwd=Path(__file__).resolve().parents[2],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout_s: float = 240) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"bentoml serve exited: {self.log_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready after {timeout_s} s: {self.log_text()[-3000:]}"
            time.sleep(0.5)

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers."""
        import psutil

        root = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])

    def stop(self) -> None:
        import os
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except Exception:  # noqa: BLE001 - a server that will not stop is killed
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def real_server(served_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real ``bentoml serve`` process for the session (HTTP-boundary and schemathesis tests)."""
    server = RealServer(served_home, tmp_path_factory.mktemp("real_server") / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()

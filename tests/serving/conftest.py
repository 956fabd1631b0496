"""A small workspace with all four models trained and promoted and the online store materialized."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from features.synth import SynthConfig
from portrait.settings import Settings
from portrait.workflow import build_workspace
from serving.process import ServiceProcess

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


@pytest.fixture
def client(api, served):  # noqa: ANN001, ANN201 - fixtures
    """The session's in-process app, with ``served``'s environment (the workspace, no API keys) set."""
    return api


@pytest.fixture
def live(api):  # noqa: ANN001, ANN201 - fixtures
    """The service instance behind the session's app (BentoML's current service in this process)."""
    import bentoml

    return bentoml.get_current_service()


class RealServer(ServiceProcess):
    """A real ``bentoml serve serving.service:Portrait`` subprocess on ``served_home``, with API keys.

    ``key`` has every scope. The server's log goes to ``log`` (read it with :meth:`log_text`).
    """

    SCOPES = ("tags:read", "lookalike:create", "events:write", "audiences:read", "audiences:write")
    key = "test-key-all-scopes"

    def __init__(self, home: Path, log: Path) -> None:
        super().__init__(home, log, api_keys={self.key: self.SCOPES})

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="session")
def real_server(served_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real ``bentoml serve`` process for the session (HTTP-boundary and schemathesis tests)."""
    server = RealServer(served_home, tmp_path_factory.mktemp("real_server") / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()

"""PostgreSQL unreachable: training stops before any work with a clear, redacted error; serving is not ready."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

import training.train as train_module
from portrait import registry
from portrait.cli import EXIT_UNAVAILABLE, app
from serving.tagger import Tagger
from tests.production.conftest import free_port, production_settings
from training import churn, tracking
from training.train import train_model

pytestmark = pytest.mark.production


def _dead_url() -> str:
    return f"postgresql://portrait:s3cret@127.0.0.1:{free_port()}/portrait"


def test_train_fails_fast_and_redacted(tmp_path, monkeypatch):
    def no_work(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("training started although the tracking store is unreachable")

    monkeypatch.setattr(train_module, "build_training_set", no_work)
    monkeypatch.setattr(train_module, "fit", no_work)
    url = _dead_url()
    settings = production_settings(
        tmp_path, postgres_url=url, redis_url="redis://127.0.0.1:6379/0", key_prefix="x"
    )
    started = time.perf_counter()
    with pytest.raises(tracking.TrackingUnavailable) as caught:
        train_model(settings, churn.spec(), trials=1)
    assert time.perf_counter() - started < 20  # MLflow alone would retry for ~100 s
    assert tracking.TrackingUnavailable is registry.TrackingUnavailable
    message = str(caught.value)
    assert "unreachable" in message and url.rsplit("@", 1)[1] in message
    assert "s3cret" not in message and "***@" in message


def test_cli_train_exits_with_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTRAIT_HOME", str(tmp_path))
    monkeypatch.setenv("PORTRAIT_PROFILE", "production")
    monkeypatch.setenv("PORTRAIT_POSTGRES_URL", _dead_url())
    monkeypatch.delenv("PORTRAIT_MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(app, ["train", "churn", "--trials", "1"])
    assert result.exit_code == EXIT_UNAVAILABLE, result.output
    assert "unreachable" in result.output and "s3cret" not in result.output


def test_serving_is_not_ready_without_postgres(tmp_path):
    settings = production_settings(
        tmp_path, postgres_url=_dead_url(), redis_url="redis://127.0.0.1:6379/0", key_prefix="x"
    )
    started = time.perf_counter()
    tagger = Tagger(settings)
    reasons = tagger.readiness()
    assert time.perf_counter() - started < 20  # MLflow alone would retry for ~100 s
    assert reasons and all("unreachable" in r for r in reasons)
    assert not any("s3cret" in r for r in reasons)

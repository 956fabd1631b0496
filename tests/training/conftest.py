"""A small synthetic workspace shared by the training tests (built once per session)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from features import repo
from features.synth import SynthConfig
from portrait.settings import Settings
from portrait.workflow import synthesize

END = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def synth_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("synth_ws")
    settings = Settings(home=home)
    settings.ensure_dirs()
    synthesize(
        settings, SynthConfig(n_customers=3000, seed=11, start=datetime(2022, 1, 1, tzinfo=UTC), end=END)
    )
    repo.apply(settings)
    return home


@pytest.fixture
def synth_settings(synth_home: Path, tmp_path: Path) -> Settings:
    """The shared synthetic data with a private, empty MLflow store (never the user's mlruns/)."""
    return Settings(
        home=synth_home,
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_artifact_root=(tmp_path / "artifacts").as_uri(),
    )

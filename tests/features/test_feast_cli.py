"""The workspace is a Feast repository: the real feast CLI plans and applies Portrait's objects from it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from feast import FeatureStore

from features import repo
from features import store as fs
from features.feast_repo.feature_services import MODEL_SERVICES, SERVING_SERVICE
from features.pipeline import compute_features
from portrait.settings import Settings
from tests.conftest import TINY_SNAPSHOT

VIEWS = {"customer_profile", "customer_transactions", "customer_behaviour", "customer_realtime"}
SERVICES = {*MODEL_SERVICES.values(), SERVING_SERVICE}


def feast(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``feast -c <feast_dir> ...`` in a subprocess, from another folder than the workspace."""
    script = Path(sys.executable).with_name("feast")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "feast.cli.cli"]
    return subprocess.run(
        [*command, "-c", str(settings.feast_dir), *args],
        cwd=settings.home.parent,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def features_built(tiny_clean: Settings) -> Settings:
    compute_features(
        tiny_clean.clean_dir, tiny_clean.features_dir, [TINY_SNAPSHOT - timedelta(days=30), TINY_SNAPSHOT]
    )
    return tiny_clean


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_feast_plan_and_apply_on_a_fresh_workspace(features_built):
    settings = features_built
    store = fs.feature_store(settings)  # opening the store writes the repository; nothing is registered yet
    assert not store.list_feature_views() and not store.list_feature_services()

    plan = _ok(feast(settings, "plan"))
    for view in VIEWS:
        assert f"Created feature view {view}" in plan
    for service in SERVICES:
        assert f"Created feature service {service}" in plan
    assert "Created entity customer" in plan

    applied = _ok(feast(settings, "apply"))
    assert all(f"Created feature service {service}" in applied for service in SERVICES)
    registry = FeatureStore(repo_path=str(settings.feast_dir))  # Feast's own reading of the yaml
    assert registry.project == settings.feast_project_name
    assert {s.name for s in registry.list_feature_services()} == SERVICES
    assert {v.name for v in registry.list_feature_views()} == VIEWS
    assert fs.feature_names(registry, "lookalike") == fs.feature_names(
        fs.feature_store(settings), "lookalike"
    )


def test_feast_plan_after_portrait_apply_changes_nothing(features_built):
    """The CLI's objects (the generated repo file) are exactly the ones ``portrait features apply`` registers."""
    settings = features_built
    repo.apply(settings)
    plan = _ok(feast(settings, "plan"))
    assert "No changes to registry" in plan
    assert "Created feature" not in plan and "Deleted" not in plan and "Updated" not in plan

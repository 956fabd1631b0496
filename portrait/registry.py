"""Connecting to MLflow (tracking + model registry) from settings; shared by training and serving."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from portrait.settings import Settings

CHAMPION = "champion"
CHALLENGER = "challenger"


class TrackingUnavailable(RuntimeError):
    """The MLflow backend (e.g. PostgreSQL in the production profile) cannot be reached."""


def redact(uri: str) -> str:
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return uri


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the settings' tracking store and check that it answers."""
    if settings.tracking_uri.startswith("sqlite:"):
        settings.mlruns_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any backend failure means "unreachable"
        raise TrackingUnavailable(
            f"MLflow tracking store {redact(settings.tracking_uri)} is unreachable: {exc}"
        ) from exc
    return client

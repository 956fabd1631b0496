"""Connecting to MLflow (tracking + model registry) from settings; shared by training and serving.

The tracking URI comes from :attr:`Settings.tracking_uri`: SQLite under ``mlruns/`` (local profile),
the PostgreSQL database of ``postgres_url`` (production; created if missing, MLflow runs its schema
migrations on first use) or an explicit ``mlflow_tracking_uri`` (an MLflow server or another database).
:func:`connect` checks the store *before* any work with a bounded timeout, so a dead server gives a
quick :class:`TrackingUnavailable` (URL redacted) instead of MLflow's own minutes-long retry loops.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from typing import Any

import mlflow
from mlflow import MlflowClient

from portrait.backends import (
    BackendUnavailable,
    check_http,
    ensure_postgres_database,
    is_postgres,
    redact,
    with_connect_timeout,
)
from portrait.quiet import quiet_third_party
from portrait.settings import Settings

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


class TrackingUnavailable(BackendUnavailable):
    """The MLflow backend (e.g. PostgreSQL in the production profile) cannot be reached."""


_REGISTRATION_NOTICES = ("Successfully registered model", "Created version", "Registered model ")
"""Lines ``mlflow.register_model`` prints to stderr (not logs) at every registration."""


def register(model_uri: str, name: str, tags: dict[str, Any]) -> Any:
    """``mlflow.register_model``, its printed notices ("Successfully registered model 'churn'.", "Created
    version '1' ...") sent to the debug log instead of stderr; anything else it writes to stderr passes."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return mlflow.register_model(model_uri, name, tags=tags)
    finally:
        for line in captured.getvalue().splitlines():
            if line.startswith(_REGISTRATION_NOTICES):
                logger.debug("%s", line)
            elif line.strip():
                sys.stderr.write(line + "\n")


def mlflow_uri(settings: Settings) -> str:
    """The URI handed to MLflow: the tracking URI, with a connect timeout for PostgreSQL."""
    return with_connect_timeout(settings.tracking_uri, settings.postgres_connect_timeout_s)


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the settings' tracking store and check that it answers.

    Raises :class:`TrackingUnavailable` (URL without credentials) when it does not.
    """
    uri = settings.tracking_uri
    try:
        if uri.startswith("sqlite:"):
            settings.mlruns_dir.mkdir(parents=True, exist_ok=True)
        elif is_postgres(uri):
            # MLflow would retry an unreachable database for ~100 s before failing; check first.
            ensure_postgres_database(uri, timeout_s=settings.postgres_connect_timeout_s)
        elif settings.tracking_server:
            check_http(f"{uri.rstrip('/')}/health", timeout_s=float(settings.postgres_connect_timeout_s))
    except BackendUnavailable as exc:
        raise TrackingUnavailable(f"MLflow tracking store unavailable: {exc}") from exc
    quiet_third_party()  # again: Feast, if imported since, put its own DeprecationWarning filter first
    target = mlflow_uri(settings)
    mlflow.set_tracking_uri(target)
    mlflow.set_registry_uri(target)
    client = MlflowClient(tracking_uri=target, registry_uri=target)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any backend failure means "unreachable"
        raise TrackingUnavailable(f"MLflow tracking store {redact(uri)} is unreachable: {exc}") from exc
    logger.debug("MLflow tracking store %s", redact(uri))
    return client


__all__ = ["CHALLENGER", "CHAMPION", "TrackingUnavailable", "connect", "mlflow_uri", "redact"]

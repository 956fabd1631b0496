"""MLflow: one experiment per model, runs with metrics and plots, the registry and champion promotion.

Promotion is a decision, not a sort: a new version takes the ``champion`` alias only when it beats the
current champion on the *same* out-of-time data (the champion is re-scored on the candidate's test
split). Otherwise it is tagged ``challenger``. ``promote`` moves the alias deliberately.

Crash safety: a version is registered tagged ``status=incomplete`` and becomes ``status=ready`` only when its
run has finished every step but the alias. Only a ``ready`` version can take an alias, automatically
(:func:`apply_decision`) or by hand (:func:`promote`). Every run records the process that owns it (run tags
:data:`PID_TAG`, :data:`HOST_TAG`); a run killed outright (SIGKILL, power loss) stays ``RUNNING`` in MLflow,
so :func:`reap_dead_runs` (called when `portrait train` / `portrait retrain` start) marks the runs of dead
processes on this host ``FAILED`` and **deletes** their unfinished versions, as a failure inside the run
does (:func:`registration`): an incomplete version has no use, and keeping it would only invite promotion.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from portrait import catalogue
from portrait.registry import CHALLENGER, CHAMPION, TrackingUnavailable, connect
from portrait.settings import Settings

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "NotPromotable",
    "TrackingUnavailable",
    "configure",
    "owner_tags",
    "reap_dead_runs",
    "registration",
    "require_ready",
]

logger = logging.getLogger(__name__)

STATUS_TAG = "status"
READY, INCOMPLETE = "ready", "incomplete"
PID_TAG = "portrait.pid"
HOST_TAG = "portrait.host"


class NotPromotable(ValueError):
    """A version that may not take an alias: its training did not finish (not ``status=ready``)."""


def owner_tags() -> dict[str, str]:
    """Run tags naming the process that owns a run, so a later start can tell a dead run from a live one."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the settings' tracking store (raises TrackingUnavailable when it does not answer)."""
    return connect(settings)


def experiment_id(client: MlflowClient, settings: Settings, name: str) -> str:
    """The experiment of model ``name``, created on first use under the settings' artefact root.

    With an MLflow tracking server and no explicit ``mlflow_artifact_root``, the server decides where
    artefacts go (e.g. its ``--artifacts-destination``), so no location is passed.
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if settings.tracking_server and not settings.mlflow_artifact_root:
        return client.create_experiment(name)
    return client.create_experiment(name, artifact_location=f"{settings.artifact_root.rstrip('/')}/{name}")


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


@dataclass
class Decision:
    promoted: bool
    reason: str
    candidate: float
    champion: float | None
    champion_version: str | None


def decide(
    metric: str,
    candidate: float,
    champion_score: float | None,
    champion_version: str | None,
    *,
    higher_is_better: bool = True,
) -> Decision:
    if champion_version is None:
        return Decision(True, "no champion yet", candidate, None, None)
    if champion_score is None:
        return Decision(
            False,
            f"champion v{champion_version} could not be scored on this data; use `portrait promote` to decide",
            candidate,
            None,
            champion_version,
        )
    better = candidate > champion_score if higher_is_better else candidate < champion_score
    if better:
        return Decision(
            True,
            f"{metric} {candidate:.4f} {'>' if higher_is_better else '<'} champion's {champion_score:.4f}",
            candidate,
            champion_score,
            champion_version,
        )
    return Decision(
        False,
        f"{metric} {candidate:.4f} {'<=' if higher_is_better else '>='} champion's {champion_score:.4f}",
        candidate,
        champion_score,
        champion_version,
    )


def apply_decision(client: MlflowClient, name: str, version: str, decision: Decision) -> None:
    """Set the tags and then the alias for a finished candidate (the last step of a successful run).

    The alias write is the commit point: if anything before it fails, no alias has moved. After it,
    only the old champion's ``role`` tag is updated, and a failure there is logged, not raised.
    """
    require_ready(client, name, version)
    alias = CHAMPION if decision.promoted else CHALLENGER
    client.set_model_version_tag(name, version, "promotion", decision.reason)
    client.set_model_version_tag(name, version, "role", alias)
    client.set_registered_model_alias(name, alias, version)
    if decision.promoted and decision.champion_version:
        try:
            client.set_model_version_tag(name, decision.champion_version, "role", "retired")
        except Exception as exc:  # noqa: BLE001 - cosmetic; the alias has already moved
            logger.warning("%s v%s: could not tag as retired: %s", name, decision.champion_version, exc)


@contextmanager
def registration(client: MlflowClient, name: str, version: str) -> Iterator[None]:
    """Guard the steps between registering ``version`` and setting its alias.

    If they fail (or are interrupted), the unaliased version is deleted so no half-registered model
    stays in the registry; if even that fails (the store is gone), it stays tagged ``status=incomplete``
    and without an alias, so nothing serves it. Aliases of other versions are never touched.
    """
    try:
        yield
    except BaseException:
        _discard(client, name, version)
        raise


def _discard(client: MlflowClient, name: str, version: str) -> None:
    try:
        if client.get_model_version(name, version).aliases:
            return  # the alias moved before the failure: the version is live, keep it
        client.delete_model_version(name, version)
        logger.warning("%s v%s: training failed after registration; the version was deleted", name, version)
    except Exception as exc:  # noqa: BLE001 - best effort while already failing
        logger.warning(
            "%s v%s: training failed after registration and the version could not be deleted (%s); "
            "it has no alias and is tagged status=incomplete",
            name,
            version,
            exc,
        )


def promote(client: MlflowClient, name: str, version: str) -> None:
    """Deliberately make ``version`` the champion (the override behind `portrait promote`).

    Raises :class:`NotPromotable` for a version whose training did not finish."""
    require_ready(client, name, version)  # also raises (MlflowException) if it does not exist
    current = champion(client, name)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "role", CHAMPION)
    client.set_model_version_tag(name, version, "promotion", "manual promotion")
    if current and current.version != version:
        client.set_model_version_tag(name, current.version, "role", "retired")


def require_ready(client: MlflowClient, name: str, version: str) -> None:
    """Raise :class:`NotPromotable` unless ``version`` of ``name`` is tagged ``status=ready``."""
    status = client.get_model_version(name, version).tags.get(STATUS_TAG)
    if status != READY:
        raise NotPromotable(
            f"{name} v{version} is not promotable: its training did not finish (status={status or 'unset'}, "
            f"only status={READY} versions can be champion)"
        )


@dataclass
class ReapedRun:
    """A run whose process died without ending it, as :func:`reap_dead_runs` found and closed it."""

    model: str
    run_id: str
    pid: int
    deleted_versions: list[str]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, dead but not yet waited for, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True  # no /proc: signal 0 said it exists


def reap_dead_runs(client: MlflowClient, names: Sequence[str]) -> list[ReapedRun]:
    """Close the runs of experiments ``names`` left ``RUNNING`` by a process of this host that is gone.

    Such a run was killed outright (its ``finally`` never ran). Its versions that are not ``ready`` (none
    of them has an alias: only ready versions can take one) are deleted first, then the run is marked
    ``FAILED``, so an interruption of this clean-up is finished by the next start. Runs of other hosts,
    runs of live processes and runs without an owner tag (older runs) are left alone.
    """
    host = socket.gethostname()
    reaped: list[ReapedRun] = []
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            continue
        runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
        for run in runs:
            tags = run.data.tags
            if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
                continue
            pid = int(tags[PID_TAG])
            if process_alive(pid):
                continue
            run_id = run.info.run_id
            deleted = []
            for mv in client.search_model_versions(f"name = '{name}' and tags.run_id = '{run_id}'"):
                if mv.tags.get(STATUS_TAG) == READY:
                    continue  # finished before the process died; the alias step decides about it
                client.delete_model_version(name, mv.version)
                deleted.append(str(mv.version))
            client.set_tag(run_id, "portrait.failure", f"process {pid} on {host} died before the run ended")
            client.set_terminated(run_id, "FAILED")
            logger.warning(
                "%s: run %s of dead process %d marked FAILED%s",
                name,
                run_id,
                pid,
                f"; its unfinished version(s) {', '.join(deleted)} deleted" if deleted else "",
            )
            reaped.append(ReapedRun(name, run_id, pid, deleted))
    return reaped


def model_table(client: MlflowClient, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Registered versions with their aliases and headline metrics (for `portrait models`).

    Aliases come from ``get_model_version``: ``search_model_versions`` returns versions without them.
    """
    rows: list[dict[str, Any]] = []
    for name in names if names is not None else catalogue.names():
        try:
            versions = client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            continue
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
            metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            rows.append(
                {
                    "model": name,
                    "version": int(mv.version),
                    "aliases": ",".join(_aliases(client, name, mv)),
                    "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").strftime(
                        "%Y-%m-%d %H:%M"
                    ),
                    "test_metric": _headline(name, metrics),
                    "run_id": mv.run_id,
                }
            )
    return pd.DataFrame(rows)


def _aliases(client: MlflowClient, name: str, mv: ModelVersion) -> list[str]:
    if mv.aliases:
        return list(mv.aliases)
    try:
        return list(client.get_model_version(name, mv.version).aliases)
    except MlflowException:
        return []


def _headline(name: str, metrics: dict[str, float]) -> str:
    try:
        key = catalogue.get(name).headline_key
    except KeyError:
        return ""
    return f"{key.removeprefix('test_')}={metrics[key]:.4f}" if key in metrics else ""

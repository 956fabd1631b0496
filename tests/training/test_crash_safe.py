"""Crash-safe training: `portrait train` killed with SIGKILL right after it registered a version.

The real CLI runs in a subprocess on the shared synthetic workspace with a private MLflow store; the test
polls that store's registry and kills the process as soon as the version appears, then checks the state
the kill left (the version must still be unfinished: the kill landed between registration and the end).
Then: the version cannot be promoted, the run stays
``RUNNING`` until the next `portrait train` starts, which marks it ``FAILED`` and deletes the version, and
the ``champion`` alias never pointed at it. On disk: the feature tables are byte for byte what they were,
the killed process's scratch folder is left behind and removed as the next command starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import OperationalError

from portrait.registry import connect
from portrait.settings import Settings
from tests.test_faults import temporaries
from tests.test_own_data_cli import REPO, portrait
from training.tracking import HOST_TAG, PID_TAG, Decision, NotPromotable, apply_decision, process_alive

MODEL = "churn"


def _registered(client: MlflowClient) -> list:
    try:
        return client.search_model_versions(f"name = '{MODEL}'")
    except (MlflowException, OperationalError):  # the child holds the SQLite write lock for a moment
        return []


def test_sigkilled_training_leaves_nothing_promotable_and_is_cleaned_at_next_start(
    synth_home: Path, tmp_path: Path
) -> None:
    tables = {  # the validated inputs and any feature tables already built
        p: p.read_bytes() for p in (synth_home / "data").rglob("*.parquet") if not p.name.startswith(".")
    }
    assert tables
    store = {
        "PORTRAIT_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PORTRAIT_MLFLOW_ARTIFACT_ROOT": (tmp_path / "artifacts").as_uri(),
    }
    client = connect(Settings(home=synth_home, mlflow_tracking_uri=store["PORTRAIT_MLFLOW_TRACKING_URI"]))
    script = Path(sys.executable).with_name("portrait")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    env.update(PORTRAIT_HOME=str(synth_home), PYTHONWARNINGS="ignore", **store)
    with (tmp_path / "train.log").open("w") as log:
        child = subprocess.Popen(
            [str(script), "train", MODEL, "--trials", "1"], cwd=REPO, env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 300
        while not (versions := _registered(client)):
            assert child.poll() is None, (tmp_path / "train.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no version registered in 300 s"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    (seen,) = versions
    seen = client.get_model_version(MODEL, seen.version)  # what the kill left (its SQLite locks are gone)
    assert child.returncode == -signal.SIGKILL
    assert seen.tags.get("status") == "incomplete", f"killed too late: {seen.tags}"
    assert not seen.aliases
    run = client.get_run(seen.tags["run_id"])
    assert run.info.status == "RUNNING"  # what SIGKILL leaves behind
    assert run.data.tags[PID_TAG] == str(child.pid) and run.data.tags[HOST_TAG]
    assert not process_alive(child.pid)
    for path, data in tables.items():  # what training reads is untouched
        assert path.read_bytes() == data
    litter = temporaries(synth_home / "data")
    assert litter and all(f".{child.pid}-" in p.name for p in litter)  # its scratch folder, named by pid

    refused = portrait(synth_home, "promote", MODEL, str(seen.version), timeout=120, **store)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr + refused.stdout
    (line,) = [
        x for x in refused.stderr.splitlines() if x.startswith("error:")
    ]  # one line (INFO lines aside)
    assert "not promotable" in line and "status=incomplete" in line
    with pytest.raises(NotPromotable, match="status=incomplete"):  # nor by the champion rule
        apply_decision(client, MODEL, str(seen.version), Decision(True, "no champion yet", 0.9, None, None))
    assert not client.get_model_version(MODEL, seen.version).aliases

    # The next start cleans up before anything else; a window no data fits ends this run right after.
    nxt = portrait(
        synth_home, "train", MODEL, "--trials", "1", "--horizon-days", "5000", timeout=300, **store
    )
    assert nxt.returncode == 2, nxt.stdout + nxt.stderr
    assert "marked FAILED" in nxt.stderr and f"version(s) {seen.version} deleted" in nxt.stderr
    run = client.get_run(seen.tags["run_id"])
    assert run.info.status == "FAILED"
    assert "died before the run ended" in run.data.tags["portrait.failure"]
    assert _registered(client) == []
    assert temporaries(synth_home / "data") == []  # the killed run's scratch folder went as the next started
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(MODEL, "champion")

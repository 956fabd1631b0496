"""The cluster profile end to end, through the command line a user runs, on data that is not ours (the shop of
``examples/own_data``): import -> features on Spark -> train (labels by Spark SQL, the training frame written
by Spark, the search on a sample of customers, the refit on every row by LightGBM on Dask) -> materialize ->
score on Spark. Real Redis and PostgreSQL (the registry and MLflow), a real local[2] Spark session, a real
local Dask cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from portrait.backends import ensure_postgres_database
from portrait.cli import app
from portrait.settings import Settings
from tests.cluster.conftest import cluster_settings, use_cluster_env
from tests.production.conftest import Servers
from training import fit as fit_module
from training.labels import build_labels
from training.train import plan_for, resolve

pytestmark = [pytest.mark.production, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_data" / "mapping.yaml"
PLAN = ["--n-train", "2", "--step-days", "60"]
MEMORY_ROWS = 1000
"""Fewer than the churn frame's rows, so training reads a sample and the refit reads the rest from disk."""


@pytest.fixture
def cluster_env(
    spark: object,
    servers: Servers,
    pg_database: str,
    key_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Settings]:
    """A fresh workspace on the cluster profile, with its own PostgreSQL database and Redis key prefix."""
    ensure_postgres_database(pg_database, timeout_s=5)
    settings = cluster_settings(
        tmp_path / "home", postgres_url=pg_database, redis_url=servers.redis_url, redis_key_prefix=key_prefix
    )
    use_cluster_env(
        monkeypatch,
        settings,
        PORTRAIT_DISTRIBUTED_REFIT="true",
        PORTRAIT_DASK_WORKERS="2",
        PORTRAIT_TRAIN_MEMORY_ROWS=str(MEMORY_ROWS),
        PORTRAIT_TRAIN_THREADS="1",
    )
    monkeypatch.setattr(fit_module, "MAX_ROUNDS", 40)
    try:
        yield Settings()
    finally:
        mlflow.set_tracking_uri(None)  # before pg_database drops the database MLflow points at


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"portrait {' '.join(args)}: {result.output}{result.exception!r}"
    return result.output


def test_import_features_train_materialize_score_on_the_cluster_profile(
    cluster_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = cluster_env
    _run("data", "import", str(EXAMPLE))
    _run("features", "build")  # the latest snapshot, on Spark
    frames = settings.feast_dir / "frames"

    # More labelled rows than the process may hold and no distributed refit to read the rest: one line that
    # says which setting to change, a non-zero exit, and nothing left on disk.
    monkeypatch.setenv("PORTRAIT_DISTRIBUTED_REFIT", "false")
    refused = CliRunner().invoke(app, ["train", "churn", "--trials", "1", *PLAN])
    assert refused.exit_code != 0
    assert "PORTRAIT_DISTRIBUTED_REFIT" in refused.output and "Traceback" not in refused.output
    assert not frames.exists() or not any(frames.iterdir())
    monkeypatch.setenv("PORTRAIT_DISTRIBUTED_REFIT", "true")

    for name, extra in (("churn", []), ("conversion", []), ("clv", ["--horizon-days", "180"])):
        _run("train", name, "--trials", "1", *PLAN, *extra)  # what `portrait score` serves

    # What the refit saw: every labelled row before the test snapshot, counted here by DuckDB on the same data,
    # while the training process held a sample of the customers.
    spec, options = resolve(settings, "churn", n_train=2, step_days=60)
    plan = plan_for(settings, spec, **options)
    labels = build_labels(settings.clean_dir, plan.all, spec.label)
    fitting = labels[labels.event_timestamp < pd.Timestamp(plan.test)]
    assert len(labels) > MEMORY_ROWS  # so the process held a sample
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/churn@champion").unwrap_python_model()
    refit = model.metadata["fit"]["distributed"]
    assert refit["workers"] == 2 and refit["rows"] == len(fitting), (refit, len(fitting))
    run = mlflow.get_run(mlflow.MlflowClient().get_model_version_by_alias("churn", "champion").run_id)
    in_memory = sum(int(run.data.params[f"rows_{k}"]) for k in ("train", "validation", "test"))
    assert MEMORY_ROWS * 0.7 < in_memory < len(labels), (in_memory, len(labels))
    assert not frames.exists() or not any(frames.iterdir())  # the frame on disk is gone after training

    _run("features", "materialize")
    out = tmp_path / "tags.parquet"
    _run("score", "--out", str(out))  # on Spark: a folder of part files
    tags = pd.read_parquet(out)
    customers = pd.read_parquet(settings.clean_dir / "customers.parquet", columns=["customer_id"])
    assert set(tags.customer_id) == set(customers.customer_id)
    assert tags.churn_probability.between(0, 1).all() and tags.churn_tier.notna().all()
    assert len(list(out.glob("part-*.parquet"))) >= 2

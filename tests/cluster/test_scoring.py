"""`portrait score` on the cluster profile: every customer's tags from Spark partitions, equal to the
single-machine scoring (the service's Tagger over the online store) of the same customers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.tables import snapshot_path
from portrait import predlog
from portrait.cli import app
from tests.cluster.compare import assert_same_values
from tests.cluster.conftest import SNAPSHOT, Deployment, use_cluster_env

pytestmark = [pytest.mark.production, pytest.mark.slow]


def _score(*args: str) -> None:
    result = CliRunner().invoke(app, ["score", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)


def test_score_on_spark_equals_single_machine_scoring(
    spark: object,
    champions: Deployment,
    materialized: Deployment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_cluster_env(monkeypatch, materialized.cluster, PORTRAIT_SCORE_PARTITIONS="3")
    started = datetime.now(UTC)
    _score("--out", str(tmp_path / "spark.parquet"), "--csv")  # the cluster profile scores on Spark
    logged = predlog.read(materialized.cluster, "churn", start=started, source="batch")
    _score("--out", str(tmp_path / "local.parquet"), "--no-spark")

    folder = tmp_path / "spark.parquet"
    assert folder.is_dir() and len(list(folder.glob("part-*.parquet"))) >= 2  # written by several partitions
    on_spark = pd.read_parquet(folder)
    single = pd.read_parquet(tmp_path / "local.parquet")
    profile = snapshot_path(materialized.cluster.features_dir, "customer_profile", SNAPSHOT)
    everyone = set(pd.read_parquet(profile, columns=["customer_id"]).customer_id)
    assert set(on_spark.customer_id) == everyone == set(single.customer_id)
    assert {"churn_probability", "conversion_tier", "value_predicted", "lifecycle_stage"} <= set(
        on_spark.columns
    )
    assert on_spark.churn_reasons.str.len().gt(0).mean() > 0.9
    assert_same_values(on_spark, single, ["customer_id"], "tags")
    # the Spark run logged every customer's prediction, as the single-machine run does
    assert sorted(logged.customer_id) == sorted(on_spark.customer_id)
    assert logged.score.to_numpy() == pytest.approx(
        on_spark.set_index("customer_id").loc[logged.customer_id, "churn_probability"].to_numpy()
    )

    csv = pd.read_csv(next((tmp_path / "spark.csv").glob("part-*.csv")))
    assert list(csv.columns) == list(on_spark.columns)
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind

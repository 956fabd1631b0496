"""Labels on Spark: the query DuckDB runs (``training.labels.label_sql``), run by Spark SQL over the same
files, gives the same rows and values for every label kind and population."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.cluster.conftest import SourceData
from training.labels import LabelSpec, build_labels, spark_labels

pytestmark = pytest.mark.slow

SPECS = [
    LabelSpec("churn", 90),
    LabelSpec("conversion", 30),
    LabelSpec("conversion", 30, population="browsers"),
    LabelSpec("clv", 180),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.target}-{s.population}")
def test_spark_labels_equal_duckdb(spark: object, source_data: SourceData, spec: LabelSpec) -> None:
    clean = source_data.home / "data" / "clean"
    snapshots = source_data.snapshots[:3]
    on_duckdb = build_labels(clean, snapshots, spec)
    on_spark = spark_labels(spark, clean, snapshots, spec).toPandas()  # type: ignore[arg-type]
    on_spark["event_timestamp"] = pd.to_datetime(on_spark.event_timestamp).dt.tz_localize("UTC")
    on_spark = on_spark.sort_values(["event_timestamp", "customer_id"]).reset_index(drop=True)
    assert len(on_duckdb) > 20 and on_duckdb.event_timestamp.nunique() == len(snapshots)
    assert on_duckdb.label.nunique() > 1  # both outcomes (or several values) occur, so values are compared
    pd.testing.assert_frame_equal(on_spark, on_duckdb, check_dtype=False)

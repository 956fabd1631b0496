"""The feature definitions on Spark give the values DuckDB gives, view by view, snapshot by snapshot."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from features.pipeline import VIEWS, feature_schema
from features.tables import snapshot_path
from tests.cluster.compare import assert_same_values
from tests.cluster.conftest import Workspaces

pytestmark = pytest.mark.slow


def _types(dtype: str) -> str:
    return {"int64": "int64", "float64": "double", "string": "string", "boolean": "bool"}.get(dtype, dtype)


@pytest.mark.parametrize("view", VIEWS)
def test_spark_features_equal_duckdb(workspaces: Workspaces, view: str) -> None:
    schema = feature_schema()[view]
    for snapshot in workspaces.spark_snapshots:
        on_spark = pq.read_table(snapshot_path(workspaces.spark / "data" / "features", view, snapshot))
        on_duckdb = pq.read_table(snapshot_path(workspaces.duck / "data" / "features", view, snapshot))
        label = f"{view}@{snapshot:%Y-%m-%d}"
        assert on_spark.num_rows > 100, label
        # Spark writes the types the Feast views declare (DuckDB writes its windowed counts as doubles).
        for name, dtype in schema.items():
            if name != "snapshot_ts":
                assert str(on_spark.schema.field(name).type) == _types(str(dtype).removesuffix("!")), name
        for name in ("event_timestamp", "created_timestamp"):
            assert str(on_spark.schema.field(name).type) == "timestamp[us, tz=UTC]", name
        spark_frame = on_spark.to_pandas().drop(columns="created_timestamp")
        duck_frame = on_duckdb.to_pandas().drop(columns="created_timestamp")
        assert_same_values(spark_frame, duck_frame, ["customer_id"], label)


def test_spark_build_leaves_one_file_per_view_and_snapshot(workspaces: Workspaces) -> None:
    features = workspaces.spark / "data" / "features"
    leftovers = [p for p in features.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    for view in VIEWS:
        files = sorted(p.name for p in (features / view).iterdir())
        assert files == [snapshot_path(features, view, s).name for s in workspaces.spark_snapshots]
        assert all((features / view / f).is_file() for f in files)

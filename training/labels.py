"""Labels, built per snapshot from the validated transactions: one SQL query that DuckDB or Spark SQL runs.

Definitions (windows are configurable; ``T`` is the snapshot, all windows are half-open):

* **churn** -- population: customers with a purchase in ``[T - lookback, T)`` (default 365 days);
  label 1 when they make no purchase in ``[T, T + horizon)`` (default 90 days).
* **conversion** -- population: customers signed up before ``T`` (variant ``browsers``: customers who
  had browsing events before ``T`` but never ordered); label 1 when they purchase in
  ``[T, T + horizon)`` (default 30 days).
* **clv** -- population: customers signed up before ``T``; label = gross purchase value (sum of the
  non-return line amounts) in ``[T, T + horizon)`` (default 365 days). Most labels are 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import duckdb
import pandas as pd

from features.history import data_end, data_start  # noqa: F401 - re-exported for training

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

Population = Literal["all", "browsers"]


@dataclass(frozen=True)
class LabelSpec:
    """Which label to build and its windows (days)."""

    target: Literal["churn", "conversion", "clv"]
    horizon_days: int
    lookback_days: int = 365
    population: Population = "all"


TABLES = ("customers", "transactions", "events")


def _connect(clean_dir: Path, snapshots: Sequence[datetime]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in TABLES:
        path = str(clean_dir / f"{table}.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    con.register("snaps_df", _snapshot_frame(snapshots))
    con.execute("CREATE TEMP TABLE snaps AS SELECT snapshot_ts FROM snaps_df")
    return con


def _snapshot_frame(snapshots: Sequence[datetime]) -> pd.DataFrame:
    return pd.DataFrame({"snapshot_ts": pd.to_datetime([s.astimezone(UTC) for s in snapshots], utc=True)})


def label_sql(spec: LabelSpec) -> str:
    """The labels of ``spec`` as one SQL query over the views ``customers``, ``transactions``, ``events`` and
    ``snaps`` (``snapshot_ts``): ``customer_id, event_timestamp, label``.

    The text is the one definition both engines run: DuckDB (:func:`build_labels`) and Spark SQL
    (:func:`spark_labels`, the cluster profile); ``tests/cluster`` checks that they give the same rows.
    """
    h, lb = int(spec.horizon_days), int(spec.lookback_days)
    future = f"o.ts >= s.snapshot_ts AND o.ts < s.snapshot_ts + INTERVAL {h} DAY"
    orders = "(SELECT customer_id, ts, amount FROM transactions WHERE NOT is_return)"
    if spec.target == "churn":
        return f"""
            SELECT o.customer_id, s.snapshot_ts AS event_timestamp,
                   CAST(1 - max(CASE WHEN {future} THEN 1 ELSE 0 END) AS INTEGER) AS label
            FROM {orders} o CROSS JOIN snaps s
            WHERE o.ts >= s.snapshot_ts - INTERVAL {lb} DAY AND o.ts < s.snapshot_ts + INTERVAL {h} DAY
            GROUP BY o.customer_id, s.snapshot_ts
            HAVING max(CASE WHEN o.ts < s.snapshot_ts THEN 1 ELSE 0 END) = 1
        """
    value = "CASE WHEN o.ts IS NOT NULL THEN o.amount ELSE 0 END"
    agg = (
        "CAST(max(CASE WHEN o.ts IS NOT NULL THEN 1 ELSE 0 END) AS INTEGER)"
        if spec.target == "conversion"
        else f"CAST(coalesce(sum({value}), 0) AS DOUBLE)"
    )
    population = "c.signup_ts < s.snapshot_ts"
    if spec.population == "browsers":
        population += (
            " AND EXISTS (SELECT 1 FROM events e WHERE e.customer_id = c.customer_id AND e.ts < s.snapshot_ts)"
            " AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.customer_id = c.customer_id"
            " AND NOT t.is_return AND t.ts < s.snapshot_ts)"
        )
    return f"""
        SELECT c.customer_id, s.snapshot_ts AS event_timestamp, {agg} AS label
        FROM customers c CROSS JOIN snaps s
        LEFT JOIN {orders} o ON o.customer_id = c.customer_id AND {future}
        WHERE {population}
        GROUP BY c.customer_id, s.snapshot_ts
    """


def build_labels(clean_dir: Path, snapshots: Sequence[datetime], spec: LabelSpec) -> pd.DataFrame:
    """One row per (customer, snapshot) in the spec's population: ``customer_id, event_timestamp, label``."""
    con = _connect(clean_dir, snapshots)
    try:
        frame = con.execute(label_sql(spec) + " ORDER BY 2, 1").df()
    finally:
        con.close()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def spark_labels(
    session: SparkSession, clean_dir: Path, snapshots: Sequence[datetime], spec: LabelSpec
) -> SparkDataFrame:
    """:func:`build_labels` on Spark: the same query over the same Parquet files, as a Spark DataFrame that
    stays on the executors (the cluster profile's training frames, :mod:`training.dataset`)."""
    for table in TABLES:
        session.read.parquet(str(clean_dir / f"{table}.parquet")).createOrReplaceTempView(table)
    session.createDataFrame(_snapshot_frame(snapshots)).createOrReplaceTempView("snaps")
    return session.sql(label_sql(spec))

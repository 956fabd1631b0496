"""How far the validated history reaches: the first and last recorded activity (DuckDB over ``data/clean``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb


def data_end(clean_dir: Path) -> datetime:
    """The time of the latest transaction or event: labels may not look past it."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    latest = con.execute(
        "SELECT greatest((SELECT max(ts) FROM read_parquet(?)), "
        "coalesce((SELECT max(ts) FROM read_parquet(?)), TIMESTAMPTZ '1970-01-01'))",
        [str(clean_dir / "transactions.parquet"), str(clean_dir / "events.parquet")],
    ).fetchone()[0]
    return latest.astimezone(UTC)


def data_start(clean_dir: Path) -> datetime:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    first = con.execute(
        "SELECT min(ts) FROM read_parquet(?)", [str(clean_dir / "transactions.parquet")]
    ).fetchone()[0]
    return first.astimezone(UTC)

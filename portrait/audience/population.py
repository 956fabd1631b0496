"""The population audiences are selected from: one Parquet table, one row per customer.

Columns: ``customer_id``, the batch tags (``<field>_probability`` / ``<field>_predicted``, ``<field>_tier``,
``lifecycle_stage``, ``rfm_segment``, ...) and every feature of the latest feature snapshot. It is built by
whoever can score (``serving.audiences.population``: the tagger over every customer of the snapshot, joined
to the snapshot's feature tables) and cached in the workspace per model versions and snapshot
(:func:`population_key`), so it is computed once, not per request.

Selections run as DuckDB SQL over the Parquet file; a filter's fields are checked against
:attr:`Population.columns` (the whitelist) before any SQL is built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from portrait.audience.filters import ColumnKind, compile_filter, quote
from portrait.cpu import available_cores
from portrait.files import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

ID = "customer_id"
TIER_SUFFIX = "_tier"
NOT_ATTRIBUTES = frozenset({ID, "rfm_score"})
"""Columns that are no trait of a customer (the id) or too fine-grained to report (125 RFM codes)."""
POPULATION_DIR = "_population"


def population_key(versions: Mapping[str, str], snapshot: str) -> str:
    """The cache key of a population: the served model versions and the feature snapshot."""
    text = json.dumps({"versions": dict(sorted(versions.items())), "snapshot": snapshot}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _kind(dtype: pa.DataType) -> ColumnKind | None:
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "number"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_dictionary(dtype):
        return "text"
    return None  # timestamps, lists: not filterable


@dataclass
class Population:
    """A population table on disk and what is known about it (columns, size, cached statistics)."""

    path: Path
    key: str
    snapshot: str
    versions: dict[str, str]
    columns: dict[str, ColumnKind]
    size: int
    _stats: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(
        cls, path: Path, *, key: str = "", snapshot: str = "", versions: Mapping[str, str] | None = None
    ) -> Population:
        """Open a population Parquet file (its schema gives the filterable columns)."""
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
        if ID not in schema.names:
            raise ValueError(f"{path} has no {ID} column")
        columns = {f.name: k for f in schema if (k := _kind(f.type)) is not None}
        info = _read_info(path)
        return cls(
            path=path,
            key=key or info.get("key", ""),
            snapshot=snapshot or info.get("snapshot", ""),
            versions=dict(versions or info.get("versions", {})),
            columns=columns,
            size=meta.num_rows,
        )

    @property
    def tiers(self) -> list[str]:
        """The tier columns (``churn_tier``, ``conversion_tier``, ...), in table order."""
        return [c for c, k in self.columns.items() if c.endswith(TIER_SUFFIX) and k == "text"]

    @property
    def attributes(self) -> list[str]:
        """Categorical columns reported by insight (tiers, lifecycle stage, RFM segment, region, ...)."""
        return [c for c, k in self.columns.items() if k in ("text", "boolean") and c not in NOT_ATTRIBUTES]

    @property
    def numeric(self) -> list[str]:
        """Numeric columns reported by insight (scores and features)."""
        return [c for c, k in self.columns.items() if k == "number" and c not in NOT_ATTRIBUTES]

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the population as the view ``population``."""
        con = duckdb.connect(config={"threads": max(1, available_cores())})
        con.execute(f"CREATE VIEW population AS SELECT * FROM read_parquet('{_sql_path(self.path)}')")
        return con

    def select(self, filter_: Any) -> pd.DataFrame:
        """The ``customer_id`` of every customer matching ``filter_``, sorted."""
        compiled = compile_filter(filter_, self.columns)
        con = self.connect()
        try:
            return con.execute(
                f"SELECT {ID} FROM population WHERE {compiled.sql} ORDER BY {ID}", compiled.params
            ).df()
        finally:
            con.close()

    def breakdown(self, filter_: Any) -> tuple[int, dict[str, dict[str, int]]]:
        """How many customers match ``filter_`` and how they split over each tier column (one scan)."""
        compiled = compile_filter(filter_, self.columns)
        tiers = self.tiers
        con = self.connect()
        try:
            if not tiers:
                (n,) = con.execute(
                    f"SELECT count(*) FROM population WHERE {compiled.sql}", compiled.params
                ).fetchone()
                return int(n), {}
            sets = ", ".join(f"({quote(t)})" for t in tiers)
            rows = con.execute(
                f"SELECT {', '.join(f'{quote(t)}' for t in tiers)}, "
                f"{', '.join(f'grouping({quote(t)})' for t in tiers)}, count(*) "
                f"FROM population WHERE {compiled.sql} GROUP BY GROUPING SETS ({sets})",
                compiled.params,
            ).fetchall()
        finally:
            con.close()
        return _tier_counts(rows, tiers)

    def members_breakdown(self, members: Path | pd.DataFrame) -> tuple[int, dict[str, dict[str, int]]]:
        """Size and tier split of a stored member list (customers no longer in the population are left out)."""
        tiers = self.tiers
        con = self.connect()
        try:
            _register_members(con, members)
            if not tiers:
                (n,) = con.execute(
                    f"SELECT count(*) FROM population SEMI JOIN members USING ({ID})"
                ).fetchone()
                return int(n), {}
            sets = ", ".join(f"({quote(t)})" for t in tiers)
            rows = con.execute(
                f"SELECT {', '.join(quote(t) for t in tiers)}, "
                f"{', '.join(f'grouping({quote(t)})' for t in tiers)}, count(*) "
                f"FROM population SEMI JOIN members USING ({ID}) GROUP BY GROUPING SETS ({sets})"
            ).fetchall()
        finally:
            con.close()
        return _tier_counts(rows, tiers)

    def known(self, customer_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """``(known, unknown)`` ids (unique, in first-seen order) against the population."""
        wanted = list(dict.fromkeys(str(c).strip() for c in customer_ids if str(c).strip()))
        con = self.connect()
        try:
            con.register("wanted", pa.table({ID: pa.array(wanted, pa.string())}))
            found = {
                r[0]
                for r in con.execute(f"SELECT {ID} FROM wanted SEMI JOIN population USING ({ID})").fetchall()
            }
        finally:
            con.close()
        return [c for c in wanted if c in found], [c for c in wanted if c not in found]

    def column_values(self, columns: Sequence[str], customer_ids: pd.DataFrame) -> pd.DataFrame:
        """``customer_id`` and ``columns`` of the given customers (left join: missing customers get nulls)."""
        names = [c for c in columns if c in self.columns and c != ID]
        con = self.connect()
        try:
            con.register("wanted", pa.Table.from_pandas(customer_ids[[ID]], preserve_index=False))
            select = ", ".join(f"p.{quote(c)}" for c in names)
            return con.execute(
                f"SELECT w.{ID}{', ' + select if select else ''} FROM wanted w "
                f"LEFT JOIN population p USING ({ID}) ORDER BY w.{ID}"
            ).df()
        finally:
            con.close()

    def stats(self) -> Any:
        """The population's aggregate statistics (cached: computed once per population)."""
        from portrait.audience.insight import aggregate, load_aggregate, save_aggregate

        with self._lock:
            if self._stats is None:
                cache = self.path.with_suffix(".stats.json")
                self._stats = load_aggregate(cache)
                if self._stats is None:
                    con = self.connect()
                    try:
                        self._stats = aggregate(con, "population", self.numeric, self.attributes)
                    finally:
                        con.close()
                    try:
                        save_aggregate(cache, self._stats)
                    except OSError as exc:  # a read-only workspace: keep it in memory
                        logger.warning("cannot cache population statistics at %s: %s", cache, exc)
            return self._stats


def _tier_counts(rows: list[tuple[Any, ...]], tiers: list[str]) -> tuple[int, dict[str, dict[str, int]]]:
    k = len(tiers)
    out: dict[str, dict[str, int]] = {t: {} for t in tiers}
    total = 0
    for row in rows:
        values, grouping, count = row[:k], row[k : 2 * k], int(row[-1])
        for i, tier in enumerate(tiers):
            if grouping[i] == 0:
                label = "(none)" if values[i] is None else str(values[i])
                out[tier][label] = out[tier].get(label, 0) + count
                if i == 0:
                    total += count
    return total, {t: dict(sorted(v.items())) for t, v in out.items()}


def _register_members(con: duckdb.DuckDBPyConnection, members: Path | pd.DataFrame) -> None:
    if isinstance(members, pd.DataFrame):
        con.register("members", pa.Table.from_pandas(members[[ID]], preserve_index=False))
    else:
        con.execute(f"CREATE VIEW members AS SELECT {ID} FROM read_parquet('{_sql_path(members)}')")


def _sql_path(path: Path) -> str:
    """A file path as a SQL string literal's content (paths are the workspace's own, quotes doubled anyway)."""
    return str(path).replace("'", "''")


def _info_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_info(path: Path) -> dict[str, Any]:
    info = _info_path(path)
    if not info.exists():
        return {}
    try:
        return dict(json.loads(info.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def cached_path(root: Path, key: str) -> Path:
    """Where the population of ``key`` is cached under the audiences folder ``root``."""
    return root / POPULATION_DIR / f"{key}.parquet"


def write_population(
    root: Path, key: str, frame: pd.DataFrame | pa.Table, *, snapshot: str, versions: Mapping[str, str]
) -> Population:
    """Cache a population table (atomically) with its description, and open it."""
    path = cached_path(root, key)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=262_144)
    write_text_atomic(
        _info_path(path),
        json.dumps({"key": key, "snapshot": snapshot, "versions": dict(versions), "rows": table.num_rows}),
    )
    logger.info(
        "audience population %s: %d customers x %d columns -> %s",
        key,
        table.num_rows,
        table.num_columns,
        path,
    )
    return Population.open(path, key=key, snapshot=snapshot, versions=versions)


def open_cached(root: Path, key: str) -> Population | None:
    """The cached population of ``key``, or None."""
    path = cached_path(root, key)
    if not path.exists():
        return None
    return Population.open(path, key=key)


__all__ = [
    "ID",
    "Population",
    "cached_path",
    "open_cached",
    "population_key",
    "write_population",
]

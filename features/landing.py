"""The landing zone: every event or transaction accepted in real time, kept durably and exactly once.

``POST /v1/events`` and ``portrait stream`` append accepted items here before they acknowledge them. A
row is keyed by ``(kind, item_id)`` -- the event id or the order line id -- so a retried batch or a
message the broker redelivers after a crash is recognised as a duplicate and not counted twice. The
table lives in SQLite under ``<home>/data/landing/landing.db`` (WAL, fully synchronous commits) on the
local profile and in PostgreSQL (``portrait_landing``) on the production profile.

:func:`export_raw` writes everything landed as contract-shaped Parquet files beside the raw inputs
(``<raw_dir>/landing/{events,transactions}.parquet``, rewritten atomically from the whole table each
time, so it is idempotent); validation reads them together with the raw files, so the next batch build
and training see the same history serving saw.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract import ARROW_SCHEMAS
from portrait.files import atomic_path
from portrait.settings import Settings

logger = logging.getLogger(__name__)

Kind = Literal["event", "transaction"]
TABLE_OF: dict[str, str] = {"event": "events", "transaction": "transactions"}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Item:
    """One accepted item: its identity, customer, time and contract row (JSON-able values)."""

    kind: Kind
    item_id: str
    customer_id: str
    ts: datetime
    row: dict[str, Any]


def event_id(row: dict[str, Any]) -> str:
    """A stable id for an event without one: a hash of its contract fields."""
    key = "|".join(str(row.get(c)) for c in ("customer_id", "ts", "event_type", "category", "session_id"))
    return "h:" + hashlib.sha256(key.encode()).hexdigest()[:24]


def line_id(row: dict[str, Any], line: int = 0) -> str:
    """An order line's id: the order id and the line number within the order (0 for one-line orders)."""
    return f"{row['order_id']}#{line}"


APPEND_ROWS = 500
"""Items per INSERT statement of :meth:`Landing.append` (6 parameters each; SQLite allows 32,766)."""


class Landing:
    """The landing table of one workspace (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.production = settings.servers
        self._engine: Any = None
        if not self.production:
            self.path = settings.data_root / "landing" / "landing.db"
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ensure()

    # -- connection ---------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[Any]:
        if self.production:
            if self._engine is None:
                import sqlalchemy

                self._engine = sqlalchemy.create_engine(
                    self.settings.postgres_url,
                    pool_pre_ping=True,
                    connect_args={"connect_timeout": self.settings.postgres_connect_timeout_s},
                )
            with self._engine.begin() as con:
                yield con.connection.driver_connection
            return
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()

    def _ensure(self) -> None:
        ts_type = "DOUBLE PRECISION" if self.production else "REAL"
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS portrait_landing ("
                "kind TEXT NOT NULL, item_id TEXT NOT NULL, customer_id TEXT NOT NULL, "
                f"ts {ts_type} NOT NULL, row_json TEXT NOT NULL, received_at {ts_type} NOT NULL, "
                "PRIMARY KEY (kind, item_id))"
            )
            con.execute(
                "CREATE INDEX IF NOT EXISTS portrait_landing_customer ON portrait_landing (customer_id, ts)"
            )

    # -- writes -------------------------------------------------------------------------------------
    def append(self, items: Sequence[Item]) -> list[bool]:
        """Append ``items`` in one transaction; True for each item that is new, False for a duplicate.

        Durable when it returns (the commit is synchronous): the caller acknowledges only then.
        """
        if not items:
            return []
        now = datetime.now(UTC).timestamp()
        placeholder = "%s" if self.production else "?"
        row = f"({', '.join([placeholder] * 6)})"
        inserted: set[tuple[str, str]] = set()
        with _LOCK, self._connect() as con:
            cur = con.cursor()
            # Multi-row INSERTs that return what they inserted (SQLite >= 3.35, PostgreSQL): one statement per
            # APPEND_ROWS items instead of one per item. A repeated id within ``items`` counts once.
            for start in range(0, len(items), APPEND_ROWS):
                chunk = items[start : start + APPEND_ROWS]
                params = [
                    value
                    for item in chunk
                    for value in (
                        item.kind,
                        item.item_id,
                        item.customer_id,
                        item.ts.timestamp(),
                        json.dumps(item.row, default=str),
                        now,
                    )
                ]
                cur.execute(
                    "INSERT INTO portrait_landing (kind, item_id, customer_id, ts, row_json, received_at) "
                    f"VALUES {', '.join([row] * len(chunk))} ON CONFLICT (kind, item_id) DO NOTHING "
                    "RETURNING kind, item_id",
                    params,
                )
                inserted.update((str(k), str(i)) for k, i in cur.fetchall())
        new: list[bool] = []
        for item in items:
            key = (item.kind, item.item_id)
            new.append(key in inserted)
            inserted.discard(key)  # a second copy of the same item in this batch is a duplicate
        return new

    # -- reads --------------------------------------------------------------------------------------
    def recent(self, customer_ids: Sequence[str], since: datetime) -> pd.DataFrame:
        """Landed activity of ``customer_ids`` at or after ``since``: ``kind, item_id, customer_id, ts, row``."""
        columns = ["kind", "item_id", "customer_id", "ts", "row_json"]
        if not customer_ids:
            return pd.DataFrame(columns=columns)
        placeholder = "%s" if self.production else "?"
        rows: list[tuple] = []
        ids = list(dict.fromkeys(customer_ids))
        with self._connect() as con:
            cur = con.cursor()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                cur.execute(
                    f"SELECT {', '.join(columns)} FROM portrait_landing WHERE ts >= {placeholder} "
                    f"AND customer_id IN ({', '.join([placeholder] * len(chunk))})",
                    (since.timestamp(), *chunk),
                )
                rows += cur.fetchall()
        frame = pd.DataFrame(rows, columns=columns)
        frame["ts"] = pd.to_datetime(frame["ts"].astype(float), unit="s", utc=True)
        return frame

    def existing(self, kind: Kind, item_ids: Sequence[str]) -> dict[str, str]:
        """Which of ``item_ids`` have landed already (a retry or a redelivery is answered without work), with
        the customer each landed for."""
        placeholder = "%s" if self.production else "?"
        found: dict[str, str] = {}
        ids = list(dict.fromkeys(item_ids))
        with self._connect() as con:
            cur = con.cursor()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                cur.execute(
                    f"SELECT item_id, customer_id FROM portrait_landing WHERE kind = {placeholder} "
                    f"AND item_id IN ({', '.join([placeholder] * len(chunk))})",
                    (kind, *chunk),
                )
                found.update((r[0], r[1]) for r in cur.fetchall())
        return found

    def count(self, kind: Kind | None = None) -> int:
        placeholder = "%s" if self.production else "?"
        with self._connect() as con:
            cur = con.cursor()
            if kind is None:
                cur.execute("SELECT count(*) FROM portrait_landing")
            else:
                cur.execute(f"SELECT count(*) FROM portrait_landing WHERE kind = {placeholder}", (kind,))
            return int(cur.fetchone()[0])

    def rows(self, kind: Kind) -> list[dict[str, Any]]:
        placeholder = "%s" if self.production else "?"
        with self._connect() as con:
            cur = con.cursor()
            cur.execute(
                f"SELECT row_json FROM portrait_landing WHERE kind = {placeholder} ORDER BY ts, item_id",
                (kind,),
            )
            return [json.loads(r[0]) for r in cur.fetchall()]


def landing_files(settings: Settings) -> dict[str, Path]:
    """Where :func:`export_raw` writes each table's landed rows."""
    return {table: settings.raw_dir / "landing" / f"{table}.parquet" for table in TABLE_OF.values()}


def has_landing(settings: Settings) -> bool:
    """Whether anything may have landed (local: the landing database exists; production: always ask)."""
    return settings.servers or (settings.data_root / "landing" / "landing.db").exists()


def export_raw(settings: Settings) -> dict[str, int]:
    """Write every landed row as a contract-shaped Parquet file per table (atomically, idempotent)."""
    if not has_landing(settings):
        return {}
    landing = Landing(settings)
    counts = {}
    for kind, table in TABLE_OF.items():
        rows = landing.rows(kind)  # type: ignore[arg-type]
        target = landing_files(settings)[table]
        if not rows and not target.exists():
            counts[table] = 0
            continue
        schema = ARROW_SCHEMAS[table]
        columns: dict[str, list[Any]] = {f.name: [r.get(f.name) for r in rows] for f in schema}
        for f in schema:
            if pa.types.is_timestamp(f.type):
                columns[f.name] = [
                    pd.Timestamp(v).to_pydatetime() if v is not None else None for v in columns[f.name]
                ]
        with atomic_path(target) as tmp:
            pq.write_table(pa.table(columns, schema=schema), tmp)
        counts[table] = len(rows)
    if any(counts.values()):
        logger.info("landing zone exported to %s: %s", settings.raw_dir / "landing", counts)
    return counts

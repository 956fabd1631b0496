"""Keying the customers, transactions and events by OneID, before any feature is computed.

The inputs' ``customer_id`` is the ``record_id`` of an identity record (or, for a customer without one,
a record of its own). After stitching, the validated tables in ``data/clean`` are rewritten with the
OneID in ``customer_id``:

* customers: one row per person: the earliest ``signup_ts`` of her records; each profile attribute from
  the earliest record that has it;
* transactions and events: every row kept, ``customer_id`` replaced.

The rewritten files carry the Parquet key-value metadata ``portrait_identity = <run id>``. The tables as
validated (keyed by record) move to ``data/identity/source/``: a later stitching run reads them from there,
so running the step twice never maps a OneID again; a fresh ``portrait data validate`` writes unmarked
files, which then become the new source.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow.parquet as pq

from features.contract import ARROW_SCHEMAS, TABLES
from features.identity.config import identity_dir
from features.identity.normalise import lit, qi, run
from features.identity.stitch import StitchError
from portrait.files import publish, temp_beside

if TYPE_CHECKING:
    from portrait.settings import Settings

logger = logging.getLogger(__name__)

MARKER = "portrait_identity"
ATTRIBUTES = ("region", "gender", "age_band", "channel")


def stitched_run(path: Path) -> str | None:
    """The stitching run that wrote ``path`` (None: a table as validated, keyed by record)."""
    metadata = pq.read_schema(path).metadata or {}
    value = metadata.get(MARKER.encode())
    return value.decode() if value is not None else None


def source_tables(settings: Settings) -> dict[str, Path]:
    """The customers / transactions / events keyed by record: ``data/clean`` when freshly validated,
    else the copies kept in ``data/identity/source``."""
    out = {}
    kept = identity_dir(settings) / "source"
    for table in TABLES:
        clean = settings.clean_dir / f"{table}.parquet"
        if clean.exists() and stitched_run(clean) is None:
            out[table] = clean
        elif (kept / f"{table}.parquet").exists():
            out[table] = kept / f"{table}.parquet"
        else:
            raise StitchError(
                f"no validated {table} in {settings.clean_dir}: run `portrait data validate` (or `portrait data synth`) first"
            )
    return out


def _nullable(query: str, names: list[str]) -> str:
    """Every column written OPTIONAL, as the contract's schemas say (see features.validate._nullable)."""
    cols = ", ".join(f"CASE WHEN __keep THEN {qi(n)} END AS {qi(n)}" for n in names)
    return f"SELECT {cols} FROM (SELECT *, random() >= 0 AS __keep FROM ({query}))"


def apply_oneids(settings: Settings, sources: dict[str, Path], run_id: str) -> dict[str, int]:
    """Rewrite ``data/clean/{customers,transactions,events}.parquet`` keyed by OneID (see the module doc).

    ``sources`` from :func:`source_tables` (read before stitching). Returns the rows written per table.
    """
    oneid_map = identity_dir(settings) / "oneid_map.parquet"
    kept = identity_dir(settings) / "source"
    kept.mkdir(parents=True, exist_ok=True)
    first = ", ".join(
        f"arg_min(c.{a}, struct_pack(t := c.signup_ts, id := c.customer_id)) FILTER (WHERE c.{a} IS NOT NULL) AS {a}"
        for a in ATTRIBUTES
    )
    queries = {
        "customers": f"SELECT m.oneid AS customer_id, min(c.signup_ts) AS signup_ts, {first} "
        "FROM src c JOIN map m ON m.record_id = c.customer_id GROUP BY m.oneid ORDER BY m.oneid",
        "transactions": "SELECT t.order_id, m.oneid AS customer_id, t.ts, t.amount, t.quantity, t.category, t.is_return "
        "FROM src t JOIN map m ON m.record_id = t.customer_id",
        "events": "SELECT m.oneid AS customer_id, e.ts, e.event_type, e.category, e.session_id "
        "FROM src e JOIN map m ON m.record_id = e.customer_id",
    }
    moves: list[tuple[Path, Path]] = []
    counts: dict[str, int] = {}
    try:
        with duckdb.connect() as con:
            run(con, "SET TimeZone = 'UTC'")
            run(
                con,
                f"CREATE TEMP TABLE map AS SELECT record_id, oneid FROM read_parquet({lit(str(oneid_map))})",
            )
            for table in TABLES:
                source = sources[table]
                run(con, f"CREATE OR REPLACE TEMP VIEW src AS SELECT * FROM read_parquet({lit(str(source))})")
                target = settings.clean_dir / f"{table}.parquet"
                tmp = temp_beside(target)
                names = ARROW_SCHEMAS[table].names
                run(
                    con,
                    f"COPY ({_nullable(queries[table], names)}) TO {lit(str(tmp))} "
                    f"(FORMAT parquet, KV_METADATA {{{MARKER}: {lit(run_id)}}})",
                )
                moves.append((tmp, target))
                written = run(con, f"SELECT count(*) FROM read_parquet({lit(str(tmp))})").fetchone()[0]
                if table != "customers":
                    read = run(con, "SELECT count(*) FROM src").fetchone()[0]
                    if read != written:
                        raise StitchError(
                            f"{read - written:,} {table} rows have a customer_id without a OneID; "
                            "validate the inputs again, then stitch"
                        )
                schema = pq.read_schema(tmp)
                if not schema.remove_metadata().equals(ARROW_SCHEMAS[table]):
                    raise RuntimeError(
                        f"rewritten {table} has schema {schema}, expected {ARROW_SCHEMAS[table]}"
                    )
                counts[table] = int(written)
        # the validated tables keyed by record move aside first, then the rewritten ones take their place
        staged = [
            (sources[t], kept / f"{t}.parquet") for t in TABLES if sources[t].parent == settings.clean_dir
        ]
        publish([*staged, *moves])
        moves = []
    finally:
        for tmp, _ in moves:
            tmp.unlink(missing_ok=True)
    logger.info("clean tables keyed by OneID: %s", counts)
    return counts

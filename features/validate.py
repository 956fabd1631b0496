"""Contract validation with quarantine.

:func:`validate_table` reads one raw input (CSV, a Parquet file, or a directory of Parquet files),
coerces every contract column to its contract type and gives each row **the first failing reason**
of the ordered list in :data:`REASONS`. Valid rows are written to ``clean_path`` as Parquet with
exactly :data:`features.contract.ARROW_SCHEMAS` ``[table]``; invalid rows to ``quarantine_path``.
Nothing is dropped silently: ``accepted + quarantined == rows_read`` is checked before anything is
published, and a mismatch raises.

Reasons, in the order they are tested (the first that applies wins)
-------------------------------------------------------------------
customers
    missing_customer_id, invalid_customer_id, missing_timestamp, unparseable_timestamp, future_timestamp, duplicate,
    duplicate_customer_id
transactions
    missing_customer_id, invalid_customer_id, missing_order_id, missing_timestamp, unparseable_timestamp,
    future_timestamp, missing_amount, unparseable_amount, missing_quantity, unparseable_quantity,
    missing_is_return, unparseable_is_return, negative_amount_on_purchase,
    positive_amount_on_return, nonpositive_quantity_on_purchase, positive_quantity_on_return,
    unknown_customer, duplicate
events
    missing_customer_id, invalid_customer_id, missing_timestamp, unparseable_timestamp, future_timestamp,
    missing_event_type, unknown_event_type, unknown_customer, duplicate

:data:`REASONS` holds a one-line description of each. Notes on the rules:

* "missing" means null, or a string that is empty or only whitespace; "unparseable" means present
  but not convertible. Timestamps (``ts`` / ``signup_ts``) accept ISO-8601 strings, dates and
  Parquet timestamps; naive values are taken as UTC (the contract's convention). ``future`` means
  strictly after ``now`` (default: the current UTC time).
* ``amount`` must be a finite number (NaN / inf are ``unparseable_amount``); ``quantity`` must be a
  whole number (``"2.0"`` is accepted, ``"2.5"`` is not); ``is_return`` accepts booleans, ``0``/``1``
  and the strings true/false/t/f/yes/no/y/n/1/0 (any case).
* Identifiers are kept verbatim (not trimmed or re-cased). ``invalid_customer_id``: an id the API would
  refuse (``features.contract.CUSTOMER_ID_RULE``: over 128 characters, a control character, a space at
  either end), so no served customer is unreachable. Integer-valued float ids (``12346.0``, as
  pandas produces for a nullable integer column) are written as ``"12346"``.
* ``unknown_customer`` is only tested when ``known_customers`` is given: a transaction or event
  whose customer has no *accepted* row in the customers table. :func:`validate_workspace` passes
  the freshly validated customers, so activity of a customer whose profile was itself quarantined
  is quarantined too.
* ``duplicate``: the row has the same (coerced) values in every contract column as an earlier row
  of the same input; the first is kept. ``duplicate_customer_id`` (customers only): a second,
  different profile for an already accepted ``customer_id``; the first in source order is kept.
  Both are decided among the rows that passed every earlier test, so if the first copy of a row
  fails, e.g., ``unknown_customer``, every copy fails with the same reason.

Output files
------------
* Clean: exactly ``ARROW_SCHEMAS[table]``; extra source columns are not carried over. Row order is
  not guaranteed to follow the source.
* Quarantine: every source column with its original value cast to a string, then ``reason``,
  ``source_file`` and ``source_row`` (0-based position of the data row in its file; for CSV the
  header is not counted). Sorted by ``source_file, source_row``. A source column that clashes with
  one of these three names is renamed ``raw_<name>``.
* Both are written to a temporary file beside the target and moved into place with ``os.replace``,
  so an interrupted run leaves the previous files intact. :func:`validate_workspace` publishes the
  files of all three tables only after all three validated.

Unusable inputs raise :class:`ContractError` (one sentence naming the file and the problem): a file
that does not exist or cannot be read, that is neither CSV nor Parquet, a CSV that is not
well-formed (rows with a different number of fields than the header are an error, never skipped),
a missing required column, zero rows (allowed for ``events``), and an input where no row passes.
CSV files are read as RFC-4180 comma-separated with a header line (``.tsv``: tab-separated).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from features.contract import (
    ARROW_SCHEMAS,
    CUSTOMER_ID_MAX_LENGTH,
    CUSTOMER_ID_PATTERN,
    CUSTOMER_ID_RULE,
    EVENT_TYPES,
    REQUIRED_COLUMNS,
    TABLES,
)
from portrait.files import atomic_path, publish, spill_folder, temp_beside, write_text_atomic

if TYPE_CHECKING:
    from portrait.settings import Settings

# ---------------------------------------------------------------------------------------------
# Reasons
# ---------------------------------------------------------------------------------------------
_TS_REASONS: tuple[tuple[str, str], ...] = (
    ("missing_timestamp", "The timestamp column is null or blank."),
    ("unparseable_timestamp", "The timestamp is present but is not a date/time (ISO-8601 expected)."),
    ("future_timestamp", "The timestamp is later than the validation time ('now')."),
)

_INVALID_ID = f"customer_id breaks the id rule the API enforces: {CUSTOMER_ID_RULE}"
REASONS: dict[str, tuple[tuple[str, str], ...]] = {
    "customers": (
        ("missing_customer_id", "customer_id is null or blank."),
        ("invalid_customer_id", _INVALID_ID),
        *_TS_REASONS,
        ("duplicate", "Exact duplicate of an earlier row (all contract columns equal); the first is kept."),
        ("duplicate_customer_id", "A second, different profile for a customer_id already accepted."),
    ),
    "transactions": (
        ("missing_customer_id", "customer_id is null or blank."),
        ("invalid_customer_id", _INVALID_ID),
        ("missing_order_id", "order_id is null or blank."),
        *_TS_REASONS,
        ("missing_amount", "amount is null or blank."),
        ("unparseable_amount", "amount is not a finite number."),
        ("missing_quantity", "quantity is null or blank."),
        ("unparseable_quantity", "quantity is not a whole number."),
        ("missing_is_return", "is_return is null or blank."),
        ("unparseable_is_return", "is_return is not a boolean (true/false, 1/0, yes/no)."),
        ("negative_amount_on_purchase", "A purchase (is_return false) with amount < 0."),
        ("positive_amount_on_return", "A return (is_return true) with amount > 0."),
        ("nonpositive_quantity_on_purchase", "A purchase (is_return false) with quantity <= 0."),
        ("positive_quantity_on_return", "A return (is_return true) with quantity > 0."),
        ("unknown_customer", "customer_id has no accepted row in the customers table."),
        ("duplicate", "Exact duplicate of an earlier row (all contract columns equal); the first is kept."),
    ),
    "events": (
        ("missing_customer_id", "customer_id is null or blank."),
        ("invalid_customer_id", _INVALID_ID),
        *_TS_REASONS,
        ("missing_event_type", "event_type is null or blank."),
        ("unknown_event_type", "event_type is not one of: " + ", ".join(EVENT_TYPES) + "."),
        ("unknown_customer", "customer_id has no accepted row in the customers table."),
        ("duplicate", "Exact duplicate of an earlier row (all contract columns equal); the first is kept."),
    ),
}

QUARANTINE_EXTRA_COLUMNS: tuple[str, ...] = ("reason", "source_file", "source_row")
_P = "__pv_"  # prefix of every internal column and table; a source column may not start with it
_TS_COLUMN = {"customers": "signup_ts", "transactions": "ts", "events": "ts"}
_ALLOW_EMPTY_DEFAULT = {"customers": False, "transactions": False, "events": True}


class ContractError(Exception):
    """The input cannot be used at all; the message is one sentence naming the file and problem."""


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------
class TableReport(BaseModel):
    """Outcome of validating one input table."""

    table: str
    source: str
    rows_read: int
    accepted: int
    quarantined: int
    by_reason: dict[str, int] = Field(default_factory=dict, description="Quarantined rows per reason.")
    clean_path: str | None = None
    quarantine_path: str | None = None
    seconds: float = 0.0
    note: str | None = None


class ValidationReport(BaseModel):
    """Outcome of validating a workspace's three inputs."""

    now: datetime
    customers: TableReport
    transactions: TableReport
    events: TableReport

    @property
    def tables(self) -> dict[str, TableReport]:
        return {"customers": self.customers, "transactions": self.transactions, "events": self.events}


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _q(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    """Quote an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    """The first line of an error message, without DuckDB's 'Invalid Input Error: ' style prefix."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return re.sub(r"^[A-Z][A-Za-z ]* Error: ", "", lines[0]).rstrip(".")


def _tmp_beside(target: Path) -> Path:
    return temp_beside(target)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _sql(con: duckdb.DuckDBPyConnection, query: str) -> list[tuple]:
    """Run one statement and fetch its whole result (DuckDB wants every result consumed)."""
    return con.execute(query).fetchall()


def _nullable(query: str, names: Iterable[str], order_by: str = "") -> str:
    """Wrap ``query`` so that every output column is written as nullable (OPTIONAL) in Parquet.

    DuckDB's Parquet writer marks a column REQUIRED when its statistics say it holds no null (see
    duckdb/duckdb#22144), which would make the file's schema depend on the data and differ from
    ``ARROW_SCHEMAS``. A CASE on a volatile per-row flag (always true) hides that statistic at no
    measurable cost.
    """
    cols = ", ".join(f"CASE WHEN {_P}keep THEN {_q(n)} END AS {_q(n)}" for n in names)
    order = f" ORDER BY {order_by}" if order_by else ""
    return f"SELECT {cols} FROM (SELECT *, random() >= 0 AS {_P}keep FROM ({query})){order}"


def _write_parquet(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> int:
    """Run ``COPY (query) TO path`` as Parquet and return the number of rows written."""
    rows = _sql(con, f"COPY ({query}) TO {_lit(str(path))} (FORMAT parquet, COMPRESSION snappy)")
    return int(rows[0][0]) if rows else 0


def _atomic_write_table(table: pa.Table, target: Path) -> None:
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)


def _atomic_write_text(text: str, target: Path) -> None:
    write_text_atomic(target, text)


def write_empty(table: str, path: Path) -> Path:
    """Atomically write a valid, empty ``table`` file (schema ``ARROW_SCHEMAS[table]``) to ``path``."""
    schema = ARROW_SCHEMAS[table]
    _atomic_write_table(schema.empty_table(), Path(path))
    return Path(path)


def _empty_quarantine_schema(table: str) -> pa.Schema:
    fields = [(name, pa.string()) for name in ARROW_SCHEMAS[table].names]
    fields += [("reason", pa.string()), ("source_file", pa.string()), ("source_row", pa.int64())]
    return pa.schema(fields)


def _as_utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Type coercion (SQL expressions chosen by the source column's DuckDB type)
# ---------------------------------------------------------------------------------------------
_INT_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
}  # fmt: skip
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
_TS_TYPES = {"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATE", "TIMESTAMP WITH TIME ZONE"}


def _kind(dtype: str) -> str:
    dtype = dtype.upper()
    if dtype == "VARCHAR":
        return "str"
    if dtype in _INT_TYPES:
        return "int"
    if dtype in _FLOAT_TYPES or dtype.startswith("DECIMAL"):
        return "float"
    if dtype in _TS_TYPES:
        return "ts"
    if dtype == "BOOLEAN":
        return "bool"
    return "other"


def _blank(raw: str, kind: str) -> str:
    """SQL: the raw value is missing (null, or a blank string)."""
    if kind == "str":
        return f"({raw} IS NULL OR trim({raw}) = '')"
    return f"({raw} IS NULL)"


def _to_string(raw: str, kind: str) -> str:
    if kind == "str":
        return raw
    if kind == "float":  # 12346.0 -> '12346' (pandas nullable-int ids arrive as floats)
        return (
            f"CASE WHEN {raw} = trunc({raw}) AND abs({raw}) < 9e15 "
            f"THEN CAST(CAST({raw} AS BIGINT) AS VARCHAR) ELSE CAST({raw} AS VARCHAR) END"
        )
    return f"CAST({raw} AS VARCHAR)"


def _to_timestamp(raw: str, kind: str) -> str:
    if kind == "ts":
        return f"CAST({raw} AS TIMESTAMPTZ)"
    if kind == "str":
        return f"TRY_CAST(trim({raw}) AS TIMESTAMPTZ)"
    return f"TRY_CAST(CAST({raw} AS VARCHAR) AS TIMESTAMPTZ)"


def _to_double(raw: str, kind: str) -> str:
    if kind in ("int", "float"):
        value = f"CAST({raw} AS DOUBLE)"
    elif kind == "str":
        value = f"TRY_CAST(trim({raw}) AS DOUBLE)"
    else:
        value = f"TRY_CAST(CAST({raw} AS VARCHAR) AS DOUBLE)"
    return f"CASE WHEN isfinite({value}) THEN {value} END"


def _to_bigint(raw: str, kind: str) -> str:
    if kind == "int":
        return f"TRY_CAST({raw} AS BIGINT)"
    if kind == "float":
        return f"CASE WHEN isfinite({raw}) AND {raw} = trunc({raw}) THEN TRY_CAST({raw} AS BIGINT) END"
    text = f"trim({raw})" if kind == "str" else f"CAST({raw} AS VARCHAR)"
    as_double = f"TRY_CAST({text} AS DOUBLE)"
    # TRY_CAST('2.5' AS BIGINT) rounds, so check integrality on the double first.
    return (
        f"CASE WHEN isfinite({as_double}) AND {as_double} = trunc({as_double}) "
        f"THEN coalesce(TRY_CAST({text} AS BIGINT), TRY_CAST({as_double} AS BIGINT)) END"
    )


def _to_bool(raw: str, kind: str) -> str:
    if kind == "bool":
        return raw
    if kind in ("int", "float"):
        return f"CASE WHEN {raw} = 1 THEN true WHEN {raw} = 0 THEN false END"
    text = f"lower(trim({raw}))" if kind == "str" else f"lower(CAST({raw} AS VARCHAR))"
    return (
        f"CASE WHEN {text} IN ('true', 't', 'yes', 'y', '1') THEN true "
        f"WHEN {text} IN ('false', 'f', 'no', 'n', '0') THEN false END"
    )


_CONVERTERS = {
    pa.string(): _to_string,
    pa.float64(): _to_double,
    pa.int64(): _to_bigint,
    pa.bool_(): _to_bool,
}


_SQL_TYPES = {pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN"}


def _sql_type(arrow_type: pa.DataType) -> str:
    return "TIMESTAMPTZ" if pa.types.is_timestamp(arrow_type) else _SQL_TYPES[arrow_type]


def _typed_expr(arrow_type: pa.DataType, raw: str, kind: str) -> str:
    if pa.types.is_timestamp(arrow_type):
        return _to_timestamp(raw, kind)
    return _CONVERTERS[arrow_type](raw, kind)


def _typed_name(column: str) -> str:
    return _q(f"{_P}t_{column}")


# ---------------------------------------------------------------------------------------------
# Source resolution
# ---------------------------------------------------------------------------------------------
@dataclass
class _Source:
    fmt: str  # "parquet" or "csv"
    files: list[Path]
    columns: dict[str, str] = field(default_factory=dict)  # name -> DuckDB type


def _resolve_source(table: str, source: Path) -> _Source:
    label = f"{table} input {source}"
    if not source.exists():
        raise ContractError(f"{label} does not exist.")
    if source.is_dir():
        files = sorted(
            p for p in source.rglob("*.parquet") if p.is_file() and not p.name.startswith((".", "_"))
        )
        if not files:
            raise ContractError(f"{label} is a directory without any .parquet file.")
        for f in files:
            if not _has_parquet_magic(f):
                raise ContractError(f"{label} contains {f.name}, which is not a Parquet file.")
        return _Source("parquet", files)
    try:
        if source.stat().st_size == 0:
            raise ContractError(f"{label} is an empty file (0 bytes).")
        is_parquet = _has_parquet_magic(source)
    except OSError as exc:
        raise ContractError(f"{label} cannot be opened ({_first_line(exc)}).") from exc
    if is_parquet:
        return _Source("parquet", [source])
    ext = _data_suffix(source)
    if ext in (".csv", ".tsv", ".txt"):
        return _Source("csv", [source])
    if ext in (".parquet", ".pq", ".parq"):
        raise ContractError(f"{label} is not a valid Parquet file (the Parquet magic bytes are missing).")
    raise ContractError(f"{label} is neither CSV (.csv/.tsv) nor Parquet.")


def _has_parquet_magic(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4)
        if head != b"PAR1":
            return False
        fh.seek(-4, os.SEEK_END)
        return fh.read(4) == b"PAR1"


def _data_suffix(path: Path) -> str:
    """The file's format suffix, ignoring a trailing compression suffix: 'x.csv.gz' -> '.csv'."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".zst"):
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _csv_reader(path: Path) -> str:
    delim = "\t" if _data_suffix(path) == ".tsv" else ","
    # Every dialect option is fixed: DuckDB's sniffer would otherwise happily pick a later line as
    # the header (skipping the rows above it) or treat lines starting with '#' as comments.
    return (
        f"read_csv({_lit(str(path))}, header=true, all_varchar=true, skip=0, comment='', "
        f"delim={_lit(delim)}, quote='\"', escape='\"', strict_mode=true, null_padding=false, "
        "ignore_errors=false)"
    )


def _register_source(con: duckdb.DuckDBPyConnection, table: str, source: Path, src: _Source) -> None:
    """Create the view ``__pv_src``: the raw columns plus ``__pv_file`` (index into the table
    ``__pv_files``) and ``__pv_row`` (0-based data row within its file); fill ``src.columns``."""
    label = f"{table} input {source}"
    _sql(con, f"CREATE TEMP TABLE {_P}files ({_P}idx INTEGER, {_P}path VARCHAR)")
    con.executemany(f"INSERT INTO {_P}files VALUES (?, ?)", [(i, str(f)) for i, f in enumerate(src.files)])
    if src.fmt == "parquet":
        files = "[" + ", ".join(_lit(str(f)) for f in src.files) + "]"
        reader = f"read_parquet({files}, union_by_name=true, hive_partitioning=false"
        try:
            described = _sql(con, f"DESCRIBE SELECT * FROM {reader})")
            _check_reserved(label, [r[0] for r in described], extra=("file_row_number",))
            if len(src.files) == 1:
                view = (
                    f"SELECT * EXCLUDE (file_row_number), 0 AS {_P}file, file_row_number AS {_P}row "
                    f"FROM {reader}, file_row_number=true)"
                )
            else:
                view = (
                    f"SELECT s.* EXCLUDE (file_row_number, {_P}path), f.{_P}idx AS {_P}file, "
                    f"s.file_row_number AS {_P}row FROM {reader}, filename='{_P}path', file_row_number=true) s "
                    f"JOIN {_P}files f USING ({_P}path)"
                )
            _sql(con, f"CREATE TEMP VIEW {_P}src AS {view}")
        except duckdb.Error as exc:
            raise ContractError(f"{label} cannot be read as Parquet ({_first_line(exc)}).") from exc
    else:
        try:
            # Insertion order is preserved here, so rowid is the data row's position in the file.
            _sql(con, f"CREATE TEMP TABLE {_P}csv AS SELECT * FROM {_csv_reader(src.files[0])}")
        except duckdb.Error as exc:
            raise ContractError(
                f"{label} is not a well-formed CSV file with a header line ({_first_line(exc)})."
            ) from exc
        described = _sql(con, f"DESCRIBE SELECT * FROM {_P}csv")
        _check_reserved(label, [r[0] for r in described])
        _sql(con, f"CREATE TEMP VIEW {_P}src AS SELECT *, 0 AS {_P}file, rowid AS {_P}row FROM {_P}csv")
    src.columns = {r[0]: r[1] for r in described}


def _check_reserved(label: str, names: list[str], extra: tuple[str, ...] = ()) -> None:
    bad = [n for n in names if n.startswith(_P) or n in extra]
    if bad:
        raise ContractError(f"{label} has column(s) with a reserved name: {', '.join(bad)}.")


def _register_known_customers(
    con: duckdb.DuckDBPyConnection, known: Path | str | Iterable[str] | pa.Table
) -> None:
    if isinstance(known, str | Path):
        path = Path(known)
        try:
            _sql(
                con,
                f"CREATE TEMP TABLE {_P}known AS SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id "
                f"FROM read_parquet({_lit(str(path))}) WHERE customer_id IS NOT NULL",
            )
        except duckdb.Error as exc:
            raise ContractError(f"known customers file {path} cannot be read ({_first_line(exc)}).") from exc
        return
    ids = (
        known
        if isinstance(known, pa.Table)
        else pa.table({"customer_id": pa.array(list(known), pa.string())})
    )
    con.register(f"{_P}known_arrow", ids)
    _sql(
        con,
        f"CREATE TEMP TABLE {_P}known AS SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id "
        f"FROM {_P}known_arrow WHERE customer_id IS NOT NULL",
    )
    con.unregister(f"{_P}known_arrow")


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
@dataclass
class _Staged:
    """Validated output written to temporary files, not yet published."""

    report: TableReport
    moves: list[tuple[Path, Path]]  # (tmp, target)

    def commit(self) -> None:
        publish(self.moves)
        self.moves = []

    def discard(self) -> None:
        for tmp, _ in self.moves:
            _unlink(tmp)
        self.moves = []


def _row_rules(table: str, cols: dict[str, str], now: datetime, has_known: bool) -> list[tuple[str, str]]:
    """(reason, SQL condition) for every reason decided row by row, in :data:`REASONS` order."""

    def raw(c: str) -> str:
        return _q(c) if c in cols else "NULL"

    def kind(c: str) -> str:
        return _kind(cols[c]) if c in cols else "other"

    def t(c: str) -> str:
        return _typed_name(c)

    def missing(c: str) -> str:
        return _blank(raw(c), kind(c))

    ts = _TS_COLUMN[table]
    now_sql = f"TIMESTAMPTZ {_lit(now.isoformat())}"
    invalid_id = (
        f"length({t('customer_id')}) > {CUSTOMER_ID_MAX_LENGTH} "
        f"OR NOT regexp_full_match({t('customer_id')}, {_lit(CUSTOMER_ID_PATTERN)})"
    )
    rules: list[tuple[str, str]] = [
        ("missing_customer_id", missing("customer_id")),
        ("invalid_customer_id", invalid_id),
    ]
    if table == "transactions":
        rules.append(("missing_order_id", missing("order_id")))
    rules += [
        ("missing_timestamp", missing(ts)),
        ("unparseable_timestamp", f"{t(ts)} IS NULL"),
        ("future_timestamp", f"{t(ts)} > {now_sql}"),
    ]
    if table == "transactions":
        rules += [
            ("missing_amount", missing("amount")),
            ("unparseable_amount", f"{t('amount')} IS NULL"),
            ("missing_quantity", missing("quantity")),
            ("unparseable_quantity", f"{t('quantity')} IS NULL"),
            ("missing_is_return", missing("is_return")),
            ("unparseable_is_return", f"{t('is_return')} IS NULL"),
            ("negative_amount_on_purchase", f"NOT {t('is_return')} AND {t('amount')} < 0"),
            ("positive_amount_on_return", f"{t('is_return')} AND {t('amount')} > 0"),
            ("nonpositive_quantity_on_purchase", f"NOT {t('is_return')} AND {t('quantity')} <= 0"),
            ("positive_quantity_on_return", f"{t('is_return')} AND {t('quantity')} > 0"),
        ]
    if table == "events":
        allowed = ", ".join(_lit(e) for e in EVENT_TYPES)
        rules += [
            ("missing_event_type", missing("event_type")),
            ("unknown_event_type", f"{t('event_type')} NOT IN ({allowed})"),
        ]
    if table in ("transactions", "events") and has_known:
        rules.append(("unknown_customer", f"{t('customer_id')} NOT IN (SELECT customer_id FROM {_P}known)"))
    return rules


def _stage_table(
    table: str,
    source: Path,
    *,
    clean_path: Path,
    quarantine_path: Path,
    now: datetime,
    known_customers: Path | str | Iterable[str] | pa.Table | None,
    allow_empty: bool,
    threads: int | None,
    require_usable: bool = True,
) -> _Staged:
    started = time.perf_counter()
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    source, clean_path, quarantine_path = Path(source), Path(clean_path), Path(quarantine_path)
    label = f"{table} input {source}"
    src = _resolve_source(table, source)
    clean_path.parent.mkdir(parents=True, exist_ok=True)
    quarantine_path.parent.mkdir(parents=True, exist_ok=True)
    cleanup = ExitStack()
    spill = cleanup.enter_context(spill_folder(clean_path.parent))  # in the command's scratch folder
    con = duckdb.connect(":memory:")
    tmp_clean, tmp_quarantine = _tmp_beside(clean_path), _tmp_beside(quarantine_path)
    try:
        _sql(con, "SET TimeZone = 'UTC'")
        _sql(con, "SET enable_progress_bar = false")
        _sql(con, f"SET temp_directory = {_lit(str(spill))}")
        if threads:
            _sql(con, f"SET threads = {int(threads)}")
        _register_source(con, table, source, src)
        cols = src.columns

        missing_cols = [c for c in REQUIRED_COLUMNS[table] if c not in cols]
        if missing_cols:
            found = ", ".join(cols) or "none"
            raise ContractError(
                f"{label} is missing required column(s) {', '.join(missing_cols)} (found: {found})."
            )
        rows_read = int(_sql(con, f"SELECT count(*) FROM {_P}src")[0][0])
        if rows_read == 0 and not allow_empty:
            raise ContractError(f"{label} has no data rows.")
        # Row order is only needed through __pv_file/__pv_row from here on.
        _sql(con, "SET preserve_insertion_order = false")
        if known_customers is not None:
            _register_known_customers(con, known_customers)

        schema = ARROW_SCHEMAS[table]
        typed = ", ".join(
            f"{_typed_expr(f.type, _q(f.name), _kind(cols[f.name])) if f.name in cols else f'CAST(NULL AS {_sql_type(f.type)})'} "
            f"AS {_typed_name(f.name)}"
            for f in schema
        )
        all_typed = ", ".join(_typed_name(f.name) for f in schema)
        rules = _row_rules(table, cols, now, known_customers is not None)
        case = "CASE " + " ".join(f"WHEN {cond} THEN {_lit(r)}" for r, cond in rules) + " END"
        file_row = f"{_P}file, {_P}row"
        # One pass over the source: typed values, the first failing row-level reason, a hash of
        # the typed values (for duplicates). Raw values are not kept; the quarantine re-reads them.
        _sql(
            con,
            f"CREATE TEMP TABLE {_P}t AS SELECT {file_row}, {all_typed}, {case} AS {_P}r0, "
            f"hash({all_typed}) AS {_P}h FROM (SELECT *, {typed} FROM {_P}src)",
        )

        # Duplicates among the rows that passed every row-level test. A cheap first pass finds the
        # keys (the hash of all contract columns; for customers the customer_id) that occur more
        # than once; the exact window then runs over those candidate rows only. A hash collision
        # only adds candidates: the window partitions by the real values.
        key = _typed_name("customer_id") if table == "customers" else f"{_P}h"
        _sql(
            con,
            f"CREATE TEMP TABLE {_P}dupkeys AS SELECT {key} AS {_P}k FROM {_P}t WHERE {_P}r0 IS NULL "
            "GROUP BY ALL HAVING count(*) > 1",
        )
        late = f"WHEN row_number() OVER (PARTITION BY {all_typed} ORDER BY {file_row}) > 1 THEN 'duplicate'"
        if table == "customers":
            late += (
                f" WHEN row_number() OVER (PARTITION BY {key} ORDER BY {file_row}) > 1"
                " THEN 'duplicate_customer_id'"
            )
        _sql(
            con,
            f"CREATE TEMP TABLE {_P}late AS SELECT * FROM ("
            f"SELECT {file_row}, CASE {late} END AS {_P}reason FROM {_P}t "
            f"WHERE {_P}r0 IS NULL AND {key} IN (SELECT {_P}k FROM {_P}dupkeys)"
            f") WHERE {_P}reason IS NOT NULL",
        )
        _sql(
            con,
            f"CREATE TEMP TABLE {_P}bad AS SELECT {file_row}, {_P}r0 AS {_P}reason FROM {_P}t "
            f"WHERE {_P}r0 IS NOT NULL UNION ALL SELECT * FROM {_P}late",
        )

        clean_select = ", ".join(f"{_typed_name(f.name)} AS {_q(f.name)}" for f in schema)
        accepted = _write_parquet(
            con,
            _nullable(
                f"SELECT {clean_select} FROM {_P}t ANTI JOIN {_P}late USING ({file_row}) WHERE {_P}r0 IS NULL",
                schema.names,
            ),
            tmp_clean,
        )
        written_schema = pq.read_schema(tmp_clean)
        if not written_schema.equals(schema):
            raise RuntimeError(f"clean file for {label} has schema {written_schema}, expected {schema}")
        out_names = ["raw_" + c if c in QUARANTINE_EXTRA_COLUMNS else c for c in cols]
        raw_select = ", ".join(
            f"CAST(s.{_q(c)} AS VARCHAR) AS {_q(n)}" for c, n in zip(cols, out_names, strict=True)
        )
        quarantined = _write_parquet(
            con,
            _nullable(
                f"SELECT {raw_select}, b.{_P}reason AS reason, f.{_P}path AS source_file, "
                f"CAST(s.{_P}row AS BIGINT) AS source_row, s.{_P}file AS {_P}file "
                f"FROM {_P}src s JOIN {_P}bad b USING ({file_row}) JOIN {_P}files f ON f.{_P}idx = s.{_P}file",
                [*out_names, *QUARANTINE_EXTRA_COLUMNS],
                order_by=f"{_P}file, source_row",
            ),
            tmp_quarantine,
        )
        counted = dict(
            _sql(
                con, f"SELECT reason, count(*) FROM read_parquet({_lit(str(tmp_quarantine))}) GROUP BY reason"
            )
        )
        order = [r for r, _ in REASONS[table]]
        unexpected = set(counted) - set(order)
        by_reason = {r: int(counted[r]) for r in order if counted.get(r)}
        if accepted + quarantined != rows_read or sum(by_reason.values()) != quarantined or unexpected:
            raise RuntimeError(
                f"validation of {label} does not add up: read {rows_read}, accepted {accepted}, "
                f"quarantined {quarantined}, by reason {counted}; nothing was written"
            )
        if rows_read and not accepted and require_usable:
            detail = ", ".join(f"{r}: {n:,}" for r, n in by_reason.items())
            raise ContractError(
                f"{label} has no usable row: all {rows_read:,} rows failed validation ({detail})."
            )
        report = TableReport(
            table=table,
            source=str(source),
            rows_read=rows_read,
            accepted=accepted,
            quarantined=quarantined,
            by_reason=by_reason,
            clean_path=str(clean_path),
            quarantine_path=str(quarantine_path),
            seconds=round(time.perf_counter() - started, 3),
        )
        return _Staged(report, [(tmp_clean, clean_path), (tmp_quarantine, quarantine_path)])
    except BaseException:
        _unlink(tmp_clean)
        _unlink(tmp_quarantine)
        raise
    finally:
        con.close()
        cleanup.close()


def validate_table(
    table: str,
    source: Path,
    *,
    clean_path: Path,
    quarantine_path: Path,
    now: datetime | None = None,
    known_customers: Path | str | Iterable[str] | pa.Table | None = None,
    allow_empty: bool | None = None,
    threads: int | None = None,
    require_usable: bool = True,
) -> TableReport:
    """Validate one raw input against the contract, writing the clean and quarantine files.

    ``source``: a CSV file, a Parquet file, or a directory of Parquet files. ``now``: reference
    time for ``future_timestamp`` (naive = UTC; default the current time). ``known_customers``:
    the accepted customer ids, as a Parquet file with a ``customer_id`` column or an iterable of
    ids; enables ``unknown_customer`` for transactions and events. ``allow_empty``: whether a
    file with no data rows is acceptable (default: only for ``events``). ``threads``: DuckDB
    threads (default: all cores). ``require_usable``: whether an input whose every row fails is an
    error (the default; real-time batches turn it off and report each row). Raises
    :class:`ContractError` for an unusable input, in which case no file is written.
    """
    staged = _stage_table(
        table,
        Path(source),
        clean_path=Path(clean_path),
        quarantine_path=Path(quarantine_path),
        now=_as_utc(now),
        known_customers=known_customers,
        allow_empty=_ALLOW_EMPTY_DEFAULT[table] if allow_empty is None else allow_empty,
        threads=threads,
        require_usable=require_usable,
    )
    try:
        staged.commit()
    finally:
        staged.discard()
    return staged.report


def validate_workspace(settings: Settings, now: datetime | None = None) -> ValidationReport:
    """Validate ``<raw_dir>/{customers,transactions,events}.parquet`` into the clean and quarantine dirs.

    ``customers`` and ``transactions`` are required; a missing ``events.parquet`` is treated as an
    empty events table (an empty clean file is written and the report's note says so). Transactions
    and events are checked against the customers accepted in this run (``unknown_customer``). The
    outputs of the three tables are published together, only once all three validated, and the
    report is written to ``<reports_dir>/validation.json``.
    """
    now_utc = _as_utc(now)
    raw, clean, quarantine = Path(settings.raw_dir), Path(settings.clean_dir), Path(settings.quarantine_dir)
    reports_dir = Path(settings.reports_dir)
    for d in (clean, quarantine, reports_dir):
        d.mkdir(parents=True, exist_ok=True)

    from features.landing import export_raw, landing_files

    export_raw(settings)  # events and transactions accepted in real time, validated with the rest
    landed = landing_files(settings)
    staged: dict[str, _Staged] = {}
    links: list[Path] = []
    try:
        for table in TABLES:
            source = raw / f"{table}.parquet"
            if table in landed and landed[table].exists():
                source = _with_landed(source, landed[table], links) if source.exists() else landed[table]
            clean_path, quarantine_path = clean / f"{table}.parquet", quarantine / f"{table}.parquet"
            if table == "events" and not source.exists():
                staged[table] = _stage_absent(table, source, clean_path, quarantine_path)
                continue
            known = None
            if table != "customers":
                # The staged (not yet published) clean customers file.
                known = staged["customers"].moves[0][0]
            staged[table] = _stage_table(
                table,
                source,
                clean_path=clean_path,
                quarantine_path=quarantine_path,
                now=now_utc,
                known_customers=known,
                allow_empty=_ALLOW_EMPTY_DEFAULT[table],
                threads=None,
            )
        for s in staged.values():
            s.commit()
    finally:
        for s in staged.values():
            s.discard()
        for link in links:
            shutil.rmtree(link, ignore_errors=True)
    report = ValidationReport(now=now_utc, **{t: s.report for t, s in staged.items()})
    _atomic_write_text(report.model_dump_json(indent=2), reports_dir / "validation.json")
    return report


def _with_landed(source: Path, landed: Path, links: list[Path]) -> Path:
    """A folder holding the raw file and the landed rows (hard links, or copies across file systems),
    validated as one input: a Parquet directory."""
    folder = temp_beside(source.with_name(f"{source.stem}.with_landing"), directory=True)
    links.append(folder)
    for i, path in enumerate((source, landed)):
        target = folder / f"part-{i}.parquet"
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    return folder


def _stage_absent(table: str, source: Path, clean_path: Path, quarantine_path: Path) -> _Staged:
    tmp_clean, tmp_quarantine = _tmp_beside(clean_path), _tmp_beside(quarantine_path)
    pq.write_table(ARROW_SCHEMAS[table].empty_table(), tmp_clean)
    pq.write_table(_empty_quarantine_schema(table).empty_table(), tmp_quarantine)
    report = TableReport(
        table=table,
        source=str(source),
        rows_read=0,
        accepted=0,
        quarantined=0,
        clean_path=str(clean_path),
        quarantine_path=str(quarantine_path),
        note="source absent: treated as an empty table",
    )
    return _Staged(report, [(tmp_clean, clean_path), (tmp_quarantine, quarantine_path)])


__all__ = [
    "QUARANTINE_EXTRA_COLUMNS",
    "REASONS",
    "ContractError",
    "TableReport",
    "ValidationReport",
    "validate_table",
    "validate_workspace",
    "write_empty",
]

"""Import a team's own data onto the raw-data contract, described by one mapping file.

``portrait data import mapping.yaml`` reads customers, transactions and (optionally) events from CSV,
Parquet or a SQL query against a database, maps them onto :data:`features.contract.ARROW_SCHEMAS` and
writes ``<raw_dir>/{customers,transactions,events}.parquet``; the usual validation
(:func:`features.validate.validate_workspace`) then quarantines invalid rows with a reason. The UCI Online
Retail and CDNOW loaders (:mod:`features.loaders`) map through the same code (:func:`stage_relations`).

The mapping file
----------------
YAML (``.yaml`` / ``.yml``) or TOML (``.toml``), validated by :class:`Mapping` (unknown keys are errors;
every error is one line naming the key). One section per input; ``events`` may be left out::

    customers:
      from_activity: true                  # no customers file: derived from transactions and events
    transactions:
      source: orders.csv                   # a path, relative to the mapping file, or
      # source: {sql: "SELECT customer, day FROM orders", url: "postgresql://postgres@127.0.0.1:5432/shop"}
      columns: {customer_id: customer, ts: date}    # contract column: source column
      timestamp_format: "%d/%m/%Y"         # strptime format (quote it in YAML); default: ISO-8601
      timezone: Europe/Berlin              # time zone of naive timestamps (default UTC)
      constants: {amount: 1, quantity: 1, is_return: false, category: all}
      derive: {order_id: "{customer_id}-{ts:%Y%m%d}"}
    events:
      source: {path: clicks.tsv, delimiter: "\\t"}
      recode: {event_type: {page_view: view, basket_add: add_to_cart}}

Keys of an input section
~~~~~~~~~~~~~~~~~~~~~~~~
``source``
    A path (CSV, ``.tsv``, or Parquet: a file or a folder of ``.parquet`` files) or ``{path, format,
    delimiter}``, or ``{sql, url}``: a query run through SQLAlchemy (``postgresql://...`` uses psycopg;
    any installed driver works, e.g. ``sqlite:///shop.db``). Put no password in the file: PostgreSQL
    reads ``~/.pgpass`` / ``PGPASSWORD`` itself. The query's result is read into memory in chunks.
    CSV files are read as text with a header line (``"`` quotes), so every value is typed by the mapping.
``columns``
    ``contract column: source column``. A contract column that is not given any other way is taken from
    a source column of the same name, if there is one; required columns with no source are an error.
``constants``
    ``contract column: value`` for what the source lacks (``amount: 1`` per purchase occasion,
    ``quantity: 1``, ``is_return: false`` for a source without returns, ``category: books``). The value
    must have the column's type; timestamps cannot be constants.
``expressions``
    ``contract column: DuckDB SQL expression`` over the source's columns, e.g.
    ``amount: "Quantity * UnitPrice"``; evaluated with the session time zone set to ``timezone``.
``derive``
    ``contract column: template`` for text columns, from other contract columns of the same input:
    ``"{customer_id}-{ts:%Y%m%d}"`` (an order id from customer and time). Timestamps take a strftime
    format after the colon and are formatted in the input's ``timezone``; a null field gives null.
``recode``
    ``contract column: {source value: contract value}``; values not listed are kept.
``timestamp_format`` / ``timezone``
    How text timestamps are read (``try_strptime`` format, or ``epoch`` / ``epoch_ms`` for numbers;
    without a format ISO-8601 text is read, an explicit offset such as ``+02:00`` winning) and the IANA
    zone of naive timestamps (text without offset, Parquet or database timestamps without time zone,
    dates). Stored timestamps are UTC, as the contract says.
``from_activity`` (customers only)
    One customer per ``customer_id`` seen in the imported transactions and events, ``signup_ts`` = the
    first activity; other columns only through ``constants``. Derived customers are ordered by signup.
``merge_lines`` / ``amount_decimals`` (transactions only)
    ``merge_lines: true`` sums ``amount`` and ``quantity`` of the lines that agree on every other
    contract column (the contract has no product column, so such lines would otherwise be exact
    duplicates, which validation quarantines); ``amount_decimals: N`` rounds line and merged amounts.

What the importer judges, and what it leaves to validation
-----------------------------------------------------------
The importer types every value. A value that is present but cannot be read as its column's type with
the given format (``unparseable_timestamp``, ``unparseable_amount``, ``unparseable_quantity``,
``unparseable_is_return``: the validator's reason names) cannot be stored in a typed Parquet file, so the
row is set aside into ``<quarantine_dir>/import_<table>.parquet`` (every source column as text,
``reason``, ``source_row`` = 0-based data row) and counted in the :class:`ImportReport`. Everything else
(missing values, future timestamps, negative amounts, unknown event types, duplicates, ...) is written
as it is and judged by validation, as for every other source. Problems of the mapping itself (a source
that cannot be read, a mapped column the source lacks, a required column with no source, an expression
that does not compile, no rows) raise :class:`MappingError` before anything is written; ``--dry-run``
(:func:`preview_mapping`) lists all of them, the rows that would be set aside and what validation would
quarantine, with sample rows, and writes nothing.

Appending a batch (``--append``)
--------------------------------
The batch is added to the files already in ``raw_dir``; importing the same batch again changes nothing.
A row of the batch is dropped when an equal row is already there, by key:

* transactions: **all contract columns** (``order_id, customer_id, ts, amount, quantity, category,
  is_return``). The contract has no line number, so a line is identified by its order and its content.
  Lines that are equal in every column are counted: the batch's *n*-th copy is dropped only if the file
  already holds *n* copies (validation quarantines the extra copies as ``duplicate`` anyway). A changed
  line (say a corrected amount) is a new line: re-import without ``--append`` to replace data.
* events: all contract columns (``customer_id, ts, event_type, category, session_id``), counted the
  same way.
* customers: ``customer_id``; the profile already in the file is kept (as validation keeps the first).
  With ``from_activity`` new customers get a derived row and an existing customer's ``signup_ts`` moves
  back to the first activity when the batch holds earlier activity.

Existing rows keep their order, new rows follow. Rows carry their own timestamps, so a late row (an
order of last week in today's batch) lands in every feature snapshot after its time once features are
rebuilt. Without ``--append`` the import replaces the three files; an input the mapping leaves out
(``events``) is written empty, or left as it is when appending.

Every output is written to a temporary file beside its target and all of them are moved into place
together (:func:`portrait.files.publish`) once all were written.
"""

from __future__ import annotations

import json
import logging
import shutil
import string
import tempfile
import tomllib
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from features.contract import ARROW_SCHEMAS, REQUIRED_COLUMNS, TABLES
from features.validate import (
    ContractError,
    _blank,
    _first_line,
    _kind,
    _lit,
    _nullable,
    _q,
    _sql_type,
    _to_bigint,
    _to_bool,
    _to_double,
    _to_string,
    validate_table,
)
from portrait.files import publish, temp_beside

if TYPE_CHECKING:
    from portrait.settings import Settings

logger = logging.getLogger(__name__)

_P = "__pv_"  # prefix of internal columns and tables; a source column may not start with it
ROW = f"{_P}row"
"""The column every source relation carries: the 0-based position of the row in its source."""
SET_ASIDE_PREFIX = "import_"
"""Rows the importer cannot type go to ``<quarantine_dir>/import_<table>.parquet``."""
APPEND_KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id",),
    "transactions": tuple(ARROW_SCHEMAS["transactions"].names),
    "events": tuple(ARROW_SCHEMAS["events"].names),
}
"""What makes a row 'already there' on ``--append`` (see the module docstring)."""
_EPOCH_FORMATS = ("epoch", "epoch_ms")


class MappingError(ContractError):
    """The mapping file is invalid or does not fit its sources; the message is one line."""


# ---------------------------------------------------------------------------------------------
# The mapping file
# ---------------------------------------------------------------------------------------------
Scalar = bool | int | float | str | None


class PathSource(BaseModel):
    """A CSV or Parquet file (or a folder of Parquet files)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="File or folder; relative to the mapping file.")
    format: Literal["csv", "parquet"] | None = Field(
        None, description="Default: from the suffix (.csv/.tsv/.txt: csv; a folder or .parquet: parquet)."
    )
    delimiter: str | None = Field(
        None, min_length=1, max_length=1, description="CSV delimiter (default ',', or tab for .tsv)."
    )


class SqlSource(BaseModel):
    """A SQL query against a database URL (SQLAlchemy)."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, description="The query; its result columns are the source columns.")
    url: str = Field(min_length=1, description="Database URL, e.g. postgresql://user@host:5432/db.")


def _source_kind(value: Any) -> str | None:
    if isinstance(value, PathSource):
        return "file"
    if isinstance(value, SqlSource):
        return "query"
    if isinstance(value, dict):
        return "query" if ("sql" in value or "url" in value) else "file"
    return None


Source = Annotated[
    Annotated[PathSource, Tag("file")] | Annotated[SqlSource, Tag("query")], Discriminator(_source_kind)
]
_SOURCE_TAGS = ("file", "query")


def _arrow_check(table: str, column: str, value: Scalar) -> str | None:
    """Why ``value`` cannot be a constant of ``table.column`` (None: it can)."""
    arrow_type = ARROW_SCHEMAS[table].field(column).type
    if value is None:
        return "a required column cannot be null" if column in REQUIRED_COLUMNS[table] else None
    if pa.types.is_timestamp(arrow_type):
        return "a timestamp cannot be a constant; map a column or give an expression"
    if arrow_type == pa.bool_() and not isinstance(value, bool):
        return f"must be true or false (got {value!r})"
    if arrow_type == pa.int64() and (isinstance(value, bool) or not isinstance(value, int)):
        return f"must be a whole number (got {value!r})"
    if arrow_type == pa.float64() and (isinstance(value, bool) or not isinstance(value, int | float)):
        return f"must be a number (got {value!r})"
    if arrow_type == pa.string() and not isinstance(value, str):
        return f"must be text; quote it (got {value!r})"
    return None


class InputMapping(BaseModel):
    """How one input is read and mapped (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    TABLE: ClassVar[str] = ""

    source: Source | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    constants: dict[str, Scalar] = Field(default_factory=dict)
    expressions: dict[str, str] = Field(default_factory=dict)
    derive: dict[str, str] = Field(default_factory=dict)
    recode: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    timestamp_format: str | None = None
    timezone: str = "UTC"

    @field_validator("source", mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("columns", "constants", "expressions", "derive", "recode")
    @classmethod
    def _contract_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        names = ARROW_SCHEMAS[cls.TABLE].names
        for key in value:
            if key not in names:
                raise ValueError(
                    f"{key!r} is not a {cls.TABLE} contract column; expected one of: {', '.join(names)}"
                )
        return value

    @field_validator("recode", mode="before")
    @classmethod
    def _recode_keys(cls, value: Any) -> Any:
        """YAML turns keys like ``1`` or ``yes`` into numbers and booleans; compare them as text."""
        if not isinstance(value, dict):
            return value
        return {
            column: (
                {(str(k).lower() if isinstance(k, bool) else str(k)): v for k, v in codes.items()}
                if isinstance(codes, dict)
                else codes
            )
            for column, codes in value.items()
        }

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Berlin)"
            ) from None
        return value

    @field_validator("timestamp_format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        if value is not None and value not in _EPOCH_FORMATS and "%" not in value:
            raise ValueError(
                f"{value!r} is not a strptime format (e.g. '%Y-%m-%d %H:%M:%S'), 'epoch' or 'epoch_ms'"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> InputMapping:
        table = self.TABLE
        ways = {"columns": self.columns, "constants": self.constants, "expressions": self.expressions}
        ways["derive"] = self.derive
        seen: dict[str, str] = {}
        for way, given in ways.items():
            for column in given:
                if column in seen:
                    raise ValueError(f"{column} is given twice ({seen[column]}.{column} and {way}.{column})")
                seen[column] = way
        for column, value in self.constants.items():
            problem = _arrow_check(table, column, value)
            if problem:
                raise ValueError(f"constants.{column}: {problem}")
        schema = ARROW_SCHEMAS[table]
        for column, template in self.derive.items():
            if schema.field(column).type != pa.string():
                raise ValueError(f"derive.{column}: only text columns can be derived from a template")
            try:
                fields = list(string.Formatter().parse(template))
            except ValueError as exc:
                raise ValueError(f"derive.{column}: {template!r} is not a template ({exc})") from None
            for _, name, spec, conversion in fields:
                if name is None:
                    continue
                if name not in schema.names or name in self.derive:
                    raise ValueError(
                        f"derive.{column}: {{{name}}} must name a contract column of {table} that is not "
                        "derived itself"
                    )
                if conversion:
                    raise ValueError(f"derive.{column}: conversions such as !r are not supported")
                if spec and not pa.types.is_timestamp(schema.field(name).type):
                    raise ValueError(f"derive.{column}: only timestamps take a format ({{{name}:{spec}}})")
        for column, codes in self.recode.items():
            for value in codes.values():
                problem = _arrow_check(table, column, value)
                if problem and value is not None:
                    raise ValueError(f"recode.{column}: {problem}")
        return self

    def how(self, column: str, source_columns: Iterable[str] = ()) -> str:
        """How ``column`` is filled, in words (for the dry run)."""
        if column in self.columns:
            return f"column {self.columns[column]!r}"
        if column in self.constants:
            return f"constant {json.dumps(self.constants[column])}"
        if column in self.expressions:
            return f"expression {self.expressions[column]}"
        if column in self.derive:
            return f"derived {self.derive[column]!r}"
        if column in source_columns:
            return f"column {column!r} (same name)"
        return "null"


class CustomersMapping(InputMapping):
    TABLE: ClassVar[str] = "customers"

    from_activity: bool = Field(
        False, description="Derive customers from the imported activity (signup = first activity)."
    )

    @model_validator(mode="after")
    def _source_or_activity(self) -> CustomersMapping:
        if self.from_activity:
            if self.source is not None:
                raise ValueError("give either a source or from_activity: true, not both")
            other = [w for w in ("columns", "expressions", "derive", "recode") if getattr(self, w)]
            if other:
                raise ValueError(f"with from_activity only constants can be given (not {', '.join(other)})")
            derived = [c for c in self.constants if c in ("customer_id", "signup_ts")]
            if derived:
                raise ValueError(f"constants.{derived[0]}: comes from the activity with from_activity")
        elif self.source is None:
            raise ValueError("no source: give a source, or from_activity: true to derive customers")
        return self


class TransactionsMapping(InputMapping):
    TABLE: ClassVar[str] = "transactions"

    merge_lines: bool = Field(False, description="Sum lines equal in all but amount and quantity.")
    amount_decimals: int | None = Field(None, ge=0, le=9, description="Round amounts to this many decimals.")

    @model_validator(mode="after")
    def _has_source(self) -> TransactionsMapping:
        if self.source is None:
            raise ValueError("no source: give a path, or {sql: ..., url: ...}")
        return self


class EventsMapping(InputMapping):
    TABLE: ClassVar[str] = "events"

    @model_validator(mode="after")
    def _has_source(self) -> EventsMapping:
        if self.source is None:
            raise ValueError("no source: give a path, or {sql: ..., url: ...}")
        return self


class Mapping(BaseModel):
    """A whole mapping file: one section per input (``events`` optional)."""

    model_config = ConfigDict(extra="forbid")

    customers: CustomersMapping
    transactions: TransactionsMapping
    events: EventsMapping | None = None

    def inputs(self) -> dict[str, InputMapping]:
        """The mapped inputs, by table."""
        found = {"customers": self.customers, "transactions": self.transactions, "events": self.events}
        return {t: m for t, m in found.items() if m is not None}


_SECTION_MODELS: dict[str, type[InputMapping]] = {
    "customers": CustomersMapping,
    "transactions": TransactionsMapping,
    "events": EventsMapping,
}


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    if len(loc) == 1:
        return list(Mapping.model_fields)
    if len(loc) == 2 and loc[0] in _SECTION_MODELS:
        return list(_SECTION_MODELS[loc[0]].model_fields)
    if len(loc) == 4 and loc[1] == "source":
        return list((PathSource if loc[2] == "file" else SqlSource).model_fields)
    return None


def _error_line(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    where = ".".join(
        str(p) for i, p in enumerate(loc) if not (i == 2 and loc[1] == "source" and p in _SOURCE_TAGS)
    )
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        message = "unknown key" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
    elif kind == "missing" and len(loc) == 1:
        message = "missing section" + (
            " (give a source, or from_activity: true)" if loc[0] == "customers" else ""
        )
    elif kind == "union_tag_not_found":
        message = "must be a path, {path: ...} or {sql: ..., url: ...}"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse_mapping(data: Any, *, name: str = "mapping", base_dir: Path | None = None) -> Mapping:
    """Validate mapping data (the parsed YAML/TOML) into a :class:`Mapping`; relative source paths are
    taken relative to ``base_dir``. Raises :class:`MappingError` with every problem on one line."""
    if not isinstance(data, dict):
        raise MappingError(
            f"{name}: expected sections customers, transactions (and events), got {type(data).__name__}"
        )
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        raise MappingError(f"{name}: " + "; ".join(_error_line(e) for e in exc.errors())) from None
    if base_dir is not None:
        for section in mapping.inputs().values():
            if isinstance(section.source, PathSource) and not Path(section.source.path).is_absolute():
                section.source.path = str(Path(base_dir) / section.source.path)
    return mapping


def load_mapping(path: Path | str) -> Mapping:
    """Read and validate a mapping file (``.yaml`` / ``.yml`` / ``.toml``)."""
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"mapping file {path} does not exist.")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"mapping file {path} cannot be read ({_first_line(exc)}).") from exc
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or _first_line(exc)
            raise MappingError(f"{path}: not valid YAML ({problem}{where}).") from None
    elif suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MappingError(f"{path}: not valid TOML ({_first_line(exc)}).") from None
    else:
        raise MappingError(f"mapping file {path} must be YAML (.yaml, .yml) or TOML (.toml).")
    return parse_mapping(data, name=str(path), base_dir=path.parent)


def with_source(mapping: Mapping, table: str, path: Path | str) -> Mapping:
    """A copy of ``mapping`` whose ``table`` input reads ``path`` (``--source table=path``; a batch file
    with the same layout as the mapped one)."""
    if table not in ("customers", "transactions", "events"):
        raise MappingError(
            f"--source {table}=...: {table!r} is not an input (customers, transactions, events)."
        )
    section = mapping.inputs().get(table)
    if section is None:
        raise MappingError(f"--source {table}=...: the mapping has no {table} section to read it with.")
    if getattr(section, "from_activity", False):
        raise MappingError(f"--source {table}=...: customers are derived from activity in this mapping.")
    current = section.source
    options = current.model_dump(exclude={"path"}) if isinstance(current, PathSource) else {}
    new_section = section.model_copy(
        update={"source": PathSource(path=str(Path(path).absolute()), **options)}
    )
    return mapping.model_copy(update={table: new_section})


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------
class Problem(BaseModel):
    """One thing wrong with an import. ``fatal``: the import cannot run; otherwise rows are affected."""

    table: str
    message: str
    key: str | None = Field(None, description="The mapping key concerned, e.g. transactions.columns.ts.")
    rows: int | None = None
    examples: list[str] = Field(default_factory=list)
    fatal: bool = True

    def line(self) -> str:
        examples = f" (e.g. {'; '.join(self.examples)})" if self.examples else ""
        return f"{self.key or self.table}: {self.message}{examples}"


class TableImport(BaseModel):
    """What the import did with one input."""

    table: str
    source: str
    kind: Literal["source", "derived", "empty"] = "source"
    rows_read: int = Field(0, description="Rows of the source (of the batch).")
    set_aside: dict[str, int] = Field(default_factory=dict, description="Rows the importer could not type.")
    merged: int = Field(0, description="Lines folded into another (merge_lines).")
    already_present: int = Field(0, description="--append: batch rows already in the file.")
    added: int = Field(0, description="Rows of the batch now in the file.")
    rows_written: int = Field(0, description="Rows in the written file (existing + added when appending).")
    columns: dict[str, str] = Field(default_factory=dict, description="How each contract column is filled.")
    path: str | None = None
    set_aside_path: str | None = None


class ImportReport(BaseModel):
    """The outcome of an import or a dry run."""

    mapping: str | None = None
    append: bool = False
    dry_run: bool = False
    tables: dict[str, TableImport] = Field(default_factory=dict)
    problems: list[Problem] = Field(default_factory=list)
    samples: dict[str, list[dict[str, str | None]]] = Field(default_factory=dict)

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]


# ---------------------------------------------------------------------------------------------
# Reading sources into DuckDB
# ---------------------------------------------------------------------------------------------
@dataclass
class SourceRelation:
    """A source in a DuckDB connection: a relation with a :data:`ROW` column (0-based source order)."""

    name: str
    label: str
    csv: bool = False


def _exec(con: duckdb.DuckDBPyConnection, query: str, params: list[Any] | None = None) -> list[tuple]:
    return con.execute(query, params or []).fetchall()


def _described(con: duckdb.DuckDBPyConnection, query: str) -> dict[str, str]:
    return {r[0]: r[1] for r in _exec(con, f"DESCRIBE {query}")}


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".zst"):
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _read_path(con: duckdb.DuckDBPyConnection, table: str, source: PathSource, name: str) -> SourceRelation:
    path = Path(source.path)
    label = f"{table} source {path}"
    if not path.exists():
        raise MappingError(f"{label} does not exist.")
    fmt = source.format or (
        "parquet" if path.is_dir() or _suffix(path) in (".parquet", ".pq", ".parq") else None
    )
    if fmt is None and _suffix(path) in (".csv", ".tsv", ".txt"):
        fmt = "csv"
    if fmt is None:
        raise MappingError(f"{label}: unknown format; give source.format (csv or parquet).")
    try:
        if fmt == "csv":
            if path.is_dir():
                raise MappingError(f"{label} is a folder; CSV sources are single files.")
            delim = source.delimiter or ("\t" if _suffix(path) == ".tsv" else ",")
            # Every dialect option is fixed (as in features.validate): the sniffer could otherwise pick
            # a later line as the header or take lines starting with '#' as comments.
            reader = (
                f"read_csv({_lit(str(path))}, header=true, all_varchar=true, skip=0, comment='', "
                f"delim={_lit(delim)}, quote='\"', escape='\"', strict_mode=true, null_padding=false, "
                "ignore_errors=false)"
            )
            _exec(con, f"CREATE TEMP TABLE {name}_csv AS SELECT * FROM {reader}")
            _exec(con, f"CREATE TEMP VIEW {name} AS SELECT *, rowid AS {ROW} FROM {name}_csv")
        else:
            target = str(path / "**" / "*.parquet") if path.is_dir() else str(path)
            _exec(
                con,
                f"CREATE TEMP TABLE {name} AS SELECT * EXCLUDE (filename, file_row_number), "
                f"row_number() OVER (ORDER BY filename, file_row_number) - 1 AS {ROW} "
                f"FROM read_parquet({_lit(target)}, filename=true, file_row_number=true, union_by_name=true)",
            )
    except duckdb.Error as exc:
        what = "a well-formed CSV file with a header line" if fmt == "csv" else "Parquet"
        raise MappingError(f"{label} cannot be read as {what} ({_first_line(exc)}).") from exc
    return SourceRelation(name, label, csv=fmt == "csv")


def _read_sql(
    con: duckdb.DuckDBPyConnection, table: str, source: SqlSource, name: str, timeout_s: int
) -> SourceRelation:
    import pandas as pd
    import sqlalchemy as sa

    from portrait.backends import is_postgres, normalize_postgres_url, redact, with_connect_timeout

    url = normalize_postgres_url(source.url)
    if is_postgres(url):
        url = with_connect_timeout(url, timeout_s)
    label = f"{table} source (query at {redact(source.url)})"
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise MappingError(
            f"{table}.source.url {redact(source.url)} is not a usable database URL ({_first_line(exc)})."
        ) from None
    chunk = f"{_P}chunk"
    try:
        with engine.connect() as conn:
            created = False
            for frame in pd.read_sql_query(sa.text(source.sql), conn, chunksize=50_000, coerce_float=True):
                con.register(chunk, frame)
                try:
                    if created:
                        _exec(con, f"INSERT INTO {name}_q BY NAME SELECT * FROM {chunk}")
                    else:
                        _exec(con, f"CREATE TEMP TABLE {name}_q AS SELECT * FROM {chunk}")
                        created = True
                finally:
                    con.unregister(chunk)
            if not created:
                raise MappingError(f"{label} returned no columns.")
    except sa.exc.SQLAlchemyError as exc:
        reason = _first_line(getattr(exc, "orig", None) or exc)
        raise MappingError(f"{label} failed: {reason}.") from None
    except duckdb.Error as exc:
        raise MappingError(f"{label}: its result cannot be stored ({_first_line(exc)}).") from exc
    finally:
        engine.dispose()
    _exec(con, f"CREATE TEMP VIEW {name} AS SELECT *, rowid AS {ROW} FROM {name}_q")
    return SourceRelation(name, label)


def _read_source(
    con: duckdb.DuckDBPyConnection, table: str, section: InputMapping, timeout_s: int
) -> SourceRelation:
    name = f"{_P}src_{table}"
    source = section.source
    if isinstance(source, SqlSource):
        return _read_sql(con, table, source, name, timeout_s)
    assert isinstance(source, PathSource)
    return _read_path(con, table, source, name)


# ---------------------------------------------------------------------------------------------
# Mapping one input
# ---------------------------------------------------------------------------------------------
def _const_sql(value: Scalar, arrow_type: pa.DataType) -> str:
    if value is None:
        return f"CAST(NULL AS {_sql_type(arrow_type)})"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value)) if arrow_type == pa.float64() else str(int(value))
    return _lit(str(value))


def _recode_sql(raw: str, codes: dict[str, Scalar]) -> str:
    whens = " ".join(
        f"WHEN {_lit(k)} THEN {'NULL' if v is None else _lit(str(v).lower() if isinstance(v, bool) else str(v))}"
        for k, v in codes.items()
    )
    return f"(CASE CAST({raw} AS VARCHAR) {whens} ELSE CAST({raw} AS VARCHAR) END)"


def _timestamp_sql(raw: str, kind: str, fmt: str | None) -> str:
    """SQL: a TIMESTAMPTZ from a raw value; naive values are read in the session time zone."""
    if fmt == "epoch":
        return f"to_timestamp(TRY_CAST(CAST({raw} AS VARCHAR) AS DOUBLE))"
    if fmt == "epoch_ms":
        return f"to_timestamp(TRY_CAST(CAST({raw} AS VARCHAR) AS DOUBLE) / 1000.0)"
    if kind == "ts":
        return f"CAST({raw} AS TIMESTAMPTZ)"
    text = f"trim({raw})" if kind == "str" else f"CAST({raw} AS VARCHAR)"
    if fmt:
        return f"CAST(try_strptime({text}, {_lit(fmt)}) AS TIMESTAMPTZ)"
    return f"TRY_CAST({text} AS TIMESTAMPTZ)"


def _typed_sql(arrow_type: pa.DataType, raw: str, kind: str, fmt: str | None) -> str:
    if pa.types.is_timestamp(arrow_type):
        return _timestamp_sql(raw, kind, fmt)
    convert = {
        pa.string(): _to_string,
        pa.float64(): _to_double,
        pa.int64(): _to_bigint,
        pa.bool_(): _to_bool,
    }
    return convert[arrow_type](raw, kind)


def _reason_name(column: str, arrow_type: pa.DataType) -> str:
    return "unparseable_timestamp" if pa.types.is_timestamp(arrow_type) else f"unparseable_{column}"


def _template_sql(template: str, schema: pa.Schema) -> str:
    parts = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        if literal:
            parts.append(_lit(literal))
        if name is not None:
            column = _q(name)
            if pa.types.is_timestamp(schema.field(name).type):
                parts.append(f"strftime({column}, {_lit(spec or '%Y-%m-%dT%H:%M:%S')})")
            else:
                parts.append(f"CAST({column} AS VARCHAR)")
    return " || ".join(parts) if parts else "''"


@dataclass
class _Mapped:
    """One input mapped into a temporary table ``out`` (contract columns + :data:`ROW`)."""

    out: str
    report: TableImport
    set_aside_query: str | None = None
    examples: dict[str, list[str]] = field(default_factory=dict)
    reason_column: dict[str, str] = field(default_factory=dict)


def _map_input(
    con: duckdb.DuckDBPyConnection,
    table: str,
    section: InputMapping,
    rel: SourceRelation,
    problems: list[Problem],
) -> _Mapped | None:
    """Type and map one source relation into ``__pv_out_<table>``; adds fatal problems and returns None
    when it cannot. Everything about the input is evaluated in its time zone."""
    try:
        _exec(con, f"SET TimeZone = {_lit(section.timezone)}")
    except duckdb.Error as exc:
        problems.append(Problem(table=table, key=f"{table}.timezone", message=_first_line(exc)))
        return None
    try:
        return _map_typed(con, table, section, rel, problems)
    finally:
        _exec(con, "SET TimeZone = 'UTC'")


def _raw_expressions(
    con: duckdb.DuckDBPyConnection,
    table: str,
    section: InputMapping,
    rel: SourceRelation,
    source_cols: dict[str, str],
    problems: list[Problem],
) -> dict[str, str]:
    """SQL for each contract column's raw value (before typing); derived columns are left out."""
    found = ", ".join(source_cols) or "none"
    raw: dict[str, str] = {}
    for f in ARROW_SCHEMAS[table]:
        c = f.name
        if c in section.columns:
            src = section.columns[c]
            if src in source_cols:
                raw[c] = _q(src)
            else:
                problems.append(
                    Problem(
                        table=table,
                        key=f"{table}.columns.{c}",
                        message=f"the source has no column {src!r} (found: {found})",
                    )
                )
        elif c in section.constants:
            raw[c] = _const_sql(section.constants[c], f.type)
        elif c in section.expressions:
            expr = f"({section.expressions[c]})"
            try:
                _described(con, f"SELECT {expr} FROM {rel.name}")
                raw[c] = expr
            except duckdb.Error as exc:
                problems.append(
                    Problem(
                        table=table,
                        key=f"{table}.expressions.{c}",
                        message=f"{section.expressions[c]!r} is not a DuckDB SQL expression over the source's "
                        f"columns ({_first_line(exc)})",
                    )
                )
        elif c in section.derive:
            continue
        elif c in source_cols:
            raw[c] = _q(c)
        elif c in REQUIRED_COLUMNS[table]:
            problems.append(
                Problem(
                    table=table,
                    key=f"{table}.columns.{c}",
                    message=f"required column {c} has no source: the source has no column {c!r} (found: "
                    f"{found}); give columns.{c}, constants.{c}, expressions.{c} or derive.{c}",
                )
            )
        else:
            raw[c] = f"CAST(NULL AS {_sql_type(f.type)})"
    for c, codes in section.recode.items():
        if c in raw:
            raw[c] = _recode_sql(raw[c], codes)
    return raw


def _map_typed(
    con: duckdb.DuckDBPyConnection,
    table: str,
    section: InputMapping,
    rel: SourceRelation,
    problems: list[Problem],
) -> _Mapped | None:
    schema = ARROW_SCHEMAS[table]
    try:
        source_cols = {c: t for c, t in _described(con, f"SELECT * FROM {rel.name}").items() if c != ROW}
    except duckdb.Error as exc:
        problems.append(Problem(table=table, message=f"{rel.label} cannot be read ({_first_line(exc)})"))
        return None
    reserved = [c for c in source_cols if c.startswith(_P)]
    if reserved:
        problems.append(
            Problem(table=table, message=f"{rel.label} has reserved column name(s) {', '.join(reserved)}")
        )
        return None
    before = len(problems)
    raw = _raw_expressions(con, table, section, rel, source_cols, problems)
    if len(problems) > before:
        return None

    def raw_name(c: str) -> str:
        return _q(f"{_P}r_{c}")

    raw_view, typed, out = f"{_P}raw_{table}", f"{_P}typed_{table}", f"{_P}out_{table}"
    _exec(
        con,
        f"CREATE OR REPLACE TEMP VIEW {raw_view} AS SELECT {ROW}, "
        + ", ".join(f"{expr} AS {raw_name(c)}" for c, expr in raw.items())
        + f" FROM {rel.name}",
    )
    kinds = {
        c.removeprefix(f"{_P}r_"): _kind(t) for c, t in _described(con, f"SELECT * FROM {raw_view}").items()
    }
    typed_cols: list[str] = []
    reasons: list[tuple[str, str]] = []  # (reason, condition), in contract column order
    reason_column: dict[str, str] = {}
    for f in schema:
        if f.name not in raw:
            continue
        r, kind = raw_name(f.name), kinds[f.name]
        fmt = section.timestamp_format if pa.types.is_timestamp(f.type) else None
        typed_cols.append(f"{_typed_sql(f.type, r, kind, fmt)} AS {_q(f.name)}")
        if f.type != pa.string():
            reason = _reason_name(f.name, f.type)
            reasons.append((reason, f"NOT {_blank(r, kind)} AND {_q(f.name)} IS NULL"))
            reason_column[reason] = f.name
    case = (
        "CASE " + " ".join(f"WHEN {cond} THEN {_lit(r)}" for r, cond in reasons) + " END"
        if reasons
        else "CAST(NULL AS VARCHAR)"
    )
    derived = "".join(f", {_template_sql(t, schema)} AS {_q(c)}" for c, t in section.derive.items())
    try:
        _exec(
            con,
            f"CREATE OR REPLACE TEMP TABLE {typed} AS SELECT *{derived} FROM ("
            f"SELECT *, {case} AS {_P}reason FROM (SELECT *, {', '.join(typed_cols)} FROM {raw_view}))",
        )
    except duckdb.Error as exc:
        problems.append(Problem(table=table, message=f"{rel.label} cannot be mapped ({_first_line(exc)})"))
        return None

    rows_read = int(_exec(con, f"SELECT count(*) FROM {typed}")[0][0])
    set_aside = {
        str(k): int(v)
        for k, v in _exec(
            con,
            f"SELECT {_P}reason, count(*) FROM {typed} WHERE {_P}reason IS NOT NULL GROUP BY 1 ORDER BY 1",
        )
    }
    examples: dict[str, list[str]] = {}
    for reason in set_aside:
        column = reason_column[reason]
        rows = _exec(
            con,
            f"SELECT {ROW}, CAST({raw_name(column)} AS VARCHAR) FROM {typed} "
            f"WHERE {_P}reason = {_lit(reason)} ORDER BY {ROW} LIMIT 3",
        )
        examples[reason] = [
            f"{f'line {int(n) + 2}' if rel.csv else f'row {int(n)}'}: {column} {v!r}" for n, v in rows
        ]

    decimals = section.amount_decimals if isinstance(section, TransactionsMapping) else None
    merge = isinstance(section, TransactionsMapping) and section.merge_lines
    select = ", ".join(
        f"round(amount, {decimals}) AS amount" if n == "amount" and decimals is not None else _q(n)
        for n in schema.names
    )
    kept = f"SELECT {select}, {ROW} FROM {typed} WHERE {_P}reason IS NULL"
    if merge:
        total = "sum(amount)" if decimals is None else f"round(sum(amount), {decimals})"
        kept = (
            f"SELECT order_id, customer_id, ts, CASE WHEN count(amount) = count(*) THEN {total} END AS amount, "
            "CASE WHEN count(quantity) = count(*) THEN CAST(sum(quantity) AS BIGINT) END AS quantity, "
            f"category, is_return, min({ROW}) AS {ROW} FROM ({kept}) "
            "GROUP BY order_id, customer_id, ts, category, is_return"
        )
    _exec(con, f"CREATE OR REPLACE TEMP TABLE {out} AS {kept}")
    written = int(_exec(con, f"SELECT count(*) FROM {out}")[0][0])
    names = ["raw_" + c if c in ("reason", "source_row") else c for c in source_cols]
    raw_cols = ", ".join(
        f"CAST(s.{_q(c)} AS VARCHAR) AS {_q(n)}" for c, n in zip(source_cols, names, strict=True)
    )
    set_aside_query = (
        f"SELECT {raw_cols}, t.{_P}reason AS reason, CAST(s.{ROW} AS BIGINT) AS source_row "
        f"FROM {rel.name} s JOIN {typed} t USING ({ROW}) WHERE t.{_P}reason IS NOT NULL ORDER BY s.{ROW}"
    )
    report = TableImport(
        table=table,
        source=rel.label.removeprefix(f"{table} source "),
        rows_read=rows_read,
        set_aside=set_aside,
        merged=rows_read - sum(set_aside.values()) - written if merge else 0,
        added=written,
        columns={f.name: section.how(f.name, source_cols) for f in schema},
    )
    return _Mapped(out, report, set_aside_query if set_aside else None, examples, reason_column)


# ---------------------------------------------------------------------------------------------
# Appending and deriving
# ---------------------------------------------------------------------------------------------
def _read_existing(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> str | None:
    """The contract file already in ``raw_dir`` as a temp table (contract columns + ROW), or None."""
    if not path.exists():
        return None
    name = f"{_P}old_{table}"
    schema = ARROW_SCHEMAS[table]
    try:
        cols = _described(con, f"SELECT * FROM read_parquet({_lit(str(path))})")
        missing = [c for c in REQUIRED_COLUMNS[table] if c not in cols]
        if missing:
            raise MappingError(
                f"cannot append to {path}: it has no column(s) {', '.join(missing)}; import without --append."
            )
        select = ", ".join(
            f"CAST({_q(f.name)} AS {_sql_type(f.type)}) AS {_q(f.name)}"
            if f.name in cols
            else f"CAST(NULL AS {_sql_type(f.type)}) AS {_q(f.name)}"
            for f in schema
        )
        _exec(
            con,
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {select}, file_row_number AS {ROW} "
            f"FROM read_parquet({_lit(str(path))}, file_row_number=true)",
        )
    except duckdb.Error as exc:
        raise MappingError(f"cannot append to {path} ({_first_line(exc)}); import without --append.") from exc
    return name


def _append(con: duckdb.DuckDBPyConnection, table: str, old: str, new: str) -> tuple[str, int]:
    """Existing rows, then the batch rows not already there (by :data:`APPEND_KEYS`); returns the
    combined table and the number of batch rows added."""
    names = ARROW_SCHEMAS[table].names
    keys = APPEND_KEYS[table]
    cols = ", ".join(_q(n) for n in names)
    part = f"{_P}part"
    if table == "customers":
        on = "n.customer_id IS NOT DISTINCT FROM o.customer_id"
        fresh = f"SELECT {cols}, 1 AS {part}, {ROW} FROM {new} n ANTI JOIN {old} o ON {on}"
    else:
        by = ", ".join(_q(k) for k in keys)
        numbered = f"SELECT *, row_number() OVER (PARTITION BY {by} ORDER BY {ROW}) AS {_P}n FROM "
        on = (
            " AND ".join(f"n.{_q(k)} IS NOT DISTINCT FROM o.{_q(k)}" for k in keys)
            + f" AND n.{_P}n = o.{_P}n"
        )
        fresh = f"SELECT {cols}, 1 AS {part}, {ROW} FROM ({numbered}{new}) n ANTI JOIN ({numbered}{old}) o ON {on}"
    combined = f"{_P}all_{table}"
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE {combined} AS SELECT {cols}, row_number() OVER (ORDER BY {part}, {ROW}) "
        f"AS {ROW}, {part} FROM (SELECT {cols}, 0 AS {part}, {ROW} FROM {old} UNION ALL {fresh})",
    )
    added = int(_exec(con, f"SELECT count(*) FROM {combined} WHERE {part} = 1")[0][0])
    return combined, added


def _derive_customers(
    con: duckdb.DuckDBPyConnection, section: CustomersMapping, activity: list[str], old: str | None
) -> tuple[str, int]:
    """Customers from activity (signup = first activity), merged into ``old`` when appending."""
    schema = ARROW_SCHEMAS["customers"]
    union = " UNION ALL ".join(f"SELECT customer_id, ts FROM {a}" for a in activity)
    first = (
        f"SELECT customer_id, min(ts) AS first_ts FROM ({union}) WHERE customer_id IS NOT NULL "
        "AND trim(customer_id) <> '' AND ts IS NOT NULL GROUP BY customer_id"
    )
    others = ", ".join(
        f"{_const_sql(section.constants.get(f.name), f.type)} AS {_q(f.name)}"
        for f in schema
        if f.name not in ("customer_id", "signup_ts")
    )
    derived = (
        f"SELECT customer_id, first_ts AS signup_ts, {others}, "
        f"row_number() OVER (ORDER BY first_ts, customer_id) - 1 AS {ROW} FROM ({first})"
    )
    name = f"{_P}derived_customers"
    _exec(con, f"CREATE OR REPLACE TEMP TABLE {name} AS {derived}")
    if old is None:
        return name, int(_exec(con, f"SELECT count(*) FROM {name}")[0][0])
    cols = ", ".join(
        "CASE WHEN a.first_ts < o.signup_ts THEN a.first_ts ELSE o.signup_ts END AS signup_ts"
        if f.name == "signup_ts"
        else f"o.{_q(f.name)}"
        for f in schema
    )
    moved = f"{_P}old_moved"
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE {moved} AS SELECT {cols}, o.{ROW} FROM {old} o "
        f"LEFT JOIN ({first}) a USING (customer_id)",
    )
    return _append(con, "customers", moved, name)


# ---------------------------------------------------------------------------------------------
# Staging: everything written to temporary files, then published together
# ---------------------------------------------------------------------------------------------
@dataclass
class Staged:
    """Outputs written to temporary files beside their targets, not yet published."""

    report: ImportReport
    moves: list[tuple[Path, Path]] = field(default_factory=list)

    def commit(self) -> None:
        publish(self.moves)
        self.moves = []

    def discard(self) -> None:
        for tmp, _ in self.moves:
            tmp.unlink(missing_ok=True)
        self.moves = []


def _write(con: duckdb.DuckDBPyConnection, relation: str, table: str, target: Path, moves: list) -> int:
    schema = ARROW_SCHEMAS[table]
    tmp = temp_beside(target)
    moves.append((tmp, target))
    select = ", ".join(f"CAST({_q(f.name)} AS {_sql_type(f.type)}) AS {_q(f.name)}" for f in schema)
    query = _nullable(f"SELECT {select}, {ROW} FROM {relation}", schema.names, order_by=ROW)
    rows = int(_exec(con, f"COPY ({query}) TO {_lit(str(tmp))} (FORMAT parquet)")[0][0])
    written = pq.read_schema(tmp)
    if not written.equals(schema):
        raise RuntimeError(f"import wrote {target.name} with schema {written}, expected {schema}")
    return rows


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def _shown(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _sample(con: duckdb.DuckDBPyConnection, relation: str, table: str, n: int) -> list[dict[str, str | None]]:
    """The first ``n`` mapped rows, as text (timestamps in UTC)."""
    names = ARROW_SCHEMAS[table].names
    rows = _exec(
        con, f"SELECT {', '.join(_q(c) for c in names)} FROM {relation} ORDER BY {ROW} LIMIT {int(n)}"
    )
    return [{c: _shown(v) for c, v in zip(names, row, strict=True)} for row in rows]


def stage_relations(
    con: duckdb.DuckDBPyConnection,
    mapping: Mapping,
    relations: dict[str, SourceRelation],
    raw_dir: Path,
    *,
    set_aside_dir: Path | None = None,
    append: bool = False,
    sample: int = 0,
    problems: list[Problem] | None = None,
) -> Staged:
    """Map the source ``relations`` (by table, each with a :data:`ROW` column) onto contract files in
    ``raw_dir``, written to temporary files (see :class:`Staged`). ``set_aside_dir``: where rows that
    cannot be typed go (None: such rows raise). With ``problems`` given, fatal problems are collected there
    and nothing is staged; otherwise they raise :class:`MappingError` (one line, all of them)."""
    collect = problems is not None
    problems = problems if problems is not None else []
    raw_dir = Path(raw_dir)
    report = ImportReport(append=append)
    staged = Staged(report)
    _exec(con, "SET TimeZone = 'UTC'")
    _exec(con, "SET enable_progress_bar = false")
    final: dict[str, str] = {}

    def take(table: str, mapped: _Mapped) -> None:
        """Record a mapped input: its row problems, sample, set-aside file, and the append."""
        report.tables[table] = mapped.report
        for reason, n in mapped.report.set_aside.items():
            column = mapped.reason_column[reason]
            problems.append(
                Problem(
                    table=table,
                    key=f"{table}.timestamp_format" if column in ("ts", "signup_ts") else f"{table}.{column}",
                    message=f"{reason}: {_rows(n)} set aside by the import ({column} not readable)",
                    rows=n,
                    examples=mapped.examples.get(reason, []),
                    fatal=False,
                )
            )
        if sample:
            report.samples[table] = _sample(con, mapped.out, table, sample)
        final[table] = mapped.out
        if mapped.set_aside_query:
            if set_aside_dir is None:
                raise MappingError(f"{table}: rows the mapping cannot type: {mapped.report.set_aside}.")
            target = Path(set_aside_dir) / f"{SET_ASIDE_PREFIX}{table}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_beside(target)
            staged.moves.append((tmp, target))
            _exec(con, f"COPY ({mapped.set_aside_query}) TO {_lit(str(tmp))} (FORMAT parquet)")
            mapped.report.set_aside_path = str(target)
        if append:
            old = _read_existing(con, table, raw_dir / f"{table}.parquet")
            if old is not None:
                final[table], added = _append(con, table, old, mapped.out)
                mapped.report.already_present = mapped.report.added - added
                mapped.report.added = added

    try:
        for table in ("transactions", "events"):
            section = mapping.inputs().get(table)
            if section is not None and table in relations:
                mapped = _map_input(con, table, section, relations[table], problems)
                if mapped is not None:
                    take(table, mapped)

        customers = mapping.customers
        if customers.from_activity and "transactions" in final:
            activity = [final["transactions"]]
            events = final.get("events")
            if events is None and append:
                events = _read_existing(con, "events", raw_dir / "events.parquet")
            if events is not None:
                activity.append(events)
            old = _read_existing(con, "customers", raw_dir / "customers.parquet") if append else None
            final["customers"], added = _derive_customers(con, customers, activity, old)
            report.tables["customers"] = TableImport(
                table="customers",
                source="derived from the activity",
                kind="derived",
                added=added,
                columns={f.name: customers.how(f.name) for f in ARROW_SCHEMAS["customers"]}
                | {"customer_id": "each customer_id of the activity", "signup_ts": "first activity"},
            )
            if sample:
                report.samples["customers"] = _sample(con, f"{_P}derived_customers", "customers", sample)
        elif not customers.from_activity and "customers" in relations:
            mapped = _map_input(con, "customers", customers, relations["customers"], problems)
            if mapped is not None:
                take("customers", mapped)

        for table in ("customers", "transactions"):
            if table in final and not _exec(con, f"SELECT count(*) FROM {final[table]}")[0][0]:
                problems.append(Problem(table=table, message=f"no {table} rows to import"))
        report.problems = problems
        if any(p.fatal for p in problems):
            if not collect:
                raise MappingError("; ".join(p.line() for p in problems if p.fatal) + ".")
            staged.discard()
            return staged

        raw_dir.mkdir(parents=True, exist_ok=True)
        for table in TABLES:
            target = raw_dir / f"{table}.parquet"
            if table in final:
                report.tables[table].rows_written = _write(con, final[table], table, target, staged.moves)
                report.tables[table].path = str(target)
            elif table == "events" and not append:
                # The mapping has no events: an empty events file replaces any earlier one.
                tmp = temp_beside(target)
                staged.moves.append((tmp, target))
                pq.write_table(ARROW_SCHEMAS["events"].empty_table(), tmp)
                report.tables["events"] = TableImport(
                    table="events",
                    source="none in the mapping: written empty",
                    kind="empty",
                    path=str(target),
                )
        return staged
    except BaseException:
        staged.discard()
        raise


def _read_sources(
    con: duckdb.DuckDBPyConnection, mapping: Mapping, timeout_s: int, problems: list[Problem] | None
) -> dict[str, SourceRelation]:
    relations: dict[str, SourceRelation] = {}
    for table, section in mapping.inputs().items():
        if section.source is None:
            continue
        try:
            relations[table] = _read_source(con, table, section, timeout_s)
        except MappingError as exc:
            if problems is None:
                raise
            problems.append(Problem(table=table, key=f"{table}.source", message=str(exc).rstrip(".")))
    return relations


def import_mapping(
    settings: Settings, mapping: Mapping, *, append: bool = False, mapping_name: str | None = None
) -> ImportReport:
    """Import the mapped inputs into ``settings.raw_dir`` (replacing the files, or ``append`` a batch).

    Rows the importer cannot type go to ``<quarantine_dir>/import_<table>.parquet`` (a stale file of an
    earlier import is removed). Raises :class:`MappingError` before anything is written when the mapping
    does not fit its sources. Validation is the caller's next step."""
    raw_dir, quarantine_dir = Path(settings.raw_dir), Path(settings.quarantine_dir)
    con = duckdb.connect(":memory:")
    try:
        relations = _read_sources(con, mapping, settings.postgres_connect_timeout_s, None)
        staged = stage_relations(
            con, mapping, relations, raw_dir, set_aside_dir=quarantine_dir, append=append
        )
        try:
            staged.commit()
        finally:
            staged.discard()
    finally:
        con.close()
    report = staged.report
    report.mapping = mapping_name
    for table in report.tables:
        if not report.tables[table].set_aside_path:
            (quarantine_dir / f"{SET_ASIDE_PREFIX}{table}.parquet").unlink(missing_ok=True)
    logger.debug("imported %s", {t: r.rows_written for t, r in report.tables.items()})
    return report


def preview_mapping(
    settings: Settings,
    mapping: Mapping,
    *,
    append: bool = False,
    sample: int = 5,
    now: datetime | None = None,
    mapping_name: str | None = None,
) -> ImportReport:
    """The dry run: map everything into a temporary folder, validate it there, and report sample rows and
    every problem (fatal ones, rows the import would set aside, rows validation would quarantine).
    Nothing is written into the workspace."""
    problems: list[Problem] = []
    con = duckdb.connect(":memory:")
    tmp_dir = Path(tempfile.mkdtemp(prefix="portrait-import-"))
    try:
        relations = _read_sources(con, mapping, settings.postgres_connect_timeout_s, problems)
        raw_dir = tmp_dir / "raw"
        if append:  # append to copies of the workspace's files
            raw_dir.mkdir()
            for table in TABLES:
                existing = Path(settings.raw_dir) / f"{table}.parquet"
                if existing.exists():
                    shutil.copy2(existing, raw_dir / existing.name)
        staged = stage_relations(
            con,
            mapping,
            relations,
            raw_dir,
            set_aside_dir=tmp_dir / "set_aside",
            append=append,
            sample=sample,
            problems=problems,
        )
        staged.commit()
        report = staged.report
        report.problems = problems
        if not report.fatal:
            report.problems += _validation_problems(raw_dir, tmp_dir, report, now)
    finally:
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
    report.dry_run = True
    report.mapping = mapping_name
    for t in report.tables.values():  # the paths were temporary
        t.path = t.set_aside_path = None
    return report


def _validation_problems(
    raw_dir: Path, tmp_dir: Path, report: ImportReport, now: datetime | None
) -> list[Problem]:
    """What validation would quarantine in the staged files (non-fatal problems), or why it would fail."""
    found: list[Problem] = []
    clean, quarantine = tmp_dir / "clean", tmp_dir / "quarantine"
    known: Path | None = None
    con = duckdb.connect(":memory:")
    try:
        for table in TABLES:
            source = raw_dir / f"{table}.parquet"
            if table not in report.tables or not source.exists():
                continue
            try:
                result = validate_table(
                    table,
                    source,
                    clean_path=clean / source.name,
                    quarantine_path=quarantine / source.name,
                    now=now,
                    known_customers=known if table != "customers" else None,
                    threads=1,
                )
            except ContractError as exc:
                found.append(Problem(table=table, message=f"validation would fail: {str(exc).rstrip('.')}"))
                if table == "customers":
                    break
                continue
            if table == "customers":
                known = clean / source.name
            shown = [
                c
                for c in ("customer_id", "order_id", "ts", "signup_ts", "event_type")
                if c in ARROW_SCHEMAS[table].names
            ]
            for reason, n in result.by_reason.items():
                rows = _exec(
                    con,
                    f"SELECT {', '.join(_q(c) for c in shown)} FROM read_parquet(?) WHERE reason = ? "
                    "ORDER BY source_row LIMIT 3",
                    [str(quarantine / source.name), reason],
                )
                found.append(
                    Problem(
                        table=table,
                        message=f"{reason}: validation would quarantine {_rows(n)}",
                        rows=n,
                        examples=[", ".join(f"{c}={v}" for c, v in zip(shown, r, strict=True)) for r in rows],
                        fatal=False,
                    )
                )
    finally:
        con.close()
    return found


__all__ = [
    "APPEND_KEYS",
    "ROW",
    "CustomersMapping",
    "EventsMapping",
    "ImportReport",
    "InputMapping",
    "Mapping",
    "MappingError",
    "PathSource",
    "Problem",
    "SourceRelation",
    "SqlSource",
    "Staged",
    "TableImport",
    "TransactionsMapping",
    "import_mapping",
    "load_mapping",
    "parse_mapping",
    "preview_mapping",
    "stage_relations",
    "with_source",
]

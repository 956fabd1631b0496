"""The ``identities`` input: its contract, normalisation (DuckDB SQL) and validation with quarantine.

One row is one **identity record**: what one source (web shop account, app install, store card, CRM
entry, ...) knows about one person. Columns (see :class:`IdentityRow`):

* ``record_id`` (required, unique): the record's id. It is also the ``customer_id`` by which the
  customers, transactions and events inputs refer to the record (see :mod:`features.identity`).
* ``source`` (required): where the record comes from.
* one column per configured identifier kind (``Settings.identity_kinds``; default ``email``, ``phone``,
  ``member_id``, ``account_id`` -- strong -- and ``device_id`` -- weak), each optional;
* optional fuzzy attributes ``name`` (full name, one string), ``birth_date`` (ISO date), ``postcode``.

Normalisation (the same SQL expressions normalise a looked-up value, so a lookup always agrees with the
stored values):

* e-mail: trimmed, lower-case, domain aliases mapped (``googlemail.com`` -> ``gmail.com``); for the
  dot-less domains (Gmail) dots and ``+tag`` removed from the user name. Not ``x@y.z``-shaped: cleared.
* phone: ``(0)`` and everything but digits removed; ``+`` or ``00`` starts an international number, a
  single leading ``0`` is the national trunk prefix (replaced by ``Settings.identity_phone_country_code``),
  a bare number of at most 10 digits is national too. Written ``+<digits>``; fewer than 8 or more than 15
  digits, or a calling code starting with 0: cleared.
* ``id``: trimmed (``id_lower``: and lower-cased); blank is missing.
* name: accents stripped, lower-case, punctuation other than ``-`` dropped, blanks collapsed; the first
  word is ``first_name``, the rest ``last_name``.
* birth date: a date between 1900-01-01 and the validation time, else cleared; postcode: upper-case,
  no blanks.
* With ``Settings.identity_hash_identifiers`` every identifier is stored as
  ``sha256(salt || ':' || kind || ':' || normalised value)`` (hex): raw identifiers never leave the raw
  input, and matching (and lookup) works on the hashes. The fuzzy attributes stay readable, because the
  probabilistic model compares them by similarity.

Validation: a row is **quarantined** (with the first failing reason of :data:`REASONS`) when it cannot be
used at all; a single unusable **value** is cleared and counted in ``cleared`` by reason
(:data:`CLEARED_REASONS`), the rest of the row is kept.

Reuse: a raw row unchanged since the previous validation (same salted MD5 of its contract columns) takes
its previous clean row instead of being normalised again, unless anything normalisation depends on
changed (see :func:`validate_identities`); the output is the same as a full validation's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from features.identity.config import IdentityConfig
from features.validate import ContractError
from portrait.files import atomic_path, publish, temp_beside, write_text_atomic

if TYPE_CHECKING:
    from portrait.settings import Settings

logger = logging.getLogger(__name__)

REASONS: tuple[tuple[str, str], ...] = (
    ("missing_record_id", "record_id is null or blank."),
    ("missing_source", "source is null or blank."),
    ("no_identifier", "Neither an identifier nor a name is left after normalisation: nothing to link on."),
    ("duplicate", "Exact duplicate of an earlier row (all contract columns equal); the first is kept."),
    ("duplicate_record_id", "A second, different row for a record_id already accepted; the first is kept."),
)
CLEARED_REASONS: tuple[tuple[str, str], ...] = (
    ("invalid_email", "An e-mail kind's value is not shaped like user@domain.tld: the value is cleared."),
    (
        "invalid_phone",
        "A phone kind's value has fewer than 8 or more than 15 digits once normalised: cleared.",
    ),
    (
        "invalid_birth_date",
        "birth_date is not a date, or is before 1900 or after the validation time: cleared.",
    ),
)
QUARANTINE_EXTRA_COLUMNS: tuple[str, ...] = ("reason", "source_file", "source_row")


class IdentityRow(BaseModel):
    """One identity record (the default identifier kinds; configured kinds add or replace columns)."""

    record_id: str = Field(
        min_length=1, description="Unique id of the record; also its customer_id elsewhere."
    )
    source: str = Field(min_length=1, description="System the record comes from (web, app, store, crm, ...).")
    email: str | None = Field(None, description="E-mail address (strong).")
    phone: str | None = Field(None, description="Phone number in any usual format (strong).")
    member_id: str | None = Field(None, description="Loyalty member id (strong).")
    account_id: str | None = Field(None, description="External account id, e.g. a social login (strong).")
    device_id: str | None = Field(None, description="Device or cookie id (weak: devices are shared).")
    name: str | None = Field(None, description="Full name, first name first.")
    birth_date: str | None = Field(None, description="Date of birth (ISO 8601 date).")
    postcode: str | None = Field(None, description="Postal code.")


def clean_schema(config: IdentityConfig) -> pa.Schema:
    """Columns of ``data/clean/identities.parquet``: normalised (and possibly hashed) values."""
    return pa.schema(
        [
            ("record_id", pa.string()),
            ("source", pa.string()),
            ("first_name", pa.string()),
            ("last_name", pa.string()),
            ("birth_date", pa.date32()),
            ("postcode", pa.string()),
            *((kind, pa.string()) for kind in config.kinds),
        ]
    )


# ---- SQL expressions ----------------------------------------------------------------------------------


class Rows(list):
    """A fully fetched result (DuckDB wants every result consumed before the next statement)."""

    def fetchone(self) -> tuple | None:
        return self[0] if self else None

    def fetchall(self) -> list[tuple]:
        return list(self)


def run(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any] | None = None) -> Rows:
    """Run one statement and fetch its whole result."""
    return Rows(con.execute(query, params or {}).fetchall())


def lit(value: str) -> str:
    """An SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def qi(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _text(column: str) -> str:
    return f"nullif(trim(CAST({column} AS VARCHAR)), '')"


def _let(value: str, name: str, body: str) -> str:
    """``body`` with ``name`` bound to ``value`` (evaluated once; keeps the expression small, which keeps
    a one-value lookup's planning in milliseconds)."""
    return f"list_transform([{value}], lambda {name}: {body})[1]"


def email_sql(column: str, config: IdentityConfig) -> str:
    """The normalised e-mail address of ``column`` (NULL when missing or not an address)."""
    domain = "split_part(__e, '@', 2)"
    for alias, target in config.email_domain_aliases:
        domain = f"(CASE WHEN {domain} = {lit(alias.lower())} THEN {lit(target.lower())} ELSE {domain} END)"
    local = "split_part(__e, '@', 1)"
    if config.email_dotless_domains:
        dotless = ", ".join(lit(d.lower()) for d in config.email_dotless_domains)
        local = f"(CASE WHEN __d IN ({dotless}) THEN replace(split_part({local}, '+', 1), '.', '') ELSE {local} END)"
    address = _let(domain, "__d", _let(local, "__l", "CASE WHEN __l <> '' THEN __l || '@' || __d END"))
    shaped = "regexp_full_match(__e, '[^@\\s]+@[^@\\s]+\\.[^@\\s]+')"
    return _let(f"lower({_text(column)})", "__e", f"CASE WHEN {shaped} THEN {address} END")


def phone_sql(column: str, config: IdentityConfig) -> str:
    """The phone number of ``column`` as ``+<calling code><number>`` (NULL when missing or implausible)."""
    cc = lit(config.phone_country_code)
    number = (
        "CASE WHEN starts_with(__r, '+') THEN __d WHEN starts_with(__d, '00') THEN substr(__d, 3) "
        f"WHEN starts_with(__d, '0') THEN {cc} || substr(__d, 2) WHEN length(__d) <= 10 THEN {cc} || __d ELSE __d END"
    )
    checked = "CASE WHEN length(__n) BETWEEN 8 AND 15 AND NOT starts_with(__n, '0') THEN '+' || __n END"
    return _let(
        f"replace({_text(column)}, '(0)', '')",
        "__r",
        _let("regexp_replace(__r, '[^0-9]', '', 'g')", "__d", _let(number, "__n", checked)),
    )


def kind_sql(kind: str, column: str, config: IdentityConfig) -> str:
    """The normalised value of identifier ``kind`` in ``column`` (before hashing)."""
    fmt = config.format_of(kind)
    if fmt == "email":
        return email_sql(column, config)
    if fmt == "phone":
        return phone_sql(column, config)
    if fmt == "id_lower":
        return f"lower({_text(column)})"
    return _text(column)


def hashed_sql(kind: str, expression: str, config: IdentityConfig) -> str:
    """``expression`` as stored: itself, or its salted SHA-256 when hashing is on."""
    if config.hash_salt is None:
        return expression
    prefix = lit(f"{config.hash_salt}:{kind}:")
    return f"sha256({prefix} || {expression})"


def stored_sql(kind: str, column: str, config: IdentityConfig) -> str:
    """Normalised, then hashed when configured: how identifier values are stored and looked up."""
    return hashed_sql(kind, kind_sql(kind, column, config), config)


def name_sql(column: str) -> str:
    """The normalised full name (NULL when blank)."""
    folded = f"lower(strip_accents(CAST({column} AS VARCHAR)))"
    kept = f"regexp_replace({folded}, '[^a-z0-9\\- ]', '', 'g')"
    return f"nullif(trim(regexp_replace({kept}, '\\s+', ' ', 'g')), '')"


def first_name_sql(name: str) -> str:
    """The first word of a normalised name (:func:`name_sql`)."""
    return f"nullif(split_part({name}, ' ', 1), '')"


def last_name_sql(name: str) -> str:
    """The words after the first of a normalised name (:func:`name_sql`), NULL when there are none."""
    return f"CASE WHEN strpos({name}, ' ') > 0 THEN nullif(substr({name}, strpos({name}, ' ') + 1), '') END"


def birth_date_sql(column: str, now: datetime) -> str:
    """A plausible date of birth, else NULL."""
    as_date = f"TRY_CAST(TRY_CAST({column} AS VARCHAR) AS DATE)"
    return (
        f"(CASE WHEN {as_date} >= DATE '1900-01-01' AND {as_date} <= DATE {lit(now.date().isoformat())} "
        f"THEN {as_date} END)"
    )


def postcode_sql(column: str) -> str:
    return f"nullif(upper(regexp_replace(CAST({column} AS VARCHAR), '\\s+', '', 'g')), '')"


def normalise_value(
    kind: str, value: str | None, config: IdentityConfig, *, hashed: bool = True
) -> str | None:
    """One identifier value normalised (and hashed when configured) exactly as stored; None if unusable.

    ASCII values take a pure-Python path (microseconds) that mirrors the SQL expressions (a test checks
    they agree); anything else goes through DuckDB with the very expression that normalised the data.
    """
    if value is None:
        return None
    if value.isascii():
        normalised = _normalise_ascii(kind, value, config)
        if normalised is None or not hashed or config.hash_salt is None:
            return normalised
        return hashlib.sha256(f"{config.hash_salt}:{kind}:{normalised}".encode()).hexdigest()
    with duckdb.connect() as con:
        expression = stored_sql(kind, "v", config) if hashed else kind_sql(kind, "v", config)
        row = run(con, f"SELECT {expression} FROM (SELECT CAST($v AS VARCHAR) AS v)", {"v": value}).fetchone()
    return row[0] if row else None


_EMAIL_SHAPE = re.compile(r"[^@\t\n\f\r ]+@[^@\t\n\f\r ]+\.[^@\t\n\f\r ]+")  # RE2's \s, as in the SQL
_NOT_DIGIT = re.compile(r"[^0-9]")


def _normalise_ascii(kind: str, value: str, config: IdentityConfig) -> str | None:
    """:func:`kind_sql` for an ASCII value, in Python (DuckDB's ``trim`` removes spaces only)."""
    text = value.strip(" ") or None
    if text is None:
        return None
    fmt = config.format_of(kind)
    if fmt == "id":
        return text
    if fmt == "id_lower":
        return text.lower()
    if fmt == "email":
        e = text.lower()
        if not _EMAIL_SHAPE.fullmatch(e):
            return None
        local, domain = e.split("@")[0], e.split("@")[1]
        for alias, target in config.email_domain_aliases:
            domain = target.lower() if domain == alias.lower() else domain
        if domain in {d.lower() for d in config.email_dotless_domains}:
            local = local.split("+")[0].replace(".", "")
        return f"{local}@{domain}" if local else None
    raw = text.replace("(0)", "")
    digits = _NOT_DIGIT.sub("", raw)
    cc = config.phone_country_code
    if raw.startswith("+"):
        number = digits
    elif digits.startswith("00"):
        number = digits[2:]
    elif digits.startswith("0"):
        number = cc + digits[1:]
    elif len(digits) <= 10:
        number = cc + digits
    else:
        number = digits
    return f"+{number}" if 8 <= len(number) <= 15 and not number.startswith("0") else None


# ---- validation -------------------------------------------------------------------------------------------


class IdentityValidation(BaseModel):
    """Outcome of validating the identities input."""

    source: str
    rows_read: int
    accepted: int
    quarantined: int
    by_reason: dict[str, int] = Field(default_factory=dict, description="Quarantined rows per reason.")
    cleared: dict[str, int] = Field(default_factory=dict, description="Values cleared (row kept) per reason.")
    ignored_columns: list[str] = Field(
        default_factory=list, description="Input columns that are not in the contract."
    )
    hashed: bool = False
    reused: int = Field(
        0, description="Rows not normalised again: unchanged since the previous validation, clean row reused."
    )
    clean_path: str | None = None
    quarantine_path: str | None = None
    seconds: float = 0.0


def raw_identities_path(settings: Settings) -> Path | None:
    """The identities input in ``data/raw`` (Parquet file or folder, or CSV), or None when absent."""
    for name in ("identities.parquet", "identities", "identities.csv"):
        path = settings.raw_dir / name
        if path.exists():
            return path
    return None


def _reader(source: Path) -> str:
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise ContractError(f"identities input {source} is a directory without any .parquet file.")
        listed = "[" + ", ".join(lit(str(f)) for f in files) + "]"
        return f"read_parquet({listed}, union_by_name=true, filename=true, file_row_number=true)"
    if source.suffix.lower() in (".csv", ".tsv"):
        delim = "\t" if source.suffix.lower() == ".tsv" else ","
        return (
            f"(SELECT *, {lit(str(source))} AS filename, row_number() OVER () - 1 AS file_row_number FROM "
            f"read_csv({lit(str(source))}, header=true, all_varchar=true, delim={lit(delim)}, strict_mode=true))"
        )
    return f"read_parquet({lit(str(source))}, filename=true, file_row_number=true)"


NORMALISER_VERSION = 2
"""Version of the code that turns a raw row into its clean row (the SQL above and the validation below).
Bump it with any change to either: the next validation then normalises every row again instead of reusing
the previous run's clean rows (see :func:`validate_identities`)."""
_REUSE_FORMAT = 1
_LOW64 = "18446744073709551615::UHUGEINT"


def reuse_paths(clean_path: Path) -> tuple[Path, Path]:
    """The two files beside ``clean_path`` that let the next validation reuse its rows: the row keys
    (Parquet) and their signature (JSON). Hidden and without a ``.parquet`` suffix, so that nothing takes
    them for a table of ``data/clean``."""
    return (
        clean_path.with_name(f".{clean_path.stem}.reuse"),
        clean_path.with_name(f".{clean_path.stem}.reuse.json"),
    )


def _reuse_signature(config: IdentityConfig) -> dict[str, Any]:
    """What a clean row depends on besides its raw row and the validation date: a change means a full run."""
    return json.loads(
        json.dumps(
            {
                "format": _REUSE_FORMAT,
                "normaliser": NORMALISER_VERSION,
                "duckdb": duckdb.__version__,
                "config": config.normalisation_signature(),
            }
        )
    )


def _stamp(path: Path) -> dict[str, int]:
    status = path.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def _previous_salt(clean_path: Path, config: IdentityConfig) -> str | None:
    """The row-key salt of the previous validation when its clean rows can be reused, else None (why is logged)."""
    rows_path, signature_path = reuse_paths(clean_path)
    try:
        saved = json.loads(signature_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        logger.info(
            "identities: no reusable previous validation beside %s: every row is normalised", clean_path
        )
        return None
    except (OSError, ValueError) as exc:
        logger.warning("identities: %s is unreadable (%s): every row is normalised", signature_path, exc)
        return None
    why = None
    if not isinstance(saved, dict) or not isinstance(saved.get("salt"), str):
        why = "it is not a signature"
    elif saved.get("signature") != _reuse_signature(config):
        why = "the identity settings or the normalisation code changed"
    else:
        try:
            if saved.get("clean") != _stamp(clean_path) or saved.get("rows") != _stamp(rows_path):
                why = f"{clean_path.name} changed since"
        except OSError:
            why = f"{clean_path.name} or its row keys are missing"
    if why is not None:
        logger.info("identities: previous clean rows not reused (%s): every row is normalised", why)
        return None
    return saved["salt"]


def _row_key_sql(texts: list[str], prefix: str) -> str:
    """A row's key: MD5 (128 bits, as UHUGEINT) of its contract columns' text, salted.

    The text is a JSON list (unambiguous: NULL is not '' and no separator can occur inside a value) led by
    the salt, so the key of a row of personal data cannot be recomputed without the salt."""
    return f"md5_number(to_json([{lit(prefix)}, {', '.join(texts)}]))"


def _normalised_rows(
    con: duckdb.DuckDBPyConnection,
    config: IdentityConfig,
    *,
    raw: str,
    key: str,
    now: datetime,
    previous: tuple[Path, Path] | None,
) -> tuple[str, int, int]:
    """Normalise and validate the rows of ``raw`` (the contract columns as text, with ``__file`` and
    ``__row``; ``key`` is the row key expression over them).

    Creates the temporary tables ``kept`` (rows whose clean row is reused: its position in the previous
    clean output; ``previous`` = (that output, its row keys), None for a full run), ``fresh`` (the other
    rows, normalised here) and ``bad`` (quarantined rows and their reasons). Returns the query of the
    accepted rows ordered by record id (the clean columns, the row key as ``k_hi`` / ``k_lo`` and the
    ``has_*`` flags), the rows read and the rows reused.
    """
    flagged = (*config.kinds, "birth_date")
    fresh = {
        "record_id": _text(qi("record_id")),
        "source": _text(qi("source")),
        **{f"n_{k}": kind_sql(k, qi(k), config) for k in config.kinds},
        "name": name_sql(qi("name")),
        "birth_date": birth_date_sql(qi("birth_date"), now),
        "postcode": postcode_sql(qi("postcode")),
        **{f"has_{c}": f"{_text(qi(c))} IS NOT NULL" for c in flagged},
    }
    normalised = ", ".join(f"{e} AS {qi(n)}" for n, e in fresh.items())
    clean, keys = previous or (None, None)
    if keys is None:
        rows = raw
    else:
        # The raw rows whose key is among the previous clean rows' keys: that row is their clean row.
        run(
            con,
            "CREATE TEMP TABLE kept AS SELECT s.__file, s.__row, s.__k, p.pos AS __pos, "
            + ", ".join(f"p.{qi('has_' + c)}" for c in flagged)
            + f" FROM (SELECT __file, __row, {key} AS __k FROM {raw}) s JOIN (SELECT "
            "((k_hi::UHUGEINT << 64) | k_lo::UHUGEINT) AS __k, pos, "
            + ", ".join(qi("has_" + c) for c in flagged)
            + f" FROM read_parquet({lit(str(keys))})) p USING (__k)",
        )
        rows = f"(SELECT * FROM {raw} ANTI JOIN kept USING (__file, __row))"
    run(
        con,
        "CREATE TEMP TABLE fresh AS SELECT __file, __row, __k, record_id, source, "
        f"{first_name_sql('name')} AS first_name, {last_name_sql('name')} AS last_name, birth_date, postcode, "
        + ", ".join(f"{hashed_sql(k, qi('n_' + k), config)} AS {qi('v_' + k)}" for k in config.kinds)
        + ", "
        + ", ".join(qi("has_" + c) for c in flagged)
        + f" FROM (SELECT __file, __row, {key} AS __k, {normalised} FROM {rows})",
    )
    previous_rows = f"read_parquet({lit(str(clean))}, file_row_number=true)" if clean is not None else ""
    # A row is quarantined for its own values (a reused row was accepted: its values pass), else as an exact
    # duplicate (same key) or a second row of a record id (both need a record id shared by several rows).
    any_id = " OR ".join(f"{qi('v_' + k)} IS NOT NULL" for k in config.kinds)
    local = (
        "SELECT __file, __row, __k, record_id, CASE WHEN record_id IS NULL THEN 'missing_record_id' "
        "WHEN source IS NULL THEN 'missing_source' "
        f"WHEN NOT ({any_id}) AND first_name IS NULL THEN 'no_identifier' END AS reason FROM fresh"
    )
    if clean is not None:
        local += (
            " UNION ALL SELECT kept.__file, kept.__row, kept.__k, c.record_id, NULL AS reason FROM kept "
            f"JOIN {previous_rows} c ON c.file_row_number = kept.__pos"
        )
    run(
        con,
        f"CREATE TEMP TABLE bad AS WITH r AS ({local}), "
        "ok AS (SELECT __file, __row, __k, record_id FROM r WHERE reason IS NULL), "
        "shared AS (SELECT * FROM ok WHERE record_id IN "
        "(SELECT record_id FROM ok GROUP BY record_id HAVING count(*) > 1)), "
        "late AS (SELECT __file, __row, CASE "
        "WHEN row_number() OVER (PARTITION BY __k ORDER BY __file, __row) > 1 THEN 'duplicate' "
        "WHEN row_number() OVER (PARTITION BY record_id ORDER BY __file, __row) > 1 THEN 'duplicate_record_id' "
        "END AS reason FROM shared) "
        "SELECT __file, __row, reason FROM r WHERE reason IS NOT NULL "
        "UNION ALL SELECT __file, __row, reason FROM late WHERE reason IS NOT NULL",
    )
    key_split = f"(__k >> 64)::UBIGINT AS k_hi, (__k & {_LOW64})::UBIGINT AS k_lo"
    flags = ", ".join(qi("has_" + c) for c in flagged)
    accepted = (
        "SELECT record_id, source, first_name, last_name, birth_date, postcode, "
        + ", ".join(f"{qi('v_' + k)} AS {qi(k)}" for k in config.kinds)
        + f", {key_split}, {flags} FROM fresh ANTI JOIN bad USING (__file, __row)"
    )
    if clean is not None:
        # The previous birth date was valid at the previous validation date; the bound moves with ``now``.
        accepted += (
            " UNION ALL SELECT c.record_id, c.source, c.first_name, c.last_name, CASE WHEN c.birth_date <= "
            f"DATE {lit(now.date().isoformat())} THEN c.birth_date END, c.postcode, "
            + ", ".join(f"c.{qi(k)}" for k in config.kinds)
            + f", {key_split}, {flags} FROM (SELECT * FROM kept ANTI JOIN bad USING (__file, __row)) k "
            f"JOIN {previous_rows} c ON c.file_row_number = k.__pos"
        )
    counts = "SELECT (SELECT count(*) FROM fresh), " + (
        "0" if clean is None else "(SELECT count(*) FROM kept)"
    )
    rows_fresh, reused = run(con, counts).fetchall()[0]
    return f"SELECT * FROM ({accepted}) ORDER BY record_id", int(rows_fresh) + int(reused), int(reused)


def validate_identities(
    source: Path,
    config: IdentityConfig,
    *,
    clean_path: Path,
    quarantine_path: Path,
    now: datetime | None = None,
    threads: int | None = None,
    reuse: bool = True,
) -> IdentityValidation:
    """Validate and normalise the identities input into ``clean_path`` (see the module doc).

    **Reuse.** A raw row that is unchanged since the previous validation into ``clean_path`` is not
    normalised again: its clean row is taken from the previous output. Rows are matched by a salted MD5 of
    their contract columns (:func:`_row_key_sql`), kept with each clean row's position beside the output
    (:func:`reuse_paths`) with a signature of what normalisation depends on (the identity settings that
    shape a stored value, :data:`NORMALISER_VERSION`, DuckDB's version) and of the output files; any
    mismatch, or ``reuse=False``, normalises every row. Whatever depends on the other rows (duplicates,
    quarantine, counts) or on ``now`` (the birth date bound) is computed again on every run, so the output
    is the one a full validation writes. Outputs are written to temporary files and moved into place, the
    signature last, so an interrupted run leaves the previous output (and a run that reuses nothing next).

    Raises :class:`features.validate.ContractError` (one sentence) for an unusable input: missing, not
    readable, without ``record_id`` / ``source`` columns, or without a usable row.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    began = time.perf_counter()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if not source.exists():
        raise ContractError(f"identities input {source} does not exist.")
    rows_path, signature_path = reuse_paths(clean_path)
    salt = _previous_salt(clean_path, config) if reuse else None
    previous = (clean_path, rows_path) if salt is not None else None
    salt = salt or secrets.token_hex(16)
    with duckdb.connect() as con:
        run(con, "SET TimeZone = 'UTC'")
        if threads or config.threads:
            run(con, f"SET threads = {int(threads or config.threads or 1)}")
        try:
            run(con, f"CREATE TEMP VIEW src AS SELECT * FROM {_reader(source)}")
            columns = [r[0] for r in run(con, "DESCRIBE SELECT * FROM src").fetchall()]
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ContractError(f"identities input {source} cannot be read ({first}).") from exc
        data_columns = [c for c in columns if c not in ("filename", "file_row_number")]
        missing = [c for c in ("record_id", "source") if c not in data_columns]
        if missing:
            raise ContractError(
                f"identities input {source} is missing required column(s) {', '.join(missing)} "
                f"(found: {', '.join(data_columns) or 'none'})."
            )
        contract = ["record_id", "source", *config.kinds, "name", "birth_date", "postcode"]
        ignored = [c for c in data_columns if c not in contract]
        # Every contract column as text (a missing one is NULL): all that normalisation and the row key see.
        texts = ", ".join(
            f"CAST({qi(c) if c in data_columns else 'NULL'} AS VARCHAR) AS {qi(c)}" for c in contract
        )
        prefix = f"{config.hash_salt}:{salt}" if config.hash_salt is not None else salt
        raw = f"(SELECT filename AS __file, file_row_number AS __row, {texts} FROM src)"
        key = _row_key_sql([qi(c) for c in contract], prefix)
        while True:
            try:
                accepted_sql, rows_read, reused = _normalised_rows(
                    con, config, raw=raw, key=key, now=now, previous=previous
                )
                if rows_read == 0:
                    raise ContractError(f"identities input {source} has no data rows.")
                selected = con.sql(accepted_sql).to_arrow_table()
                break
            except duckdb.Error as exc:
                if previous is None:
                    raise
                logger.warning(
                    "identities: previous clean rows not reused (%s): every row is normalised", exc
                )
                for table in ("kept", "fresh", "bad"):
                    run(con, f"DROP TABLE IF EXISTS {table}")
                previous = None
        flagged = (*config.kinds, "birth_date")
        cleared: dict[str, int] = {}
        for reason, fmt in (("invalid_email", "email"), ("invalid_phone", "phone")):
            for kind in (k for k in config.kinds if config.format_of(k) == fmt):
                lost = pc.and_(selected["has_" + kind], pc.is_null(selected[kind]))
                cleared[reason] = cleared.get(reason, 0) + int(pc.sum(lost).as_py() or 0)
        undated = pc.and_(selected["has_birth_date"], pc.is_null(selected["birth_date"]))
        cleared["invalid_birth_date"] = int(pc.sum(undated).as_py() or 0)
        cleared = {k: v for k, v in cleared.items() if v}

        schema = clean_schema(config)
        tmp_clean, tmp_quarantine = temp_beside(clean_path), temp_beside(quarantine_path)
        tmp_rows = temp_beside(rows_path)
        try:
            accepted = selected.num_rows
            pq.write_table(selected.select(schema.names).cast(schema), tmp_clean)
            # The row keys of the clean rows, by position. A cleared birth date may become valid later (it
            # depends on the validation date): such a row is normalised again next time.
            keys = pa.table(
                {
                    "k_hi": selected["k_hi"],
                    "k_lo": selected["k_lo"],
                    "pos": pa.array(np.arange(accepted, dtype=np.int64)),
                    **{"has_" + c: selected["has_" + c] for c in flagged},
                }
            )
            pq.write_table(keys.filter(pc.invert(undated)), tmp_rows)
            del selected, keys
            raw_cols = ", ".join(
                f"CAST(s.{qi(c)} AS VARCHAR) AS {qi('raw_' + c if c in QUARANTINE_EXTRA_COLUMNS else c)}"
                for c in data_columns
            )
            quarantine = con.sql(
                f"SELECT {raw_cols}, b.reason, s.filename AS source_file, CAST(s.file_row_number AS BIGINT) AS source_row "
                "FROM src s JOIN bad b ON b.__file = s.filename AND b.__row = s.file_row_number "
                "ORDER BY source_file, source_row"
            ).to_arrow_table()
            pq.write_table(quarantine, tmp_quarantine)
            by_reason_raw = dict(run(con, "SELECT reason, count(*) FROM bad GROUP BY reason").fetchall())
            quarantined = quarantine.num_rows
            if accepted + quarantined != rows_read:
                raise RuntimeError(
                    f"identity validation of {source} does not add up: read {rows_read}, accepted {accepted}, "
                    f"quarantined {quarantined}; nothing was written"
                )
            if not accepted:
                detail = ", ".join(f"{r}: {n:,}" for r, n in by_reason_raw.items())
                raise ContractError(
                    f"identities input {source} has no usable row: all {rows_read:,} rows failed ({detail})."
                )
            # The signature goes first and comes back last: until it does, the next run reuses nothing.
            signature_path.unlink(missing_ok=True)
            publish([(tmp_clean, clean_path), (tmp_quarantine, quarantine_path), (tmp_rows, rows_path)])
            saved = {
                "signature": _reuse_signature(config),
                "salt": salt,
                "clean": _stamp(clean_path),
                "rows": _stamp(rows_path),
            }
            write_text_atomic(signature_path, json.dumps(saved, indent=2))
        finally:
            tmp_clean.unlink(missing_ok=True)
            tmp_quarantine.unlink(missing_ok=True)
            tmp_rows.unlink(missing_ok=True)
    by_reason = {r: int(by_reason_raw[r]) for r, _ in REASONS if by_reason_raw.get(r)}
    report = IdentityValidation(
        source=str(source),
        rows_read=int(rows_read),
        accepted=int(accepted),
        quarantined=int(quarantined),
        by_reason=by_reason,
        cleared=cleared,
        ignored_columns=ignored,
        hashed=config.hash_salt is not None,
        reused=int(reused),
        clean_path=str(clean_path),
        quarantine_path=str(quarantine_path),
        seconds=round(time.perf_counter() - began, 3),
    )
    logger.info(
        "identities: %d rows (%d reused), %d accepted, %d quarantined %s, cleared %s (%.1f s)",
        rows_read, reused, accepted, quarantined, by_reason or "", cleared or "-", report.seconds,
    )  # fmt: skip
    return report


def write_json(path: Path, model: BaseModel) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(model.model_dump_json(indent=2), encoding="utf-8")

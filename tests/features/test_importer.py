"""The importer: mapping files, sources (CSV, Parquet, PostgreSQL), derivations, dry runs and appends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract import ARROW_SCHEMAS, REQUIRED_COLUMNS, ROW_MODELS
from features.importer import (
    APPEND_KEYS,
    MappingError,
    import_mapping,
    load_mapping,
    parse_mapping,
    preview_mapping,
    with_source,
)
from features.pipeline import compute_features
from features.tables import snapshot_path
from features.validate import validate_workspace
from portrait.settings import Settings
from tests.conftest import ci_required

NOW = datetime(2025, 1, 1, tzinfo=UTC)

ORDERS = """customer,date
c1,01/02/2024
c1,15/03/2024
c2,02/02/2024
c3,20/07/2024
"""

MAPPING = """
customers:
  from_activity: true
transactions:
  source: orders.csv
  columns: {customer_id: customer, ts: date}
  timestamp_format: "%d/%m/%Y"
  timezone: Europe/Berlin
  constants: {amount: 1, quantity: 1, is_return: false, category: all}
  derive: {order_id: "{customer_id}-{ts:%Y%m%d}"}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rows(path: Path, order: str = "") -> list[dict]:
    query = f"SELECT * FROM read_parquet('{path}')" + (f" ORDER BY {order}" if order else "")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    cursor = con.execute(query)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def utc(day: str, hour: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    write(tmp_path / "src" / "orders.csv", ORDERS)
    return write(tmp_path / "src" / "mapping.yaml", MAPPING)


# ------------------------------------------------------------------------------------ mapping file
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("customers: {from_activity: true}\ntransactionz: {}\n", "transactionz: unknown key (expected one of: customers, transactions, events)"),
        (MAPPING.replace("customer_id: customer,", "customer_idd: customer,"), "transactions.columns: 'customer_idd' is not a transactions contract column"),
        (MAPPING.replace("is_return: false", "is_return: 'no'"), "transactions: constants.is_return: must be true or false (got 'no')"),
        (MAPPING.replace("amount: 1,", "amount: '1',"), "constants.amount: must be a number"),
        (MAPPING.replace("Europe/Berlin", "Europe/Bärlin"), "transactions.timezone: unknown time zone 'Europe/Bärlin'"),
        (MAPPING.replace('"%d/%m/%Y"', "dd/mm/yyyy"), "transactions.timestamp_format: 'dd/mm/yyyy' is not a strptime format"),
        (MAPPING.replace("from_activity: true", "constants: {region: north}"), "customers: no source: give a source, or from_activity: true"),
        (MAPPING.replace("{customer_id}-{ts", "{customer}-{ts"), "transactions: derive.order_id: {customer} must name a contract column"),
        (MAPPING.replace("{ts:%Y%m%d}", "{ts:%Y%m%d"), "transactions: derive.order_id: '{customer_id}-{ts:%Y%m%d' is not a template"),
        (MAPPING.replace("constants: {amount: 1,", "expressions: {customer_id: upper(customer)}\n  constants: {amount: 1,"), "customer_id is given twice (columns.customer_id and expressions.customer_id)"),
        (MAPPING.replace("source: orders.csv", "source: 42"), "transactions.source: must be a path, {path: ...} or {sql: ..., url: ...}"),
        (MAPPING.replace("source: orders.csv", "source: {sql: SELECT 1}"), "transactions.source.url: Field required"),
        (MAPPING.replace("source: orders.csv", "source: {path: o.csv, sep: ';'}"), "transactions.source.sep: unknown key (expected one of: path, format, delimiter)"),
        (MAPPING.replace("  timezone:", "  colums: {}\n  timezone:"), "transactions.colums: unknown key (expected one of: source, columns, constants"),
        ("transactions: {source: o.csv}\n", "customers: missing section (give a source, or from_activity: true)"),
        ("customers: {from_activity: true, source: c.csv}\ntransactions: {source: o.csv}\n", "customers: give either a source or from_activity: true, not both"),
        ('transactions:\n  timestamp_format: %Y\n', "not valid YAML (found character '%' that cannot start any token at line 2)"),
        ("- a\n- b\n", "expected sections customers, transactions (and events), got list"),
    ],
)  # fmt: skip
def test_mapping_errors_are_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "mapping.yaml", text)
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message and message.startswith(str(path))


def test_toml_mapping_is_the_same_mapping(tmp_path: Path, example: Path) -> None:
    toml = write(
        tmp_path / "src" / "mapping.toml",
        """
[customers]
from_activity = true

[transactions]
source = "orders.csv"
columns = { customer_id = "customer", ts = "date" }
timestamp_format = "%d/%m/%Y"
timezone = "Europe/Berlin"
constants = { amount = 1, quantity = 1, is_return = false, category = "all" }
derive = { order_id = "{customer_id}-{ts:%Y%m%d}" }
""",
    )
    assert load_mapping(toml) == load_mapping(example)
    assert load_mapping(example).transactions.source.path == str(tmp_path / "src" / "orders.csv")
    with pytest.raises(MappingError, match=r"mapping.json must be YAML \(.yaml, .yml\) or TOML"):
        load_mapping(write(tmp_path / "mapping.json", "{}"))
    with pytest.raises(MappingError, match="not valid TOML"):
        load_mapping(write(tmp_path / "bad.toml", "[customers\n"))


def test_printed_schema_requires_what_the_validator_requires() -> None:
    """`portrait data schema` (the row models' JSON Schema) and validation agree on the required columns;
    is_return is required, and a source without returns gives it as a mapping constant."""
    for table, model in ROW_MODELS.items():
        assert set(model.model_json_schema()["required"]) == set(REQUIRED_COLUMNS[table]), table
    assert "is_return" in ROW_MODELS["transactions"].model_json_schema()["required"]


# ------------------------------------------------------------------------------------ CSV and derivations
def test_csv_with_derivations(workspace: Settings, example: Path) -> None:
    report = import_mapping(workspace, load_mapping(example))
    assert {t: r.rows_written for t, r in report.tables.items()} == {
        "transactions": 4,
        "customers": 3,
        "events": 0,
    }
    raw = workspace.raw_dir
    for table in ("customers", "transactions", "events"):
        assert pq.read_schema(raw / f"{table}.parquet").equals(ARROW_SCHEMAS[table])
    tx = rows(raw / "transactions.parquet")
    # Berlin midnight is 23:00 UTC the day before in winter, 22:00 in summer; the order id uses the local day.
    assert tx[0] == {
        "order_id": "c1-20240201",
        "customer_id": "c1",
        "ts": utc("2024-01-31", 23),
        "amount": 1.0,
        "quantity": 1,
        "category": "all",
        "is_return": False,
    }
    assert [(r["order_id"], r["ts"]) for r in tx[2:]] == [
        ("c2-20240202", utc("2024-02-01", 23)),
        ("c3-20240720", utc("2024-07-19", 22)),
    ]
    # Customers derived from the transactions: signup = first activity.
    assert [(r["customer_id"], r["signup_ts"]) for r in rows(raw / "customers.parquet")] == [
        ("c1", utc("2024-01-31", 23)),
        ("c2", utc("2024-02-01", 23)),
        ("c3", utc("2024-07-19", 22)),
    ]
    validation = validate_workspace(workspace, now=NOW)
    assert validation.transactions.accepted == 4 and validation.customers.accepted == 3


def test_unreadable_values_are_set_aside_with_a_reason(workspace: Settings, tmp_path: Path) -> None:
    write(
        tmp_path / "tx.csv",
        "order,customer,when,value,n,returned\n"
        "o1,c1,2024-03-01 10:00,12.5,2,no\n"
        "o2,c1,31/02/2024,3,1,no\n"  # not ISO-8601
        "o3,c1,2024-03-02T10:00:00+02:00,abc,1,no\n"  # an offset wins over the zone; amount unreadable
        "o4,c1,2024-03-03,5,1.5,no\n"  # quantity not whole
        "o5,c1,2024-03-04,-5,-1,maybe\n"
        "o6,c1,,5,1,no\n",  # a missing timestamp is left to validation
    )
    mapping = parse_mapping(
        {
            "customers": {"from_activity": True},
            "transactions": {
                "source": str(tmp_path / "tx.csv"),
                "columns": {
                    "order_id": "order",
                    "customer_id": "customer",
                    "ts": "when",
                    "amount": "value",
                    "quantity": "n",
                    "is_return": "returned",
                },
                "timezone": "America/New_York",
            },
        }
    )
    report = import_mapping(workspace, mapping)
    tx = report.tables["transactions"]
    assert tx.set_aside == {
        "unparseable_amount": 1,
        "unparseable_is_return": 1,
        "unparseable_quantity": 1,
        "unparseable_timestamp": 1,
    }
    assert tx.rows_read == 6 and tx.rows_written == 2
    set_aside = rows(Path(tx.set_aside_path), order="source_row")
    assert [(r["order"], r["reason"], r["source_row"]) for r in set_aside] == [
        ("o2", "unparseable_timestamp", 1),
        ("o3", "unparseable_amount", 2),
        ("o4", "unparseable_quantity", 3),
        ("o5", "unparseable_is_return", 4),
    ]
    kept = rows(workspace.raw_dir / "transactions.parquet")
    assert [(r["order_id"], r["ts"]) for r in kept] == [("o1", utc("2024-03-01", 15)), ("o6", None)]
    assert validate_workspace(workspace, now=NOW).transactions.by_reason == {"missing_timestamp": 1}
    # A later import without unreadable rows removes the stale set-aside file.
    write(tmp_path / "tx.csv", "order,customer,when,value,n,returned\no1,c1,2024-03-01,1,1,no\n")
    assert import_mapping(workspace, mapping).tables["transactions"].set_aside_path is None
    assert not Path(tx.set_aside_path).exists()


def test_parquet_sources_expressions_recode_and_merged_lines(workspace: Settings, tmp_path: Path) -> None:
    lines = pa.table(
        {
            "Invoice": ["A1", "A1", "A1", "CA2", "A3"],
            "Client": [7.0, 7.0, 7.0, 7.0, 8.0],  # a nullable integer id as pandas writes it
            "At": pa.array([datetime(2024, 6, 1, 9, 30)] * 3 + [datetime(2024, 6, 2), datetime(2024, 6, 3)]),
            "Qty": [1, 2, 1, -1, 3],
            "Price": [1.1, 1.1, 2.0, 1.1, 0.333],
            "Kind": ["toys", "toys", "books", "toys", "toys"],
        }
    )
    pq.write_table(lines, tmp_path / "lines.parquet")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    pq.write_table(
        pa.table({"id": [7, 8], "since": ["2024-01-01", "2024-02-01"], "country": ["FR", "DE"]}),
        profiles / "part-0.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "who": ["7", "8", "8"],
                "at": pa.array([datetime(2024, 6, 1, 8, tzinfo=UTC)] * 3, pa.timestamp("us", tz="UTC")),
                "what": ["page_view", "basket_add", "search"],
            }
        ),
        tmp_path / "events.parquet",
    )
    mapping = parse_mapping(
        {
            "customers": {
                "source": "profiles",  # a folder of Parquet files
                "columns": {"customer_id": "id", "signup_ts": "since", "region": "country"},
                "constants": {"channel": "shop"},
            },
            "transactions": {
                "source": {"path": "lines.parquet"},
                "columns": {"order_id": "Invoice", "customer_id": "Client", "ts": "At", "quantity": "Qty"},
                "expressions": {
                    "amount": "Qty * Price",
                    "is_return": "starts_with(Invoice, 'C')",
                    "category": "lower(Kind)",
                },
                "timezone": "Asia/Tokyo",
                "merge_lines": True,
                "amount_decimals": 2,
            },
            "events": {
                "source": "events.parquet",
                "columns": {"customer_id": "who", "ts": "at", "event_type": "what"},
                "recode": {"event_type": {"page_view": "view", "basket_add": "add_to_cart"}},
                "timezone": "Asia/Tokyo",  # ignored for timestamps that carry their zone
            },
        },
        base_dir=tmp_path,
    )
    report = import_mapping(workspace, mapping)
    assert report.tables["transactions"].merged == 1
    tx = rows(workspace.raw_dir / "transactions.parquet")
    assert [
        (r["order_id"], r["customer_id"], r["ts"], r["amount"], r["quantity"], r["category"]) for r in tx
    ] == [
        ("A1", "7", utc("2024-06-01", 0).replace(minute=30), 3.3, 3, "toys"),  # two lines merged
        ("A1", "7", utc("2024-06-01", 0).replace(minute=30), 2.0, 1, "books"),
        ("CA2", "7", utc("2024-06-01", 15), -1.1, -1, "toys"),
        ("A3", "8", utc("2024-06-02", 15), 1.0, 3, "toys"),  # 0.999 rounded to 2 decimals
    ]
    assert [r["is_return"] for r in tx] == [False, False, True, False]
    assert [
        (r["customer_id"], r["region"], r["channel"]) for r in rows(workspace.raw_dir / "customers.parquet")
    ] == [
        ("7", "FR", "shop"),
        ("8", "DE", "shop"),
    ]
    events = rows(workspace.raw_dir / "events.parquet")
    assert [(r["event_type"], r["ts"]) for r in events] == [
        ("view", utc("2024-06-01", 8)),
        ("add_to_cart", utc("2024-06-01", 8)),
        ("search", utc("2024-06-01", 8)),
    ]
    validation = validate_workspace(workspace, now=NOW)
    assert all(t.quarantined == 0 for t in validation.tables.values())


def test_mapping_that_does_not_fit_its_source_writes_nothing(workspace: Settings, example: Path) -> None:
    mapping = load_mapping(example)
    data = mapping.model_dump(exclude_none=True)
    data["transactions"]["columns"] = {"customer_id": "client", "ts": "date"}
    data["transactions"]["constants"] = {"amount": 1}
    broken = parse_mapping(data)
    with pytest.raises(MappingError) as err:
        import_mapping(workspace, broken)
    message = str(err.value)
    assert (
        "transactions.columns.customer_id: the source has no column 'client' (found: customer, date)"
        in message
    )
    assert "required column quantity has no source" in message and "required column is_return" in message
    assert "\n" not in message
    assert not any(workspace.raw_dir.iterdir())
    with pytest.raises(MappingError, match="transactions source .*missing.csv does not exist"):
        import_mapping(workspace, with_source(mapping, "transactions", example.parent / "missing.csv"))
    data = mapping.model_dump(exclude_none=True)
    del data["transactions"]["constants"]["category"]
    data["transactions"]["expressions"] = {"category": "nope(1"}
    bad_expression = parse_mapping(data)
    with pytest.raises(
        MappingError, match=r"transactions.expressions.category: 'nope\(1' is not a DuckDB SQL expression"
    ):
        import_mapping(workspace, bad_expression)
    assert not any(workspace.raw_dir.iterdir())


# ------------------------------------------------------------------------------------ PostgreSQL
@pytest.fixture
def pg_orders() -> Iterator[tuple[str, str]]:
    """A table in the real PostgreSQL (``PORTRAIT_POSTGRES_URL``'s server, database ``postgres``)."""
    import sqlalchemy as sa

    from portrait.backends import normalize_postgres_url, redact, with_connect_timeout

    url = sa.make_url(normalize_postgres_url(Settings().postgres_url)).set(database="postgres")
    plain = url.render_as_string(hide_password=False)
    engine = sa.create_engine(with_connect_timeout(plain, 3))
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = (
            f"PostgreSQL at {redact(plain)} is unreachable ({str(exc.orig).strip().splitlines()[0]}): start it "
            "on 127.0.0.1:5432 (trust auth, user postgres) or set PORTRAIT_POSTGRES_URL"
        )
        if ci_required():
            pytest.fail(f"{reason} -- required in CI")
        pytest.skip(reason)
    table = f"portrait_import_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {table} (shopper text, placed timestamp, paid numeric(10, 2), items int, "
                "kind text, noted timestamptz)"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {table} VALUES "
                "('u1', '2024-07-01 10:00', 19.99, 2, 'book', '2024-07-01 10:00+02'), "
                "('u2', '2024-07-02 11:30', 5.00, 1, 'music', '2024-07-02 11:30+02'), "
                "('u1', '2024-07-03 09:00', 7.50, 1, 'xmas special', '2024-07-03 09:00+02')"
            )
        )
    try:
        yield plain, table
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def test_postgresql_query_source(workspace: Settings, pg_orders: tuple[str, str]) -> None:
    url, table = pg_orders
    mapping = parse_mapping(
        {
            "customers": {"from_activity": True},
            "transactions": {
                "source": {
                    # '::' casts and a literal '%' must pass through untouched.
                    "sql": f"SELECT shopper, placed, paid::float8 AS paid, items, kind, noted::timestamptz AS noted "
                    f"FROM {table} WHERE kind NOT LIKE 'xmas%' ORDER BY placed",
                    "url": url,
                },
                "columns": {"customer_id": "shopper", "ts": "placed", "amount": "paid", "quantity": "items"},
                "expressions": {"category": "upper(kind)"},
                "constants": {"is_return": False},
                "derive": {"order_id": "{customer_id}:{ts:%Y-%m-%dT%H:%M}"},
                "timezone": "Europe/Paris",  # 'placed' has no zone: it is Paris time
            },
        }
    )
    import_mapping(workspace, mapping)
    tx = rows(workspace.raw_dir / "transactions.parquet")
    assert [
        (r["order_id"], r["customer_id"], r["ts"], r["amount"], r["quantity"], r["category"]) for r in tx
    ] == [
        ("u1:2024-07-01T10:00", "u1", utc("2024-07-01", 8), 19.99, 2, "BOOK"),
        ("u2:2024-07-02T11:30", "u2", utc("2024-07-02", 9).replace(minute=30), 5.0, 1, "MUSIC"),
    ]
    # A timestamptz column keeps its instant whatever the input's zone; numeric arrives as a number.
    ts_tz = parse_mapping(
        {
            "customers": {"from_activity": True},
            "transactions": {
                "source": {"sql": f"SELECT * FROM {table}", "url": url},
                "columns": {"customer_id": "shopper", "ts": "noted", "amount": "paid", "quantity": "items"},
                "constants": {"is_return": False, "order_id": "x"},
                "timezone": "Asia/Tokyo",
            },
        }
    )
    import_mapping(workspace, ts_tz)
    tx = rows(workspace.raw_dir / "transactions.parquet")
    assert [r["ts"] for r in tx] == [
        utc("2024-07-01", 8),
        utc("2024-07-02", 9).replace(minute=30),
        utc("2024-07-03", 7),
    ]
    assert [r["amount"] for r in tx] == [19.99, 5.0, 7.5]

    data = mapping.model_dump(exclude_none=True)
    data["transactions"]["source"] = {"sql": f"SELECT nope FROM {table}", "url": url}
    failing = parse_mapping(data)
    with pytest.raises(MappingError, match=r'failed: column "nope" does not exist') as err:
        import_mapping(workspace, failing)
    assert "\n" not in str(err.value)


def test_unreachable_database_is_one_line(workspace: Settings, example: Path) -> None:
    mapping = load_mapping(example).model_dump(exclude_none=True)
    mapping["transactions"]["source"] = {
        "sql": "SELECT 1",
        "url": "postgresql://someone:secret@127.0.0.1:1/shop",
    }
    with pytest.raises(MappingError) as err:
        import_mapping(workspace, parse_mapping(mapping))
    message = str(err.value)
    assert "transactions source (query at postgresql://***@127.0.0.1:1/shop) failed" in message
    assert "secret" not in message and "\n" not in message


# ------------------------------------------------------------------------------------ dry run
def test_dry_run_reports_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "workspace")
    write(
        tmp_path / "orders.csv",
        "customer,date,value\n"
        "c1,01/02/2024,10\n"
        "c1,31/02/2024,10\n"  # no such day
        "c2,02/02/2024,-3\n"  # a negative purchase: validation's business
        "c2,02/02/2030,4\n"  # in the future
        ",03/02/2024,4\n",  # no customer
    )
    mapping = parse_mapping(
        {
            "customers": {"from_activity": True},
            "transactions": {
                "source": "orders.csv",
                "columns": {"customer_id": "customer", "ts": "date", "amount": "value"},
                "timestamp_format": "%d/%m/%Y",
                "constants": {"quantity": 1, "is_return": False},
                "derive": {"order_id": "{customer_id}-{ts:%Y%m%d}"},
            },
        },
        base_dir=tmp_path,
    )
    report = preview_mapping(settings, mapping, sample=2, now=NOW)
    assert not settings.home.exists()  # not even the workspace folders
    assert not report.fatal
    lines = [p.line() for p in report.problems]
    assert lines == [
        "transactions.timestamp_format: unparseable_timestamp: 1 row set aside by the import (ts not readable) "
        "(e.g. line 3: ts '31/02/2024')",
        "transactions: missing_customer_id: validation would quarantine 1 row (e.g. customer_id=None, "
        "order_id=None, ts=2024-02-03 00:00:00+00)",
        "transactions: future_timestamp: validation would quarantine 1 row (e.g. customer_id=c2, "
        "order_id=c2-20300202, ts=2030-02-02 00:00:00+00)",
        "transactions: negative_amount_on_purchase: validation would quarantine 1 row (e.g. customer_id=c2, "
        "order_id=c2-20240202, ts=2024-02-02 00:00:00+00)",
    ]
    assert report.samples["transactions"] == [
        {
            "order_id": "c1-20240201",
            "customer_id": "c1",
            "ts": "2024-02-01T00:00:00Z",
            "amount": "10.0",
            "quantity": "1",
            "category": None,
            "is_return": "false",
        },
        {
            "order_id": "c2-20240202",
            "customer_id": "c2",
            "ts": "2024-02-02T00:00:00Z",
            "amount": "-3.0",
            "quantity": "1",
            "category": None,
            "is_return": "false",
        },
    ]
    assert [s["customer_id"] for s in report.samples["customers"]] == ["c1", "c2"]
    assert report.tables["transactions"].columns["order_id"] == "derived '{customer_id}-{ts:%Y%m%d}'"

    # Fatal problems of every input are listed together, still without writing anything.
    broken = parse_mapping(
        {
            "customers": {"source": "people.csv"},
            "transactions": {"source": "orders.csv", "columns": {"ts": "when"}},
        },
        base_dir=tmp_path,
    )
    report = preview_mapping(settings, broken)
    fatal = [p.line() for p in report.fatal]
    assert fatal[0].startswith("customers.source: customers source ") and fatal[0].endswith(
        "people.csv does not exist"
    )
    assert any(line.startswith("transactions.columns.ts: the source has no column 'when'") for line in fatal)
    assert any("required column order_id has no source" in line for line in fatal)
    assert not settings.home.exists()


# ------------------------------------------------------------------------------------ append
def test_append_twice_changes_nothing(workspace: Settings, example: Path, tmp_path: Path) -> None:
    mapping = load_mapping(example)
    import_mapping(workspace, mapping)
    batch = write(
        tmp_path / "batch.csv",
        "customer,date\nc4,21/07/2024\nc1,21/07/2024\nc1,21/07/2024\nc2,02/02/2024\nc1,10/01/2024\n",
    )  # a new customer, a line twice, a line already imported, and a late order before c1's signup
    batch_mapping = with_source(mapping, "transactions", batch)
    first = import_mapping(workspace, batch_mapping, append=True)
    assert (first.tables["transactions"].added, first.tables["transactions"].already_present) == (4, 1)
    assert (first.tables["customers"].added, first.tables["customers"].rows_written) == (1, 4)
    files = {
        t: pq.read_table(workspace.raw_dir / f"{t}.parquet") for t in ("customers", "transactions", "events")
    }
    assert files["transactions"].num_rows == 8
    signups = {r["customer_id"]: r["signup_ts"] for r in rows(workspace.raw_dir / "customers.parquet")}
    assert signups["c1"] == utc("2024-01-09", 23)  # moved back to the late order
    assert signups["c4"] == utc("2024-07-20", 22)

    again = import_mapping(workspace, batch_mapping, append=True)
    assert (again.tables["transactions"].added, again.tables["transactions"].already_present) == (0, 5)
    assert again.tables["customers"].added == 0
    for table, before in files.items():
        assert pq.read_table(workspace.raw_dir / f"{table}.parquet").equals(before), table
    # The first import's file again with --append: nothing new either.
    assert import_mapping(workspace, mapping, append=True).tables["transactions"].added == 0
    assert pq.read_table(workspace.raw_dir / "transactions.parquet").equals(files["transactions"])
    assert APPEND_KEYS["transactions"] == tuple(ARROW_SCHEMAS["transactions"].names)
    assert APPEND_KEYS["customers"] == ("customer_id",)


def test_appended_late_row_lands_in_its_snapshot(workspace: Settings, example: Path, tmp_path: Path) -> None:
    """A late order (dated before a snapshot, delivered after it was built) is in that snapshot once the
    snapshot is rebuilt after the append."""
    mapping = load_mapping(example)
    import_mapping(workspace, mapping)
    validate_workspace(workspace, now=NOW)
    snapshot = utc("2024-08-01")

    def orders_of(customer: str) -> int:
        compute_features(workspace.clean_dir, workspace.features_dir, [snapshot])
        path = snapshot_path(workspace.features_dir, "customer_transactions", snapshot)
        found = [r["orders_lifetime"] for r in rows(path) if r["customer_id"] == customer]
        return found[0] if found else 0

    assert orders_of("c2") == 1
    late = write(tmp_path / "late.csv", "customer,date\nc2,15/06/2024\nc2,15/08/2024\n")
    report = import_mapping(workspace, with_source(mapping, "transactions", late), append=True)
    assert report.tables["transactions"].added == 2
    validation = validate_workspace(workspace, now=NOW)
    assert validation.transactions.accepted == 6 and validation.transactions.quarantined == 0
    assert orders_of("c2") == 2  # the June order counts at the August snapshot; the later one does not

"""Contract validation: one row per class of bad row, exact accounting, unusable inputs, atomicity."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import features.validate as validate_mod
from features.contract import ARROW_SCHEMAS
from features.validate import (
    REASONS,
    ContractError,
    TableReport,
    validate_table,
    validate_workspace,
    write_empty,
)
from portrait.settings import Settings

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def run(table: str, source: Path, tmp_path: Path, **kwargs) -> TableReport:
    return validate_table(
        table,
        source,
        clean_path=tmp_path / "clean" / f"{table}.parquet",
        quarantine_path=tmp_path / "quarantine" / f"{table}.parquet",
        now=kwargs.pop("now", NOW),
        **kwargs,
    )


def quarantine_reasons(tmp_path: Path, table: str) -> dict[int, str]:
    q = pq.read_table(tmp_path / "quarantine" / f"{table}.parquet").to_pylist()
    return {r["source_row"]: r["reason"] for r in q}


def clean_rows(tmp_path: Path, table: str) -> list[dict]:
    return pq.read_table(tmp_path / "clean" / f"{table}.parquet").to_pylist()


def assert_consistent(report: TableReport, tmp_path: Path) -> None:
    assert report.accepted + report.quarantined == report.rows_read
    assert sum(report.by_reason.values()) == report.quarantined
    assert list(report.by_reason) == [r for r, _ in REASONS[report.table] if r in report.by_reason]
    clean = pq.read_table(tmp_path / "clean" / f"{report.table}.parquet")
    assert clean.schema.equals(ARROW_SCHEMAS[report.table]), clean.schema
    assert clean.num_rows == report.accepted
    assert (
        pq.read_metadata(tmp_path / "quarantine" / f"{report.table}.parquet").num_rows == report.quarantined
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------ transactions
TX_HEADER = "order_id,customer_id,ts,amount,quantity,category,is_return,note"
# (csv line, expected reason or None for a good row); the source row is the list index.
TX_ROWS: list[tuple[str, str | None]] = [
    ("o1,c1,2024-01-01T10:00:00Z,10.5,1,toys,false,good", None),
    ("o2,c1,2024-01-02 10:00:00,-4,-2,,true,good return", None),
    ("o3,,2024-01-01,1,1,,false,", "missing_customer_id"),
    ("o3b,   ,2024-01-01,1,1,,false,blank id", "missing_customer_id"),
    (",c1,2024-01-01,1,1,,false,", "missing_order_id"),
    ("o4,c1,,1,1,,false,", "missing_timestamp"),
    ("o5,c1,01/02/2024,1,1,,false,", "unparseable_timestamp"),
    ("o6,c1,2099-01-01,1,1,,false,", "future_timestamp"),
    ("o7,c1,2024-01-01,,1,,false,", "missing_amount"),
    ("o8,c1,2024-01-01,12 EUR,1,,false,", "unparseable_amount"),
    ("o8b,c1,2024-01-01,nan,1,,false,", "unparseable_amount"),
    ("o9,c1,2024-01-01,1,,,false,", "missing_quantity"),
    ("o10,c1,2024-01-01,1,2.5,,false,", "unparseable_quantity"),
    ("o11,c1,2024-01-01,1,1,,,", "missing_is_return"),
    ("o12,c1,2024-01-01,1,1,,maybe,", "unparseable_is_return"),
    ("o13,c1,2024-01-01,-1,1,,false,", "negative_amount_on_purchase"),
    ("o14,c1,2024-01-01,1,-1,,true,", "positive_amount_on_return"),
    ("o15,c1,2024-01-01,1,0,,false,", "nonpositive_quantity_on_purchase"),
    ("o16,c1,2024-01-01,-1,1,,true,", "positive_quantity_on_return"),
    ("o17,c9,2024-01-01,1,1,,false,", "unknown_customer"),
    # The same values as row 0 spelt differently: a duplicate after coercion (other columns differ).
    ("o1,c1,2024-01-01T11:00:00+01:00,10.50,1.0,toys,FALSE,other note", "duplicate"),
    ("o18,c1,2024-01-03,0,3,books,0,zero amount is fine", None),
    ("o3c," + "c" * 129 + ",2024-01-01,1,1,,false,id too long for the API", "invalid_customer_id"),
    # Two failures: the first in the documented order wins.
    (",,not a date,abc,x,,maybe,", "missing_customer_id"),
    ("o19,c1,2099-01-01,-1,0,,false,", "future_timestamp"),
]


def test_transactions_every_reason(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "tx.csv", TX_HEADER, [line for line, _ in TX_ROWS])
    report = run("transactions", src, tmp_path, known_customers=["c1", "c2"])

    expected = {i: reason for i, (_, reason) in enumerate(TX_ROWS) if reason}
    assert quarantine_reasons(tmp_path, "transactions") == expected
    assert report.rows_read == len(TX_ROWS)
    assert report.quarantined == len(expected)
    assert_consistent(report, tmp_path)
    # Every transactions reason is exercised by this table.
    assert set(report.by_reason) == {r for r, _ in REASONS["transactions"]}

    clean = sorted(clean_rows(tmp_path, "transactions"), key=lambda r: r["order_id"])
    assert clean == [
        {
            "order_id": "o1",
            "customer_id": "c1",
            "ts": datetime(2024, 1, 1, 10, tzinfo=UTC),
            "amount": 10.5,
            "quantity": 1,
            "category": "toys",
            "is_return": False,
        },
        {
            "order_id": "o18",
            "customer_id": "c1",
            "ts": datetime(2024, 1, 3, tzinfo=UTC),
            "amount": 0.0,
            "quantity": 3,
            "category": "books",
            "is_return": False,
        },
        {
            "order_id": "o2",
            "customer_id": "c1",
            "ts": datetime(2024, 1, 2, 10, tzinfo=UTC),
            "amount": -4.0,
            "quantity": -2,
            "category": None,
            "is_return": True,
        },
    ]


def test_quarantine_keeps_original_values_as_strings(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "tx.csv", TX_HEADER, [line for line, _ in TX_ROWS])
    run("transactions", src, tmp_path, known_customers=["c1"])
    q = pq.read_table(tmp_path / "quarantine" / "transactions.parquet")
    assert q.column_names == [*TX_HEADER.split(","), "reason", "source_file", "source_row"]
    assert all(q.schema.field(c).type == pa.string() for c in TX_HEADER.split(","))
    row = next(r for r in q.to_pylist() if r["order_id"] == "o8")
    assert row["amount"] == "12 EUR" and row["ts"] == "2024-01-01" and row["note"] is None
    assert row["source_file"] == str(src) and row["source_row"] == 9
    # Sorted by source position.
    assert q.column("source_row").to_pylist() == sorted(q.column("source_row").to_pylist())


def test_typed_parquet_source_is_coerced(tmp_path: Path) -> None:
    """Native Parquet types: naive timestamps are UTC, float ids lose their '.0', 0/1 flags work,
    and columns that happen to hold no null are still written as nullable (the contract schema)."""
    src = tmp_path / "tx.parquet"
    pq.write_table(
        pa.table(
            {
                "order_id": pa.array([1, 2, 2, 3, 4], pa.int64()),
                "customer_id": pa.array([12346.0, 12346.0, 12346.0, 7.5, 12346.0]),
                "ts": pa.array(
                    [datetime(2024, 6, 1, 8, 30)] * 4 + [datetime(2030, 1, 1)], pa.timestamp("ns")
                ),
                "amount": pa.array([3.0, 4.0, 4.0, 1.0, 1.0]),
                "quantity": pa.array([1.0, 2.0, 2.0, 1.0, 1.0]),
                "is_return": pa.array([0, 0, 0, 0, 0], pa.int8()),
                "extra": ["a", "b", "c", "d", "e"],
            }
        ),
        src,
    )
    report = run("transactions", src, tmp_path)
    assert quarantine_reasons(tmp_path, "transactions") == {2: "duplicate", 4: "future_timestamp"}
    assert_consistent(report, tmp_path)
    clean = sorted(clean_rows(tmp_path, "transactions"), key=lambda r: r["order_id"])
    assert [(r["order_id"], r["customer_id"], r["quantity"]) for r in clean] == [
        ("1", "12346", 1),
        ("2", "12346", 2),
        ("3", "7.5", 1),
    ]
    assert clean[0]["ts"] == datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    assert clean[0]["category"] is None  # optional column absent from the source


# ------------------------------------------------------------------------------------ customers
CUST_HEADER = "customer_id,signup_ts,region,gender,age_band,channel"
CUST_ROWS: list[tuple[str, str | None]] = [
    ("a,2024-01-01,north,,,organic", None),
    (",2024-01-01,north,,,", "missing_customer_id"),
    ("x" * 129 + ",2024-01-01,north,,,", "invalid_customer_id"),
    ("b,,north,,,", "missing_timestamp"),
    ("c,yesterday,north,,,", "unparseable_timestamp"),
    ("d,2030-01-01,north,,,", "future_timestamp"),
    ("a,2024-01-01,north,,,organic", "duplicate"),
    ("a,2024-03-01,south,,,paid", "duplicate_customer_id"),
    # The first row of 'e' fails, so the second one is the first usable profile and is kept.
    ("e,not a date,,,,", "unparseable_timestamp"),
    ("e,2024-02-02,west,,,", None),
]


def test_customers_every_reason(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "customers.csv", CUST_HEADER, [line for line, _ in CUST_ROWS])
    report = run("customers", src, tmp_path)
    assert quarantine_reasons(tmp_path, "customers") == {i: r for i, (_, r) in enumerate(CUST_ROWS) if r}
    assert set(report.by_reason) == {r for r, _ in REASONS["customers"]}
    assert_consistent(report, tmp_path)
    clean = sorted(clean_rows(tmp_path, "customers"), key=lambda r: r["customer_id"])
    assert [(r["customer_id"], r["region"], r["channel"]) for r in clean] == [
        ("a", "north", "organic"),
        ("e", "west", None),
    ]


# ------------------------------------------------------------------------------------ events
EV_HEADER = "customer_id,ts,event_type,category,session_id"
EV_ROWS: list[tuple[str, str | None]] = [
    ("a,2024-01-01T10:00:00Z,view,toys,s1", None),
    ("a,2024-01-01T10:00:00Z,add_to_cart,toys,s1", None),
    (",2024-01-01,view,,", "missing_customer_id"),
    ("y" * 129 + ",2024-01-01,view,,", "invalid_customer_id"),
    ("a,,view,,", "missing_timestamp"),
    ("a,soon,view,,", "unparseable_timestamp"),
    ("a,2026-01-01,view,,", "future_timestamp"),
    ("a,2024-01-01,,,", "missing_event_type"),
    ("a,2024-01-01,purchase,,", "unknown_event_type"),
    ("a,2024-01-01,View,,", "unknown_event_type"),
    ("zz,2024-01-01,view,,", "unknown_customer"),
    ("a,2024-01-01T10:00:00Z,view,toys,s1", "duplicate"),
]


def test_events_every_reason(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "events.csv", EV_HEADER, [line for line, _ in EV_ROWS])
    report = run("events", src, tmp_path, known_customers=["a"])
    assert quarantine_reasons(tmp_path, "events") == {i: r for i, (_, r) in enumerate(EV_ROWS) if r}
    assert set(report.by_reason) == {r for r, _ in REASONS["events"]}
    assert_consistent(report, tmp_path)
    assert sorted(r["event_type"] for r in clean_rows(tmp_path, "events")) == ["add_to_cart", "view"]


def test_empty_events_are_allowed(tmp_path: Path) -> None:
    report = run("events", write_csv(tmp_path / "events.csv", EV_HEADER, []), tmp_path)
    assert (report.rows_read, report.accepted, report.quarantined) == (0, 0, 0)
    assert_consistent(report, tmp_path)


def test_directory_of_parquet_files(tmp_path: Path) -> None:
    d = tmp_path / "events.parquet"
    d.mkdir()
    rows = [{"customer_id": "a", "ts": datetime(2024, 1, 1, tzinfo=UTC), "event_type": "view"}]
    for name in ("part-0.parquet", "part-1.parquet"):
        pq.write_table(pa.Table.from_pylist(rows * 2, schema=ARROW_SCHEMAS["events"]), d / name)
    (d / "_SUCCESS").write_text("")
    report = run("events", d, tmp_path)
    assert (report.rows_read, report.accepted, report.by_reason) == (4, 1, {"duplicate": 3})
    q = pq.read_table(tmp_path / "quarantine" / "events.parquet").to_pylist()
    assert [(Path(r["source_file"]).name, r["source_row"]) for r in q] == [
        ("part-0.parquet", 1),
        ("part-1.parquet", 0),
        ("part-1.parquet", 1),
    ]
    assert_consistent(report, tmp_path)


def test_csv_lines_starting_with_hash_are_data(tmp_path: Path) -> None:
    """DuckDB's CSV sniffer may treat '#' lines as comments; here they must stay rows."""
    src = write_csv(tmp_path / "c.csv", "customer_id,signup_ts", ["#1,2024-01-01", "2,2024-01-01"])
    report = run("customers", src, tmp_path)
    assert (report.rows_read, report.accepted) == (2, 2)


# ------------------------------------------------------------------------------------ unusable input
def _garbage(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 8)
    return path


@pytest.mark.parametrize(
    ("name", "make", "fragment"),
    [
        ("absent.csv", lambda p: p, "does not exist"),
        ("missing_col.csv", lambda p: write_csv(p, "order_id,customer_id,ts", ["o,c,2024-01-01"]), "amount"),
        ("empty.csv", lambda p: (p.write_bytes(b""), p)[1], "empty"),
        ("header_only.csv", lambda p: write_csv(p, TX_HEADER, []), "no data rows"),
        ("garbage.csv", _garbage, "CSV"),
        ("garbage.parquet", _garbage, "Parquet"),
        ("tx.json", lambda p: (p.write_text("[]"), p)[1], "neither CSV"),
        ("ragged.csv", lambda p: write_csv(p, TX_HEADER, ["o1,c1,2024-01-01,1,1,,false,", "o2,c1"]), "CSV"),
        (
            "all_bad.csv",
            lambda p: write_csv(p, TX_HEADER, [",c1,2024-01-01,1,1,,false,", "o,c1,,1,1,,false,"]),
            "no usable row",
        ),
    ],
)
def test_unusable_input_raises_contract_error(tmp_path: Path, name: str, make, fragment: str) -> None:
    src = make(tmp_path / name)
    with pytest.raises(ContractError) as info:
        run("transactions", src, tmp_path)
    message = str(info.value)
    assert name in message and fragment in message, message
    assert "\n" not in message
    # Nothing was written.
    assert not (tmp_path / "clean" / "transactions.parquet").exists()
    assert not (tmp_path / "quarantine" / "transactions.parquet").exists()


# ------------------------------------------------------------------------------------ atomicity
def test_interrupted_write_leaves_previous_files_intact(tmp_path: Path, monkeypatch) -> None:
    first = write_csv(tmp_path / "tx1.csv", TX_HEADER, [TX_ROWS[0][0], TX_ROWS[2][0]])
    run("transactions", first, tmp_path)
    clean, quarantine = (
        tmp_path / "clean" / "transactions.parquet",
        tmp_path / "quarantine" / "transactions.parquet",
    )
    before = clean.read_bytes(), quarantine.read_bytes()

    real_write = validate_mod._write_parquet
    calls: list[Path] = []

    def write_then_fail(con, query, path):  # noqa: ANN001
        rows = real_write(con, query, path)
        calls.append(path)
        assert path.exists()  # the temporary file is complete ...
        if len(calls) == 2:  # ... and the run dies after writing the second one
            raise OSError("disk full")
        return rows

    monkeypatch.setattr(validate_mod, "_write_parquet", write_then_fail)
    second = write_csv(tmp_path / "tx2.csv", TX_HEADER, [line for line, _ in TX_ROWS])
    with pytest.raises(OSError, match="disk full"):
        run("transactions", second, tmp_path)

    assert (clean.read_bytes(), quarantine.read_bytes()) == before
    assert all(p.parent in (clean.parent, quarantine.parent) for p in calls)  # written beside the targets
    assert leftovers(clean.parent) == [] and leftovers(quarantine.parent) == []


# ------------------------------------------------------------------------------------ workspace
def _write(path: Path, table: str, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ARROW_SCHEMAS[table]), path)


def _ts(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def _workspace(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path)
    raw = settings.raw_dir
    _write(
        raw / "customers.parquet",
        "customers",
        [
            {"customer_id": "A", "signup_ts": _ts("2024-01-01")},
            {"customer_id": "B", "signup_ts": _ts("2024-01-01")},
            {"customer_id": "Q", "signup_ts": None},  # quarantined profile
        ],
    )
    tx = {"order_id": "o1", "ts": _ts("2024-02-01"), "amount": 5.0, "quantity": 1, "is_return": False}
    _write(
        raw / "transactions.parquet",
        "transactions",
        [{**tx, "customer_id": "A"}, {**tx, "customer_id": "Q"}, {**tx, "customer_id": "X"}],
    )
    return settings


def test_validate_workspace(tmp_path: Path) -> None:
    settings = _workspace(tmp_path)
    report = validate_workspace(settings, now=NOW)

    assert report.customers.by_reason == {"missing_timestamp": 1}
    # Q's profile was quarantined and X has none: both are unknown customers.
    assert report.transactions.by_reason == {"unknown_customer": 2}
    assert report.events.rows_read == 0 and report.events.note
    for t in report.tables.values():
        assert t.accepted + t.quarantined == t.rows_read
        assert pq.read_schema(settings.clean_dir / f"{t.table}.parquet").equals(ARROW_SCHEMAS[t.table])
        assert (settings.quarantine_dir / f"{t.table}.parquet").exists()
    saved = json.loads((settings.reports_dir / "validation.json").read_text())
    assert saved["transactions"]["by_reason"] == {"unknown_customer": 2}
    assert datetime.fromisoformat(saved["now"]) == NOW


def test_validate_workspace_is_all_or_nothing(tmp_path: Path) -> None:
    settings = _workspace(tmp_path)
    validate_workspace(settings, now=NOW)
    before = {p.name: p.read_bytes() for p in settings.clean_dir.iterdir()}

    # New customers are fine, but the transactions file lost a required column.
    _write(
        settings.raw_dir / "customers.parquet",
        "customers",
        [{"customer_id": "Z", "signup_ts": _ts("2024-05-01")}],
    )
    pq.write_table(
        pa.table({"order_id": ["o"], "customer_id": ["Z"]}), settings.raw_dir / "transactions.parquet"
    )
    with pytest.raises(ContractError, match="transactions.parquet is missing required column"):
        validate_workspace(settings, now=NOW)
    assert {p.name: p.read_bytes() for p in settings.clean_dir.iterdir()} == before


def test_validate_workspace_requires_transactions(tmp_path: Path) -> None:
    settings = _workspace(tmp_path)
    os.remove(settings.raw_dir / "transactions.parquet")
    with pytest.raises(ContractError, match="does not exist"):
        validate_workspace(settings, now=NOW)


def test_write_empty(tmp_path: Path) -> None:
    for table in ARROW_SCHEMAS:
        path = write_empty(table, tmp_path / f"{table}.parquet")
        t = pq.read_table(path)
        assert t.num_rows == 0 and t.schema.equals(ARROW_SCHEMAS[table])

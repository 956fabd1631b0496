"""Loaders on the real public datasets (../shared/datasets), then validation of their output.

The datasets are found through ``Settings().data_dir`` (``PORTRAIT_DATA_DIR``). Without them the
tests are skipped with the reason, except in CI (``CI`` set), where the files must be present.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract import ARROW_SCHEMAS
from features.loaders import (
    DUPLICATE_LINE_REASON,
    NON_PRODUCT_REASON,
    LoadReport,
    load_cdnow,
    load_online_retail,
)
from features.validate import ContractError, validate_workspace
from portrait.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def dataset(name: str) -> Path:
    data_dir = Settings().data_dir
    path = data_dir / name if data_dir else None
    if path is None or not path.is_file():
        reason = (
            f"real dataset {name} not found (data_dir={data_dir}); "
            "put it in ../shared/datasets or set PORTRAIT_DATA_DIR"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason} -- required in CI")
        pytest.skip(reason)
    return path


def sql(query: str) -> list[tuple]:
    return duckdb.sql(query).fetchall()


def check_written(report: LoadReport) -> None:
    for table in ("customers", "transactions", "events"):
        path = Path(report.paths[table])
        assert pq.read_schema(path).equals(ARROW_SCHEMAS[table]), table
        assert pq.read_metadata(path).num_rows == report.rows_written[table]
    assert report.rows_written["events"] == 0
    assert not [p for p in Path(report.paths["transactions"]).parent.iterdir() if p.name.startswith(".")]


def check_validation(settings: Settings, loaded: LoadReport) -> dict:
    report = validate_workspace(settings, now=NOW)
    for t in report.tables.values():
        assert t.accepted + t.quarantined == t.rows_read, t
        assert sum(t.by_reason.values()) == t.quarantined, t
    assert report.customers.rows_read == loaded.rows_written["customers"]
    assert report.transactions.rows_read == loaded.rows_written["transactions"]
    return {name: t for name, t in report.tables.items()}


# ------------------------------------------------------------------------------------ Online Retail
@pytest.fixture(scope="module")
def online_retail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, LoadReport, Path]:
    source = dataset("online_retail.parquet")
    settings = Settings(home=tmp_path_factory.mktemp("online_retail"))
    return settings, load_online_retail(source, settings.raw_dir), source


def test_online_retail_figures(online_retail) -> None:
    settings, report, source = online_retail
    assert report.rows_read == 541_909
    assert report.missing_customer_id == 135_080
    assert report.rows_written["customers"] == 4_372
    assert report.cancellations == 9_288
    assert report.non_product_lines == 2_950
    assert report.duplicates_seen == 5_268
    assert report.zero_price == 2_515 and report.negative_price == 2
    check_written(report)

    # Every line read is accounted for: a transaction, folded into one, or set aside with a reason.
    set_aside = sum(report.quarantined.values())
    assert report.rows_written["transactions"] + report.lines_merged + set_aside == report.rows_read
    q = pq.read_table(report.paths["quarantine"])
    assert q.num_rows == set_aside
    by_reason = dict(sql(f"SELECT reason, count(*) FROM '{report.paths['quarantine']}' GROUP BY 1"))
    assert by_reason == report.quarantined
    assert by_reason[NON_PRODUCT_REASON] == report.non_product_lines
    # The first copy of a duplicated line is kept: fewer set aside than duplicate lines seen only
    # by the duplicates that are non-product lines anyway.
    assert by_reason[DUPLICATE_LINE_REASON] <= report.duplicates_seen
    assert {"POST", "M", "BANK CHARGES", "AMAZONFEE", "DOT"} <= {
        r[0] for r in sql(f"SELECT DISTINCT upper(StockCode) FROM '{report.paths['quarantine']}'")
    }


def test_online_retail_transactions(online_retail) -> None:
    settings, report, source = online_retail
    tx = report.paths["transactions"]
    # Cancellations become returns, with negative quantity and amount.
    assert sql(f"SELECT count(*) FROM '{tx}' WHERE is_return <> starts_with(order_id, 'C')") == [(0,)]
    n_returns, max_qty, max_amount = sql(
        f"SELECT count(*), max(quantity), max(amount) FROM '{tx}' WHERE is_return"
    )[0]
    assert n_returns > 3_000 and max_qty < 0 and max_amount <= 0
    # Nothing lost: total value and units equal those of the product lines that were kept.
    kept = (
        f"SELECT * FROM read_parquet('{source}', file_row_number=true) "
        f"WHERE file_row_number NOT IN (SELECT source_row FROM '{report.paths['quarantine']}')"
    )
    expected = sql(f"SELECT round(sum(Quantity * UnitPrice), 2), sum(Quantity), count(*) FROM ({kept})")[0]
    actual = sql(f"SELECT round(sum(amount), 2), sum(quantity) FROM '{tx}'")[0]
    assert actual == expected[:2]
    assert expected[2] == report.rows_written["transactions"] + report.lines_merged
    # Customer ids are integer strings; categories come from the documented rules.
    assert sql(f"SELECT count(*) FROM '{tx}' WHERE NOT regexp_matches(customer_id, '^[0-9]+$')") == [(0,)]
    categories = {r[0] for r in sql(f"SELECT DISTINCT category FROM '{tx}'")}
    assert {"kitchen_dining", "seasonal", "other"} <= categories
    # Customers: first invoice and most frequent country.
    assert sql(
        f"SELECT signup_ts, region FROM '{report.paths['customers']}' WHERE customer_id = '17850'"
    ) == [(datetime(2010, 12, 1, 8, 26, tzinfo=UTC), "United Kingdom")]


def test_online_retail_validates(online_retail) -> None:
    settings, report, _ = online_retail
    tables = check_validation(settings, report)
    no_id = sql(f"SELECT count(*) FROM '{report.paths['transactions']}' WHERE customer_id IS NULL")[0][0]
    assert no_id > 0
    assert tables["transactions"].by_reason == {"missing_customer_id": no_id}
    assert tables["customers"].accepted == 4_372
    assert tables["events"].rows_read == 0


def test_online_retail_line_grain(tmp_path: Path) -> None:
    """One row per line (merge_lines=False): nothing merged, and validation then quarantines as
    ``duplicate`` both the true duplicate lines and the distinct lines that became identical."""
    settings = Settings(home=tmp_path)
    report = load_online_retail(dataset("online_retail.parquet"), settings.raw_dir, merge_lines=False)
    assert report.lines_merged == 0 and report.quarantined == {NON_PRODUCT_REASON: 2_950}
    assert report.rows_written["transactions"] == 541_909 - 2_950
    tables = check_validation(settings, report)
    duplicates = tables["transactions"].by_reason["duplicate"]
    assert duplicates > 10 * report.duplicates_seen  # mostly distinct products, not true duplicates


# ------------------------------------------------------------------------------------ CDNOW
@pytest.fixture(scope="module")
def cdnow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, LoadReport, Path]:
    source = dataset("cdnow_master.txt")
    settings = Settings(home=tmp_path_factory.mktemp("cdnow"))
    return settings, load_cdnow(source, settings.raw_dir), source


def test_cdnow_figures(cdnow) -> None:
    settings, report, _ = cdnow
    assert report.rows_read == 69_659
    assert report.rows_written["transactions"] == 69_659
    assert report.rows_written["customers"] == 23_570
    assert report.duplicates_seen == 255 and report.zero_price == 80
    check_written(report)
    tx, customers = report.paths["transactions"], report.paths["customers"]
    assert sql(f"SELECT round(sum(amount), 2), sum(quantity), count(DISTINCT order_id) FROM '{tx}'") == [
        (2_500_315.63, 167_881, 67_591)
    ]
    assert sql(f"SELECT min(ts), max(ts), bool_or(is_return) FROM '{tx}'") == [
        (datetime(1997, 1, 1, tzinfo=UTC), datetime(1998, 6, 30, tzinfo=UTC), False)
    ]
    assert sql(f"SELECT order_id, customer_id, quantity, amount FROM '{tx}' LIMIT 1") == [
        ("1-19970101", "1", 1, 11.77)
    ]
    # The cohort: everyone's first purchase is in Q1 1997.
    first, last = sql(f"SELECT min(signup_ts), max(signup_ts) FROM '{customers}'")[0]
    assert datetime(1997, 1, 1, tzinfo=UTC) == first and last < datetime(1997, 4, 1, tzinfo=UTC)


def test_cdnow_validates(cdnow) -> None:
    settings, report, _ = cdnow
    tables = check_validation(settings, report)
    assert tables["transactions"].by_reason == {"duplicate": report.duplicates_seen}
    assert tables["customers"].accepted == 23_570


# ------------------------------------------------------------------------------------ bad files
def test_loaders_reject_unusable_files(tmp_path: Path) -> None:
    bad = tmp_path / "cdnow.txt"
    bad.write_text("customer date cds\n1 19970101 1\n")
    with pytest.raises(ContractError, match="cdnow.txt has header"):
        load_cdnow(bad, tmp_path / "raw")
    bad.write_text("customer_id date number_of_cds dollar_value\n1 1997-13-45 1 2.0\n")
    with pytest.raises(ContractError, match="line 2 has an invalid date"):
        load_cdnow(bad, tmp_path / "raw")
    other = tmp_path / "retail.parquet"
    pq.write_table(pa.table({"InvoiceNo": ["1"], "Quantity": [1]}), other)
    with pytest.raises(ContractError, match="retail.parquet is missing column"):
        load_online_retail(other, tmp_path / "raw")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_cli_load_of_a_wrong_or_missing_file_is_one_line(tmp_path: Path) -> None:
    """`portrait data load DATASET --path FILE` with a file of another format, a folder or no file at all
    ends in one error line and exit 2, never a traceback."""
    other = tmp_path / "other.csv"
    other.write_text("customer,date\nC1,01/01/2024\n")
    binary = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1]}), binary)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cases = [
        (
            "cdnow",
            other,
            "has header 'customer,date', expected 'customer_id date number_of_cds dollar_value'",
        ),
        ("cdnow", binary, "CDNOW file"),
        ("cdnow", empty, "cannot be read"),
        ("cdnow", tmp_path / "missing.txt", "does not exist"),
        ("cdnow", tmp_path, "is not a file"),
        ("online-retail", other, "cannot be read as Parquet"),
        ("online-retail", binary, "is missing column(s) InvoiceNo"),
    ]
    script = Path(sys.executable).with_name("portrait")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "portrait.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    env.update(PORTRAIT_HOME=str(tmp_path / "ws"), COLUMNS="80")
    for dataset, path, expected in cases:
        result = subprocess.run(
            [*command, "data", "load", dataset, "--path", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, (dataset, path, result.stderr)
        assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") and expected in lines[0], (dataset, path, lines[0])

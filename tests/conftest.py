"""Shared fixtures: a temporary workspace and a tiny hand-built dataset."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract import ARROW_SCHEMAS
from portrait.quiet import quiet_third_party
from portrait.settings import Settings


def ts(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def write_table(path: Path, table: str, rows: list[dict]) -> Path:
    schema = ARROW_SCHEMAS[table]
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


TINY_CUSTOMERS = [
    {"customer_id": "A", "signup_ts": ts("2024-01-01"), "region": "north", "channel": "organic"},
    {"customer_id": "B", "signup_ts": ts("2024-02-01"), "region": "south"},
    {"customer_id": "C", "signup_ts": ts("2024-05-20")},  # signed up, never bought, only browsed
    {"customer_id": "D", "signup_ts": ts("2024-07-01")},  # signs up after the snapshot
]


def _tx(
    order: str, cid: str, day: str, amount: float, qty: int = 1, cat: str = "toys", ret: bool = False
) -> dict:
    return {
        "order_id": order,
        "customer_id": cid,
        "ts": ts(day),
        "amount": amount,
        "quantity": qty,
        "category": cat,
        "is_return": ret,
    }


TINY_TRANSACTIONS = [
    _tx("o1", "A", "2024-01-10", 10.0),
    _tx("o1", "A", "2024-01-10", 5.0, cat="books"),  # second line of the same order
    _tx("o2", "A", "2024-03-05", 20.0),
    _tx("o3", "A", "2024-05-25", 30.0, cat="garden"),
    _tx("r1", "A", "2024-05-28", -10.0, qty=-1, cat="garden", ret=True),
    _tx("o4", "B", "2024-02-15", 100.0),
    _tx("o5", "D", "2024-07-02", 50.0),
]


def _ev(cid: str, day: str, kind: str, session: str, hour: int = 12) -> dict:
    return {
        "customer_id": cid,
        "ts": ts(day, hour),
        "event_type": kind,
        "category": "toys",
        "session_id": session,
    }


TINY_EVENTS = [
    _ev("A", "2024-05-25", "view", "s1", hour=11),
    _ev("A", "2024-05-25", "add_to_cart", "s1", hour=11),
    _ev("A", "2024-05-20", "campaign_click", "s0"),
    _ev("C", "2024-05-30", "view", "s2"),
    _ev("C", "2024-05-30", "view", "s2"),
    _ev("C", "2024-05-30", "add_to_cart", "s2"),
    _ev("C", "2024-05-31", "app_open", "s3"),
    _ev("B", "2024-01-01", "search", "s4"),
]

TINY_SNAPSHOT = ts("2024-06-01", hour=0)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh temporary workspace; PORTRAIT_HOME points at it for code that reads the environment."""
    monkeypatch.setenv("PORTRAIT_HOME", str(tmp_path))
    settings = Settings(home=tmp_path)
    settings.ensure_dirs()
    return settings


@pytest.fixture
def tiny_clean(workspace: Settings) -> Settings:
    """The tiny dataset written as validated ('clean') inputs of the workspace."""
    write_table(workspace.clean_dir / "customers.parquet", "customers", TINY_CUSTOMERS)
    write_table(workspace.clean_dir / "transactions.parquet", "transactions", TINY_TRANSACTIONS)
    write_table(workspace.clean_dir / "events.parquet", "events", TINY_EVENTS)
    return workspace


@pytest.fixture(autouse=True)
def _users_warning_filters() -> None:
    """The filters normal runs put first (``portrait.quiet``), in every test: pytest starts each test with its
    own filters, so a filter a module put in place at import would not hold in the tests after it."""
    quiet_third_party()


def online_store_down(*_: object, **__: object) -> None:
    """Stands in for ``FeatureStore.write_to_online_store`` while the online store is unreachable."""
    raise ConnectionError("online store unreachable")


def ci_required() -> bool:
    return bool(os.environ.get("CI"))


TESTS = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    """Feast's import puts ``simplefilter("once", DeprecationWarning)`` in front of every filter (see
    ``portrait.quiet``); imported inside a test module's collection it would go in front of the ``filterwarnings``
    of pyproject.toml too. Imported here, before any collection, it stays behind them.

    The own-data example's CSV files are generated, not committed: written here once, by the process that starts
    the run (before any xdist worker), as the README's ``python examples/own_data/generate.py`` does."""
    import feast  # noqa: F401

    if not hasattr(config, "workerinput"):
        import runpy

        runpy.run_path(str(TESTS.parent / "examples" / "own_data" / "generate.py"), run_name="__main__")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``make test`` runs ``pytest -n 2 --dist loadgroup``: each test folder (``tests/serving``,
    ``tests/cluster``, ...; the files directly in ``tests/`` form one more) runs on one worker, so its
    session-scoped workspaces (a trained service, a Spark session) are built once, while the other worker runs
    another folder (:mod:`tests.xdist_folders`)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.xdist_folders import FolderScheduling

    return FolderScheduling(config, log)

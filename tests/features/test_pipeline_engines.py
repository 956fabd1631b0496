"""The feature definitions: one snapshot (literals) == a snapshot table (cross join), exact window
boundaries, and the same definitions compile for Spark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import ibis
import ibis.config
import numpy as np
import pandas as pd
import pytest

from features.contract import ARROW_SCHEMAS
from features.pipeline import (
    VIEWS,
    compute_features,
    compute_features_frame,
    feature_expressions,
    orders_table,
    snapshot_label,
    snapshot_table,
)
from features.synth import SynthConfig, generate
from features.validate import validate_workspace
from portrait.settings import Settings
from tests.conftest import write_table

T = datetime(2024, 6, 1, tzinfo=UTC)


def _assert_same(left: pd.DataFrame, right: pd.DataFrame, label: str) -> None:
    left = left.sort_values("customer_id").reset_index(drop=True)
    right = right.sort_values("customer_id").reset_index(drop=True)
    assert list(left.customer_id) == list(right.customer_id), label
    for column in left.columns:
        a, b = left[column], right[column]
        if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
            np.testing.assert_allclose(
                a.to_numpy(float), b.to_numpy(float), rtol=1e-12, atol=1e-9, err_msg=f"{label}.{column}"
            )
        else:
            assert a.astype(object).tolist() == b.astype(object).tolist(), f"{label}.{column}"


def test_one_snapshot_equals_snapshot_table(workspace: Settings) -> None:
    """compute_features (one snapshot at a time, as literals) == the cross join with a snapshot table."""
    config = SynthConfig(n_customers=400, seed=3)
    generate(config, workspace.raw_dir)
    validate_workspace(workspace, now=config.end)
    snaps = [datetime(2024, 3, 15, tzinfo=UTC), config.end]
    build = compute_features(workspace.clean_dir, workspace.features_dir, snaps)
    frames = compute_features_frame(workspace.clean_dir, snaps)
    assert build.rows == sum((frames["customer_profile"].snapshot_ts == pd.Timestamp(s)).sum() for s in snaps)
    for view in VIEWS:
        for snap in snaps:
            written = pd.read_parquet(
                workspace.features_dir / view / f"snapshot={snapshot_label(snap)}.parquet"
            )
            written = written.drop(columns=["event_timestamp", "created_timestamp"])
            frame = frames[view]
            frame = frame[frame.snapshot_ts == pd.Timestamp(snap)].drop(columns="snapshot_ts")
            assert len(frame) > 0
            _assert_same(written, frame, f"{view}@{snap.date()}")


def _tx(order: str, cid: str, ts: datetime, amount: float = 10.0) -> dict:
    return {
        "order_id": order,
        "customer_id": cid,
        "ts": ts,
        "amount": amount,
        "quantity": 1,
        "category": "toys",
        "is_return": False,
    }


def _ev(cid: str, ts: datetime, kind: str, session: str | None) -> dict:
    return {"customer_id": cid, "ts": ts, "event_type": kind, "category": None, "session_id": session}


@pytest.fixture
def boundaries(workspace: Settings) -> Settings:
    """Rows exactly on the window edges (ages of exactly 7, 30 and 60 days, clicks + 7 days)."""
    d = timedelta(days=1)
    customers = [{"customer_id": c, "signup_ts": T - 400 * d, "region": None} for c in ("E", "F", "G", "H")]
    transactions = [
        # E: orders 100, 40 and 30 days before T (gaps 60 and 10 days); one at T and one after: never seen.
        _tx("e1", "E", T - 100 * d),
        _tx("e2", "E", T - 40 * d),
        _tx("e3", "E", T - 30 * d),
        _tx("e4", "E", T),
        _tx("e5", "E", T + d),
        # F: an order exactly 7 days after the first click, one 7 days + 1 second after the second click.
        _tx("f1", "F", T - 20 * d),
        _tx("f2", "F", T - 3 * d + timedelta(seconds=1)),
        # G: an order at the very instant of the click (counts), H: the only order after T (does not).
        _tx("g1", "G", T - 5 * d),
        _tx("h1", "H", T + timedelta(hours=1)),
    ]
    events = [
        # E: a session spanning the 7-day edge (one session in both windows), one exactly 7 days old (not
        # within 7 days), one exactly 30 days old (prev30, not 30d), events without a session id.
        _ev("E", T - 8 * d, "view", "s1"),
        _ev("E", T - 6 * d, "view", "s1"),
        _ev("E", T - 7 * d, "view", "s2"),
        _ev("E", T - 30 * d, "add_to_cart", "s3"),
        _ev("E", T - 60 * d, "view", "s4"),
        _ev("E", T - timedelta(hours=1), "search", None),
        _ev("E", T, "add_to_cart", "s5"),  # at the snapshot: not before it
        # F: two clicks.
        _ev("F", T - 27 * d, "campaign_click", "f1"),
        _ev("F", T - 10 * d, "campaign_click", "f2"),
        # G: one click, the order at the same instant; H: a click, the order only after T.
        _ev("G", T - 5 * d, "campaign_click", "g1"),
        _ev("H", T - timedelta(hours=1), "campaign_click", "h1"),
    ]
    write_table(workspace.clean_dir / "customers.parquet", "customers", customers)
    write_table(workspace.clean_dir / "transactions.parquet", "transactions", transactions)
    write_table(workspace.clean_dir / "events.parquet", "events", events)
    return workspace


@pytest.mark.parametrize("single", [True, False], ids=["literal", "table"])
def test_window_edges(boundaries: Settings, single: bool) -> None:
    if single:
        compute_features(boundaries.clean_dir, boundaries.features_dir, [T])
        out = {
            v: pd.read_parquet(boundaries.features_dir / v / f"snapshot={snapshot_label(T)}.parquet")
            for v in VIEWS
        }
    else:
        out = compute_features_frame(boundaries.clean_dir, [T])
    tx = out["customer_transactions"].set_index("customer_id")
    bh = out["customer_behaviour"].set_index("customer_id")

    e = tx.loc["E"]
    assert e.orders_lifetime == 3
    assert e.orders_30d == 0 and e.orders_90d == 2  # 30 days old is not "within 30 days"
    assert e.recency_days == pytest.approx(30.0) and e.first_purchase_days == pytest.approx(100.0)
    assert e.ipt_mean_days == pytest.approx(35.0)  # gaps 60 and 10 days, none to the orders at/after T
    assert e.ipt_std_days == pytest.approx(np.std([60.0, 10.0], ddof=1))
    assert e.orders_trend_30d == pytest.approx(-1.0)  # 0 in the last 30 days, 2 in the 30 before

    eb = bh.loc["E"]
    assert eb.sessions_7d == 1  # s1 (6 days old); s2 is exactly 7 days old
    assert eb.sessions_30d == 2  # s1, s2; s3 is exactly 30 days old, the search has no session
    assert eb.events_30d == 4 and eb.view_30d == 3 and eb.search_30d == 1
    assert eb.add_to_cart_30d == 0 and eb.add_to_cart_90d == 1
    assert eb.days_since_last_event == pytest.approx(1 / 24)
    assert eb.days_since_last_cart == pytest.approx(30.0)  # the cart at T is not before T
    # The previous 30 days hold the 30-day-old cart, not the view exactly 60 days old.
    assert eb.events_trend_30d == pytest.approx((4 - 1) / (4 + 1))

    f = bh.loc["F"]
    assert f.campaign_click_90d == 2
    assert f.campaign_response_90d == pytest.approx(0.5)  # exactly 7 days: yes; 7 days + 1 s: no
    assert bh.loc["G"].campaign_response_90d == pytest.approx(1.0)
    assert bh.loc["H"].campaign_response_90d == pytest.approx(0.0)
    assert tx.loc["H"].orders_lifetime == 0


def test_definitions_compile_for_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same expressions compile to Spark SQL (without Spark installed): nothing DuckDB-only."""

    class SparkOptions(ibis.config.Config):  # what ``ibis.pyspark`` registers when pyspark is imported
        treat_nan_as_null: bool = False

    monkeypatch.setattr(ibis.options, "pyspark", SparkOptions())
    tables = {name: ibis.table(ibis.Schema.from_pyarrow(s), name=name) for name, s in ARROW_SCHEMAS.items()}
    for snaps in (snapshot_table([T, T + timedelta(days=7)]), T):
        exprs = feature_expressions(tables["customers"], tables["transactions"], tables["events"], snaps)
        for view, expr in {**exprs, "orders": orders_table(tables["transactions"])}.items():
            sql = ibis.to_sql(expr, dialect="pyspark")
            assert sql.lstrip().startswith(("SELECT", "WITH")), view
            assert "EPOCH(" not in sql.upper(), view

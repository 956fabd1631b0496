"""The feature pipeline: values equal hand computation, and no leakage across the snapshot."""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd
import pytest

from features.pipeline import compute_features_frame
from tests.conftest import (
    TINY_CUSTOMERS,
    TINY_EVENTS,
    TINY_SNAPSHOT,
    TINY_TRANSACTIONS,
    _ev,
    _tx,
    write_table,
)


def _row(frame: pd.DataFrame, cid: str) -> pd.Series:
    rows = frame[frame.customer_id == cid]
    assert len(rows) == 1, f"expected one row for {cid}, got {len(rows)}"
    return rows.iloc[0]


def test_features_match_hand_computation(tiny_clean):
    out = compute_features_frame(tiny_clean.clean_dir, [TINY_SNAPSHOT])
    profile, tx, bh = out["customer_profile"], out["customer_transactions"], out["customer_behaviour"]

    # D signed up after the snapshot: no row anywhere.
    assert set(profile.customer_id) == {"A", "B", "C"}
    assert set(tx.customer_id) == {"A", "B", "C"}

    a = _row(tx, "A")
    # Orders before 2024-06-01: o1 (15.0, 2024-01-10 12:00), o2 (20.0, 03-05), o3 (30.0, 05-25).
    assert a.orders_lifetime == 3
    assert a.spend_lifetime == pytest.approx(65.0)
    assert a.avg_order_value == pytest.approx(65.0 / 3)
    assert a.recency_days == pytest.approx(6.5)  # 05-25 12:00 -> 06-01 00:00
    assert a.orders_7d == 1 and a.spend_7d == pytest.approx(30.0)
    assert a.orders_30d == 1 and a.orders_90d == 2 and a.orders_365d == 3
    gaps = [55.0, 81.0]  # 01-10 -> 03-05, 03-05 -> 05-25
    assert a.ipt_mean_days == pytest.approx(sum(gaps) / 2)
    assert a.ipt_std_days == pytest.approx(pd.Series(gaps).std())
    assert a.return_rate_365d == pytest.approx(10.0 / 65.0)
    assert a.categories_365d == 3  # toys, books, garden
    assert a.orders_trend_30d == pytest.approx(1.0)  # 1 order in the last 30 days, 0 in the 30 before

    c = _row(tx, "C")  # never bought: zero counts, unknown recency
    assert c.orders_lifetime == 0 and c.spend_90d == 0
    assert math.isnan(c.recency_days)

    assert _row(profile, "A").tenure_days == pytest.approx(151.5)
    assert _row(profile, "A").region == "north"
    assert _row(profile, "C").region == "unknown"

    cb = _row(bh, "C")
    assert cb.view_30d == 2 and cb.add_to_cart_30d == 1 and cb.app_open_30d == 1
    assert cb.sessions_7d == 2
    assert cb.view_to_cart_rate_90d == pytest.approx(0.5)
    assert cb.cart_to_purchase_rate_90d == pytest.approx(0.0)
    assert cb.days_since_last_event == pytest.approx(0.5)
    ab = _row(bh, "A")
    assert ab.campaign_click_90d == 1
    assert ab.campaign_response_90d == pytest.approx(1.0)  # clicked 05-20, ordered 05-25
    assert ab.cart_to_purchase_rate_90d == pytest.approx(2.0)  # 2 orders in 90 days / 1 cart
    b = _row(bh, "B")
    assert b.events_30d == 0 and b.search_90d == 0  # the search was 151.5 days ago
    assert b.days_since_last_event == pytest.approx(151.5)  # 2024-01-01 12:00 -> 06-01 (leap year)


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(seconds=1), timedelta(days=3)])
def test_rows_at_or_after_snapshot_never_change_it(tiny_clean, offset):
    before = compute_features_frame(tiny_clean.clean_dir, [TINY_SNAPSHOT])
    when = (TINY_SNAPSHOT + offset).date().isoformat()
    extra_tx = [*TINY_TRANSACTIONS, _tx("late", "A", when, 999.0, cat="late"), _tx("late2", "C", when, 5.0)]
    extra_ev = [*TINY_EVENTS, _ev("A", when, "add_to_cart", "late"), _ev("B", when, "view", "late")]
    # An order exactly at the snapshot instant, too.
    exact = dict(extra_tx[-1], order_id="exact", ts=TINY_SNAPSHOT + offset)
    write_table(tiny_clean.clean_dir / "transactions.parquet", "transactions", [*extra_tx, exact])
    write_table(tiny_clean.clean_dir / "events.parquet", "events", extra_ev)
    after = compute_features_frame(tiny_clean.clean_dir, [TINY_SNAPSHOT])
    for view, frame in before.items():
        left = frame.sort_values("customer_id").reset_index(drop=True)
        right = after[view].sort_values("customer_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(left, right, check_like=True)


def test_multiple_snapshots_are_independent(tiny_clean):
    later = TINY_SNAPSHOT + timedelta(days=60)
    both = compute_features_frame(tiny_clean.clean_dir, [TINY_SNAPSHOT, later])["customer_transactions"]
    alone = compute_features_frame(tiny_clean.clean_dir, [TINY_SNAPSHOT])["customer_transactions"]
    first = both[both.snapshot_ts == both.snapshot_ts.min()].sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        first, alone.sort_values("customer_id").reset_index(drop=True), check_like=True
    )
    # D (signed up 07-01, bought 07-02) appears at the later snapshot only.
    assert "D" in set(both[both.snapshot_ts == both.snapshot_ts.max()].customer_id)


def test_lifetime_activity_and_expected_events_missed(tiny_clean):
    """Lifetime events, days since the first event and the events expected since the last one at the
    customer's own pace, from rows strictly before the snapshot only."""
    late = [
        _ev("A", "2024-06-01", "view", "late", hour=0),  # exactly at the snapshot: not before it
        _ev("A", "2024-06-02", "view", "late"),
        _ev("C", "2024-06-05", "app_open", "late"),
    ]
    customers = [*TINY_CUSTOMERS, {"customer_id": "E", "signup_ts": TINY_SNAPSHOT - timedelta(days=30)}]
    write_table(tiny_clean.clean_dir / "customers.parquet", "customers", customers)
    write_table(tiny_clean.clean_dir / "events.parquet", "events", [*TINY_EVENTS, *late])
    bh = compute_features_frame(tiny_clean.clean_dir, [TINY_SNAPSHOT])["customer_behaviour"]

    # A: 05-20 12:00, then two events on 05-25 11:00; the snapshot is 06-01 00:00.
    a = _row(bh, "A")
    assert a.events_lifetime == 3
    assert a.first_event_days == pytest.approx(11.5)
    assert a.days_since_last_event == pytest.approx(6 + 13 / 24)
    assert a.expected_events_missed == pytest.approx(3 * (6 + 13 / 24) / 11.5)
    # B: a single event 151.5 days ago: its own pace expected exactly that one event since.
    b = _row(bh, "B")
    assert b.events_lifetime == 1 and b.first_event_days == pytest.approx(151.5)
    assert b.expected_events_missed == pytest.approx(1.0)
    # C: three events on 05-30 12:00, one on 05-31 12:00 (the one after the snapshot does not count).
    c = _row(bh, "C")
    assert c.events_lifetime == 4 and c.first_event_days == pytest.approx(1.5)
    assert c.expected_events_missed == pytest.approx(4 * 0.5 / 1.5)
    # E: no events at all: a zero count, the span and the expected events missed unknown.
    e = _row(bh, "E")
    assert e.events_lifetime == 0
    assert math.isnan(e.first_event_days) and math.isnan(e.expected_events_missed)

"""Real-time features: one definition for the stream and the batch, a durable exactly-once landing zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features import realtime
from features.landing import Landing, export_raw
from features.validate import validate_workspace
from portrait.settings import Settings
from tests.conftest import online_store_down

T0 = datetime(2024, 5, 31, 23, 0, tzinfo=UTC)


def _event(cid: str, minutes: float, kind: str = "view", session: str = "s", **extra: object) -> dict:
    return {
        "customer_id": cid,
        "ts": (T0 + timedelta(minutes=minutes)).isoformat(),
        "event_type": kind,
        "category": "toys",
        "session_id": session,
        **extra,
    }


def _order(cid: str, minutes: float, order: str, amount: float = 10.0) -> dict:
    return {
        "order_id": order,
        "customer_id": cid,
        "ts": (T0 + timedelta(minutes=minutes)).isoformat(),
        "amount": amount,
        "quantity": 1,
        "category": "toys",
        "is_return": False,
    }


EVENTS = [
    _event("A", 0),
    _event("A", 10, "add_to_cart"),
    _event("A", 70, "view"),  # 00:10 next day: 'today' restarts at midnight
    _event("C", 5),
    _event("C", 100, "add_to_cart"),  # a second session (gap > 30 min)
    _event("C", 110),
]
ORDERS = [_order("A", 80, "o-rt-1"), _order("B", 20, "o-rt-2")]
AT = T0 + timedelta(minutes=120)


def test_fold_counts_windows_times_and_sessions() -> None:
    events = pd.DataFrame(EVENTS)
    events["ts"] = pd.to_datetime(events.ts, utc=True)
    orders = pd.DataFrame(ORDERS)
    orders["ts"] = pd.to_datetime(orders.ts, utc=True)
    got = realtime.fold(realtime.activity(events, orders), AT).set_index("customer_id")
    a = got.loc["A"]
    assert (a.events_1h, a.carts_1h, a.purchases_1h) == (1, 0, 1)  # 01:10 view; cart at 23:10 is > 1 h ago
    assert (a.events_today, a.purchases_today) == (1, 1)  # after midnight: the 00:10 view and the order
    assert a.last_cart_ts == pytest.approx((T0 + timedelta(minutes=10)).timestamp())
    assert a.session_minutes == 0.0  # last event 50 min before AT: idle longer than the 30-min gap
    c = got.loc["C"]
    assert c.session_minutes == pytest.approx(10.0)  # the second session: 00:40 .. 00:50
    assert (c.carts_1h, c.events_1h) == (1, 2)
    assert got.loc["B"].last_purchase_ts == pytest.approx((T0 + timedelta(minutes=20)).timestamp())
    assert pd.isna(got.loc["B"].last_event_ts)


def test_the_stream_and_the_batch_give_the_same_features(tiny_clean: Settings) -> None:
    landing = Landing(tiny_clean)
    for event in EVENTS:  # one at a time, as a stream delivers them
        result = realtime.ingest(tiny_clean, [event], landing=landing, now=AT)
        assert result.accepted == 1, result.rejected
    assert realtime.ingest(tiny_clean, transactions=ORDERS, landing=landing, now=AT).accepted == 2
    streamed = realtime.fold(realtime.state_frame(landing, ["A", "B", "C"], AT), AT)
    events = pd.DataFrame(EVENTS)
    events["ts"] = pd.to_datetime(events.ts, utc=True)
    orders = pd.DataFrame(ORDERS)
    orders["ts"] = pd.to_datetime(orders.ts, utc=True)
    batch = realtime.fold(realtime.activity(events, orders), AT)
    pd.testing.assert_frame_equal(
        streamed.set_index("customer_id").sort_index(), batch.set_index("customer_id").sort_index()
    )


def test_a_retried_batch_is_not_counted_twice(tiny_clean: Settings) -> None:
    landing = Landing(tiny_clean)
    batch = [_event("A", 1, event_id="e-1"), _event("A", 2, event_id="e-2")]
    first = realtime.ingest(tiny_clean, batch, landing=landing, now=AT)
    again = realtime.ingest(tiny_clean, batch, landing=Landing(tiny_clean), now=AT)
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (0, 2)
    assert landing.count("event") == 2


def test_bad_items_are_rejected_with_the_validators_reason(tiny_clean: Settings) -> None:
    items = [
        _event("A", 1),
        _event("A", 2, "teleport"),
        _event("nobody", 3),
        {**_event("A", 4), "ts": (datetime.now(UTC) + timedelta(days=3)).isoformat()},
        {**_event("A", 5), "ts": "not a time"},
    ]
    result = realtime.ingest(tiny_clean, items, now=datetime.now(UTC))
    assert result.accepted == 1
    assert dict(result.rejected) == {
        1: "unknown_event_type",
        2: "unknown_customer",
        3: "future_timestamp",
        4: "unparseable_timestamp",
    }


def test_landed_rows_reach_the_next_batch_validation(tiny_clean: Settings) -> None:
    # The tiny workspace's inputs as raw files, then one event and one order landed in real time.
    for table in ("customers", "transactions", "events"):
        (tiny_clean.raw_dir / f"{table}.parquet").write_bytes(
            (tiny_clean.clean_dir / f"{table}.parquet").read_bytes()
        )
    baseline = validate_workspace(tiny_clean, now=AT)
    before = {"events": baseline.events.accepted, "transactions": baseline.transactions.accepted}
    realtime.ingest(tiny_clean, [_event("C", 1, "add_to_cart")], [_order("C", 2, "o-rt-9")], now=AT)
    assert export_raw(tiny_clean) == {"events": 1, "transactions": 1}
    report = validate_workspace(tiny_clean, now=AT)
    assert report.events.accepted == before["events"] + 1
    assert report.transactions.accepted == before["transactions"] + 1
    events = pq.read_table(tiny_clean.clean_dir / "events.parquet").to_pandas()
    assert ((events.customer_id == "C") & (events.event_type == "add_to_cart")).sum() == 2
    validate_workspace(tiny_clean, now=AT)  # idempotent: landed rows are not added twice
    assert pq.read_metadata(tiny_clean.clean_dir / "events.parquet").num_rows == before["events"] + 1


def test_a_batch_of_only_bad_items_is_answered_item_by_item(tiny_clean: Settings) -> None:
    result = realtime.ingest(tiny_clean, [{"ts": AT.isoformat(), "event_type": "view"}], now=AT)
    assert result.accepted == 0 and result.rejected == [(0, "missing_customer_id")]


def test_a_batch_whose_push_failed_reaches_the_online_store_when_delivered_again(
    tiny_clean: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Landed, then the push failed (the online store was down, or the process died between the two): the
    redelivered batch is all duplicates, and must still update the customer's real-time features."""
    from features import repo

    store = repo.ensure_applied(tiny_clean)  # a fresh workspace: the real-time view gets registered
    now = datetime.now(UTC).replace(microsecond=0)
    batch = [
        {**_event("A", 0, "add_to_cart", event_id="p-1"), "ts": (now - timedelta(minutes=5)).isoformat()},
        {**_event("A", 0, event_id="p-2"), "ts": (now - timedelta(minutes=4)).isoformat()},
    ]

    with monkeypatch.context() as patch:
        patch.setattr(store, "write_to_online_store", online_store_down)
        with pytest.raises(ConnectionError):
            realtime.ingest(tiny_clean, batch, store=store)
    view = store.get_feature_view(realtime.VIEW)
    assert realtime.read_online(store, view, ["A"]) == [None]  # landed, never pushed
    again = realtime.ingest(tiny_clean, batch, store=store)
    assert (again.accepted, again.duplicates) == (0, 2)
    row = realtime.read_online(store, view, ["A"])[0]
    assert row is not None and row.values["carts_1h"] == 1 and row.values["events_1h"] == 2


def test_a_redelivered_event_pushes_the_customer_it_landed_for(
    tiny_clean: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A duplicate is not validated again, so its customer is the one stored with it, not the retry's."""
    from features import repo

    store = repo.ensure_applied(tiny_clean)
    now = datetime.now(UTC).replace(microsecond=0)
    event = {**_event("A", 0, "add_to_cart", event_id="r-1"), "ts": (now - timedelta(minutes=3)).isoformat()}
    with monkeypatch.context() as patch:
        patch.setattr(store, "write_to_online_store", online_store_down)
        with pytest.raises(ConnectionError):
            realtime.ingest(tiny_clean, [event], store=store)
    again = realtime.ingest(tiny_clean, [{**event, "customer_id": "B"}], store=store)
    assert (again.accepted, again.duplicates) == (0, 1)
    view = store.get_feature_view(realtime.VIEW)
    a, b = realtime.read_online(store, view, ["A", "B"])
    assert a is not None and a.values["carts_1h"] == 1
    assert b is None


def test_a_stream_batch_that_cannot_be_stored_is_one_error_line_and_left_unacknowledged(
    tiny_clean: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from faststream.exceptions import NackMessage

    from features import repo, stream

    store = repo.ensure_applied(tiny_clean)

    monkeypatch.setattr(store, "write_to_online_store", online_store_down)
    now = datetime.now(UTC).replace(microsecond=0)
    message = {"kind": "event", **_event("A", 0, event_id="n-1"), "ts": now.isoformat()}
    with caplog.at_level("ERROR", logger="features.stream"), pytest.raises(NackMessage):
        stream.handle(tiny_clean, [message], store, Landing(tiny_clean))
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "online store unreachable" in errors[0] and "delivered again" in errors[0]
    assert not any(r.exc_info for r in caplog.records)  # no traceback

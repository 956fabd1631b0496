"""Real-time features: one definition, computed per event for the online store and per snapshot in batch.

:func:`fold` turns a customer's activity (behavioural events and purchases) into the streaming features
as of a time ``at``: events, add-to-carts and purchases in the last hour and since midnight (UTC), the
times of the last event, add-to-cart and purchase, and the length of the current session (events no more
than ``session_gap_minutes`` apart, ending at the last event; 0 once the customer has been idle longer).

* **Streaming**: :func:`ingest` validates a batch of events / transactions with the batch validator's
  rules, appends the accepted ones to the landing zone (:mod:`features.landing`: durable, exactly once),
  folds each touched customer's landed activity of the last day, and pushes the result to the online
  store through the Feast push source ``customer_realtime_push``. Customers of duplicate items are pushed
  again: a batch landed before whose push failed reaches the online store when it is delivered again.
* **Batch**: :func:`build_table` folds the validated history at a snapshot into the feature table
  ``customer_realtime`` (the push source's batch source), so materialization and training frames see the
  same definition.

The view is read by serving next to the batch features (:func:`read_online`); :func:`realtime_tags` and
:func:`fresher_features` are what serving derives from it.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract import ARROW_SCHEMAS
from features.landing import Item, Landing, event_id, line_id
from features.tables import snapshot_path
from portrait.files import atomic_path
from portrait.settings import Settings

logger = logging.getLogger(__name__)

VIEW = "customer_realtime"
PUSH_SOURCE = "customer_realtime_push"
COUNT_FEATURES = ("events_1h", "carts_1h", "purchases_1h", "events_today", "carts_today", "purchases_today")
TIME_FEATURES = ("last_event_ts", "last_cart_ts", "last_purchase_ts")
FEATURES = (*COUNT_FEATURES, *TIME_FEATURES, "session_minutes")
"""The view's features: counts (int), epoch seconds (float, NaN when none) and minutes (float)."""
SESSION_GAP_MINUTES = 30
STATE_WINDOW = timedelta(days=1)
"""How much landed activity per customer the streaming fold needs (the longest window is 'today')."""


# ---- the one definition ---------------------------------------------------------------------------------
def activity(events: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Contract-shaped events and transactions as one activity frame: ``customer_id, ts, kind`` with
    kind ``event`` (any event), ``cart`` (an add-to-cart event, counted as an event too) or ``purchase``
    (one per order, at its first line; returns are not purchases)."""
    parts = []
    if len(events):
        ev = events[["customer_id", "ts", "event_type"]]
        parts.append(pd.DataFrame({"customer_id": ev.customer_id, "ts": ev.ts, "kind": "event"}))
        carts = ev[ev.event_type == "add_to_cart"]
        parts.append(pd.DataFrame({"customer_id": carts.customer_id, "ts": carts.ts, "kind": "cart"}))
    if len(transactions):
        tx = transactions[~transactions.is_return.astype(bool)]
        orders = tx.groupby(["customer_id", "order_id"], as_index=False, observed=True).ts.min()
        parts.append(pd.DataFrame({"customer_id": orders.customer_id, "ts": orders.ts, "kind": "purchase"}))
    if not parts:
        return pd.DataFrame({"customer_id": pd.Series(dtype=object), "ts": pd.Series(dtype="datetime64[ns, UTC]"),
                             "kind": pd.Series(dtype=object)})  # fmt: skip
    out = pd.concat(parts, ignore_index=True)
    out["ts"] = pd.to_datetime(out["ts"], utc=True)
    return out


def fold(
    acts: pd.DataFrame, at: datetime, *, session_gap_minutes: float = SESSION_GAP_MINUTES
) -> pd.DataFrame:
    """The real-time features of every customer in ``acts`` as of ``at`` (activity after ``at`` ignored).

    One row per customer: ``customer_id``, :data:`FEATURES` and ``event_timestamp`` (the customer's last
    activity up to ``at``: when these values last changed).
    """
    at_ts = pd.Timestamp(at).tz_convert(UTC) if pd.Timestamp(at).tzinfo else pd.Timestamp(at, tz=UTC)
    acts = acts[acts.ts <= at_ts]
    if acts.empty:
        return pd.DataFrame(
            {
                "customer_id": pd.Series(dtype=object),
                **{name: pd.Series(dtype="int64") for name in COUNT_FEATURES},
                **{name: pd.Series(dtype="float64") for name in (*TIME_FEATURES, "session_minutes")},
                "event_timestamp": pd.Series(dtype="datetime64[us, UTC]"),
            }
        )
    hour = acts.ts > at_ts - pd.Timedelta(hours=1)
    today = acts.ts >= at_ts.normalize()
    frame = pd.DataFrame({"customer_id": acts.customer_id.to_numpy()})
    for kind, name in (("event", "events"), ("cart", "carts"), ("purchase", "purchases")):
        is_kind = (acts.kind == kind).to_numpy()
        frame[f"{name}_1h"] = (is_kind & hour.to_numpy()).astype(np.int64)
        frame[f"{name}_today"] = (is_kind & today.to_numpy()).astype(np.int64)
    seconds = acts.ts.astype("int64").to_numpy() / 1e9
    for kind, name in (
        ("event", "last_event_ts"),
        ("cart", "last_cart_ts"),
        ("purchase", "last_purchase_ts"),
    ):
        frame[name] = np.where((acts.kind == kind).to_numpy(), seconds, np.nan)
    frame["_ts"] = seconds
    grouped = frame.groupby("customer_id", sort=True)
    out = grouped[list(COUNT_FEATURES)].sum()
    out[list(TIME_FEATURES)] = grouped[list(TIME_FEATURES)].max()
    out["event_timestamp"] = pd.to_datetime(grouped["_ts"].max(), unit="s", utc=True).dt.round("us")
    out["session_minutes"] = _session_minutes(
        acts[acts.kind == "event"], out.index, at_ts, session_gap_minutes
    )
    out = out.reset_index()
    return out[["customer_id", *FEATURES, "event_timestamp"]]


def _session_minutes(
    events: pd.DataFrame, customers: pd.Index, at: pd.Timestamp, gap_minutes: float
) -> np.ndarray:
    """Minutes from the start of each customer's current session to its last event (0 when idle)."""
    result = pd.Series(0.0, index=customers)
    if events.empty:
        return result.to_numpy()
    ev = events.sort_values(["customer_id", "ts"])
    seconds = ev.ts.astype("int64").to_numpy() / 1e9
    same = ev.customer_id.to_numpy()[1:] == ev.customer_id.to_numpy()[:-1]
    gap = np.diff(seconds) > gap_minutes * 60
    starts = np.concatenate([[True], ~same | gap])
    session = np.cumsum(starts)
    frame = pd.DataFrame({"customer_id": ev.customer_id.to_numpy(), "session": session, "s": seconds})
    last = frame.groupby("customer_id").agg(session=("session", "last"), end=("s", "max"))
    begin = frame.groupby("session").s.min()
    minutes = (last.end - begin.reindex(last.session).to_numpy()) / 60.0
    active = last.end >= at.timestamp() - gap_minutes * 60
    result.loc[last.index] = np.where(active, minutes, 0.0)
    return result.to_numpy()


# ---- batch -----------------------------------------------------------------------------------------------
def build_table(clean_dir: Path, features_dir: Path, snapshot: datetime) -> Path:
    """The real-time features of every customer with activity in the day before ``snapshot``, folded from
    the validated history at ``snapshot`` (activity at or after it excluded), as the view's feature table."""
    since = snapshot - STATE_WINDOW
    events = _read(clean_dir / "events.parquet", since, snapshot)
    transactions = _read(clean_dir / "transactions.parquet", since, snapshot)
    frame = fold(activity(events, transactions), snapshot - timedelta(microseconds=1))
    frame[list(COUNT_FEATURES)] = frame[list(COUNT_FEATURES)].astype("int64")
    frame[[*TIME_FEATURES, "session_minutes"]] = frame[[*TIME_FEATURES, "session_minutes"]].astype("float64")
    # Microsecond timestamps, as the pipeline's tables (Feast's DuckDB offline store cannot cast ns).
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    frame["created_timestamp"] = pd.Series(pd.Timestamp(datetime.now(UTC)), index=frame.index).astype(
        "datetime64[us, UTC]"
    )
    target = snapshot_path(features_dir, VIEW, snapshot)
    schema = pa.schema(
        [
            ("customer_id", pa.string()),
            *((name, pa.int64()) for name in COUNT_FEATURES),
            *((name, pa.float64()) for name in (*TIME_FEATURES, "session_minutes")),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created_timestamp", pa.timestamp("us", tz="UTC")),
        ]
    )
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)  # typed even when empty: DuckDB reads every snapshot with one schema
    return target


def _read(path: Path, since: datetime, until: datetime) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame()
    table = pq.read_table(path, filters=[("ts", ">=", since), ("ts", "<", until)])
    return table.to_pandas()


# ---- streaming -------------------------------------------------------------------------------------------
@dataclass
class IngestResult:
    """What happened to each item of a batch, in order: accepted (new), duplicate or rejected (reason)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)


def _items_frame(table: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    schema = ARROW_SCHEMAS[table]
    columns = {f.name: [None if r.get(f.name) is None else str(r.get(f.name)) for r in rows] for f in schema}
    return pa.table(columns, schema=pa.schema([(f.name, pa.string()) for f in schema]))


def validate_items(
    settings: Settings, table: str, rows: Sequence[Mapping[str, Any]], now: datetime | None = None
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Check ``rows`` with the batch validator's rules (:func:`features.validate.validate_table`, known
    customers from the workspace's clean customers): the accepted rows (contract-typed, in input order)
    and ``{input position: reason}`` for the rejected ones."""
    from features.validate import validate_table

    if not rows:
        return [], {}
    with tempfile.TemporaryDirectory(prefix="portrait-ingest-") as tmp:
        folder = Path(tmp)
        source = folder / f"{table}.parquet"
        pq.write_table(_items_frame(table, rows), source)
        known = settings.clean_dir / "customers.parquet"
        validate_table(
            table,
            source,
            clean_path=folder / "clean.parquet",
            quarantine_path=folder / "quarantine.parquet",
            now=now,
            known_customers=known if known.exists() else None,
            allow_empty=True,
            threads=1,
            require_usable=False,
        )
        quarantined = pq.read_table(
            folder / "quarantine.parquet", columns=["reason", "source_row"]
        ).to_pylist()
        clean = pq.read_table(folder / "clean.parquet").to_pylist()
    rejected = {int(r["source_row"]): str(r["reason"]) for r in quarantined}
    # The validator does not keep row order: match accepted rows back to their input position.
    by_key: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        if i not in rejected:
            by_key.setdefault(_key(table, row), []).append(i)
    ordered: list[tuple[int, dict[str, Any]]] = []
    for row in clean:
        positions = by_key.get(_key(table, row))
        ordered.append((positions.pop(0) if positions else len(rows), row))
    return [row for _, row in sorted(ordered, key=lambda p: p[0])], rejected


def _key(table: str, row: Mapping[str, Any]) -> tuple:
    ts = pd.Timestamp(row["ts"])
    ts = ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)
    if table == "events":
        return (str(row["customer_id"]), ts.value, str(row["event_type"]))
    return (str(row["customer_id"]), ts.value, str(row["order_id"]))


def ingest(
    settings: Settings,
    events: Sequence[Mapping[str, Any]] = (),
    transactions: Sequence[Mapping[str, Any]] = (),
    *,
    store: Any = None,
    landing: Landing | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Validate, land (exactly once) and push a batch; see the module docstring.

    Event ids: an item's ``event_id`` when given, else a hash of its fields; transaction lines are keyed by
    ``order_id`` and ``line`` (default 0). Positions in ``rejected`` count events first, then transactions.
    """
    landing = landing or Landing(settings)
    result = IngestResult()
    landed: list[Item] = []
    # Items whose explicit id has landed already (a retry, a redelivery) need no validation.
    given = [str(e["event_id"]) for e in events if e.get("event_id")]
    seen = landing.existing("event", given) if given else {}
    if seen:
        result.duplicates += sum(1 for e in events if e.get("event_id") and str(e["event_id"]) in seen)
    for offset, table, rows in ((0, "events", events), (len(events), "transactions", transactions)):
        keep = [
            i for i, r in enumerate(rows) if table != "events" or str(r.get("event_id") or "") not in seen
        ]
        accepted, rejected_kept = validate_items(settings, table, [rows[i] for i in keep], now)
        rejected = {keep[i]: reason for i, reason in rejected_kept.items()}
        rows = [rows[i] for i in keep] if len(keep) != len(rows) else rows
        position = keep
        result.rejected += [(offset + i, reason) for i, reason in sorted(rejected.items())]
        good = [j for j, i in enumerate(position) if i not in rejected]
        for j, row in zip(good, accepted, strict=False):
            explicit = rows[j].get("event_id") if table == "events" else None
            item_id = (
                str(explicit)
                if explicit
                else (event_id(row) if table == "events" else line_id(row, int(rows[j].get("line") or 0)))
            )
            kind = "event" if table == "events" else "transaction"
            landed.append(
                Item(kind, item_id, str(row["customer_id"]), pd.Timestamp(row["ts"]).to_pydatetime(), row)
            )  # type: ignore[arg-type]
    new = landing.append(landed)
    result.accepted = sum(new)
    result.duplicates += len(new) - result.accepted
    customers = sorted({item.customer_id for item, is_new in zip(landed, new, strict=True) if is_new})
    result.customers = customers
    # Customers of items landed before are pushed again: a batch redelivered because its push failed (or its
    # process died between landing and push) must still reach the online store.
    again = {item.customer_id for item, is_new in zip(landed, new, strict=True) if not is_new}
    again |= set(seen.values())  # as landed (the retried request's own customer_id is not validated again)
    if (customers or again) and store is not None:
        push(settings, store, landing, sorted({*customers, *again}))
    return result


def state_frame(landing: Landing, customers: Sequence[str], at: datetime) -> pd.DataFrame:
    """The touched customers' landed activity of the last :data:`STATE_WINDOW`, as :func:`activity` rows."""
    import json

    recent = landing.recent(customers, at - STATE_WINDOW)
    events = [json.loads(r) for r in recent[recent.kind == "event"].row_json]
    txs = [json.loads(r) for r in recent[recent.kind == "transaction"].row_json]
    ev = pd.DataFrame(events, columns=["customer_id", "ts", "event_type"]) if events else pd.DataFrame()
    tx = pd.DataFrame(txs, columns=["customer_id", "ts", "order_id", "is_return"]) if txs else pd.DataFrame()
    for frame in (ev, tx):
        if len(frame):
            frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return activity(ev, tx)


def push(settings: Settings, store: Any, landing: Landing, customers: Sequence[str]) -> int:
    """Fold the customers' landed activity as of now and push it to the online store (Feast push)."""
    now = datetime.now(UTC)
    acts = state_frame(landing, customers, now)
    latest = acts.ts.max() if len(acts) else pd.Timestamp(now)
    frame = fold(acts, max(now, latest.to_pydatetime()))
    if frame.empty:
        return 0
    frame["created_timestamp"] = pd.Timestamp(now).floor("us")
    # What ``store.push(PUSH_SOURCE, frame)`` does for the one view the push source feeds, without its
    # last step: Feast 0.67's push then lists (deserialises) every feature service to re-precompute the
    # ones with ``precompute_online`` -- none in Portrait -- which cost 0.14 s of every 500-event batch.
    store.write_to_online_store(VIEW, frame)
    return len(frame)


# ---- serving ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealtimeRow:
    """One customer's real-time features as read from the online store (None: nothing pushed)."""

    values: dict[str, float]
    timestamp: datetime | None


def realtime_tags(row: RealtimeRow | None, now: datetime, cart_hours: float) -> dict[str, Any]:
    """``visited_today``, ``purchased_today``, ``cart_abandoned`` (an add-to-cart in the last
    ``cart_hours`` with no purchase since) and when the customer was last seen, from the pushed times."""
    if row is None:
        return {"visited_today": False, "purchased_today": False, "cart_abandoned": False, "last_seen": None}
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    event, cart, purchase = (row.values.get(k, math.nan) for k in TIME_FEATURES)

    def present(x: float) -> bool:
        return x is not None and not math.isnan(x)

    abandoned = (
        present(cart)
        and now.timestamp() - cart <= cart_hours * 3600
        and not (present(purchase) and purchase >= cart)
    )
    return {
        "visited_today": present(event) and event >= midnight,
        "purchased_today": present(purchase) and purchase >= midnight,
        "cart_abandoned": bool(abandoned),
        "last_seen": datetime.fromtimestamp(event, tz=UTC) if present(event) else None,
    }


FRESH_DAYS = {
    "days_since_last_event": "last_event_ts",
    "days_since_last_cart": "last_cart_ts",
    "recency_days": "last_purchase_ts",
}
"""Batch features that a pushed time makes fresher: days since the event, as the batch pipeline defines
them (the snapshot time minus the last activity, in days)."""


def fresher_features(
    row: RealtimeRow | None, batch: Mapping[str, Any], batch_ts: float, now: datetime
) -> dict[str, float]:
    """The batch features that the real-time times supersede: for each of :data:`FRESH_DAYS` whose pushed
    time is after the last activity the batch value implies (``batch_ts`` minus the days), the days since
    the pushed time as of ``now``."""
    if row is None:
        return {}
    out = {}
    for feature, stamp in FRESH_DAYS.items():
        pushed = row.values.get(stamp)
        if pushed is None or math.isnan(pushed) or feature not in batch:
            continue
        current = batch[feature]
        missing = current is None or (isinstance(current, float) and math.isnan(current))
        if missing or pushed > batch_ts - float(current) * 86400.0:
            out[feature] = max(0.0, (now.timestamp() - pushed) / 86400.0)
    return out


def read_online(store: Any, view: Any, customer_ids: Sequence[str]) -> list[RealtimeRow | None]:
    """The customers' real-time rows from the online store (``view``: the registered real-time view), one
    ``OnlineStore.online_read`` for all of them; None where nothing was pushed or loaded."""
    from features import feast_internals as fi
    from features.store import entity_key

    rows = fi.online_read(store, view, [entity_key(c) for c in customer_ids], list(FEATURES))
    out: list[RealtimeRow | None] = []
    for stamp, values in rows:
        if not values:
            out.append(None)
            continue
        parsed = {}
        for name in FEATURES:
            value = values.get(name)
            kind = value.WhichOneof("val") if value is not None else None
            parsed[name] = float(getattr(value, kind)) if kind else math.nan
        out.append(RealtimeRow(parsed, stamp if stamp is None or stamp.tzinfo else stamp.replace(tzinfo=UTC)))
    return out

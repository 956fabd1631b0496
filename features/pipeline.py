"""Point-in-time customer features, defined once on Ibis and run on any Ibis backend.

The definitions below are backend-agnostic Ibis expressions: DuckDB runs them by default (one machine),
and the same functions run on Spark through ``ibis.pyspark`` when data outgrows one machine
(``compute_features(..., backend=ibis.pyspark.connect(spark))``).

For every snapshot time ``T`` and every customer who had signed up before ``T``, the features use only
rows with ``ts < T`` (strictly before): a snapshot row stamped ``T`` is therefore safe to join to any
label that starts at ``T``. The output has one table per feature view (see ``features/feast_repo``):

* ``customer_profile``       -- tenure and declared attributes;
* ``customer_transactions``  -- RFM over 7/30/90/365 days, order value, inter-purchase time, returns,
  category diversity and trends;
* ``customer_behaviour``     -- recency of activity, lifetime activity and the activity expected since the
  last event at the customer's own pace, sessions, event counts by type, funnel rates and campaign response.

Each table has ``customer_id``, ``event_timestamp`` (= the snapshot ``T``) and ``created_timestamp``.

How the definitions stay fast (one snapshot of 1M customers / 10M transactions / 50M events: see
``benchmarks/bench_features.py`` and ``benchmarks/RESULTS.md``):

* time windows are comparisons of ``ts`` with per-snapshot cutoffs (:func:`with_snapshot`), never a
  per-row conversion of every timestamp; ages are taken on aggregated timestamps (the last order, the
  last event);
* :func:`compute_features` builds one snapshot at a time and attaches it as literals, so the engine pushes
  the window filters into its Parquet scans; a snapshot *table* (:func:`compute_features_frame`) is
  cross-joined instead, with the same results;
* the order roll-up, inter-purchase gaps included, does not depend on the snapshot: a build computes it
  once (:func:`orders_table`) for both views and every snapshot;
* distinct counts (sessions, categories) are counts of groups of a two-level aggregation, and each part of
  the behaviour view reads only the rows of its window.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import ibis
import ibis.expr.types as ir
from ibis import _

from features import realtime
from features.contract import EVENT_TYPES
from features.tables import snapshot_label as snapshot_label  # re-exported: the pipeline names its outputs
from features.tables import snapshot_path
from portrait.cpu import available_cores
from portrait.files import atomic_path, spill_folder
from portrait.quiet import quiet_third_party

logger = logging.getLogger(__name__)

WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90, 365)
SECONDS_PER_DAY = 86_400.0
VIEWS: tuple[str, ...] = ("customer_profile", "customer_transactions", "customer_behaviour")
PROFILE_CATEGORICALS: tuple[str, ...] = ("region", "gender", "age_band", "channel")
RESPONSE_DAYS = 7  # a campaign click counts as answered by an order within this many days


@dataclass(frozen=True)
class FeatureBuild:
    """What a feature build wrote."""

    snapshots: list[datetime]
    paths: dict[str, list[Path]]
    rows: int
    seconds: float


Snapshots = ir.Table | datetime
"""The snapshots to compute: a table with a ``snapshot_ts`` column (every feature is computed for each of its
rows), or one snapshot time. One time is attached to the rows as literals, so the engine can push
``ts < T`` and the window bounds down into its scans (DuckDB then reads the other columns of the rows in the
window only); a table is cross-joined, which gives the same values for each snapshot."""

CUTOFF_DAYS: tuple[int, ...] = tuple(sorted({7, 30, 60, 90, 365, *WINDOWS_DAYS}))
KEYS: tuple[str, ...] = ("customer_id", "snapshot_ts")
_TS_UTC = "timestamp('UTC')"


def _days_between(later: ir.TimestampValue, earlier: ir.TimestampValue) -> ir.FloatingValue:
    return (later.epoch_seconds() - earlier.epoch_seconds()).cast("float64") / SECONDS_PER_DAY


def _safe_ratio(num: ir.NumericValue, den: ir.NumericValue) -> ir.FloatingValue:
    """num / den, null when the denominator is zero (LightGBM treats null as missing)."""
    return ibis.ifelse(den > 0, num.cast("float64") / den.cast("float64"), ibis.null("float64"))


def _trend(recent: ir.NumericValue, previous: ir.NumericValue) -> ir.FloatingValue:
    """Symmetric change in [-1, 1]: (recent - previous) / (recent + previous); 0 when both are 0."""
    total = recent + previous
    return ibis.ifelse(total > 0, (recent - previous).cast("float64") / total.cast("float64"), 0.0)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _cutoff(days: int) -> str:
    return f"cut_{days}d"


def snapshot_table(snapshots: Sequence[datetime]) -> ir.Table:
    """A one-column table of snapshot timestamps (UTC)."""
    values = [_utc(s) for s in snapshots]
    return ibis.memtable({"snapshot_ts": values}).mutate(snapshot_ts=_.snapshot_ts.cast(_TS_UTC))


def with_snapshot(rows: ir.Table, snaps: Snapshots) -> ir.Table:
    """``rows`` once per snapshot, with the columns ``snapshot_ts`` and ``cut_<d>d = snapshot_ts - d days``.

    A row ``d`` days or less old at ``T`` is one with ``ts > cut_<d>d``: the age windows below are
    timestamp comparisons against values computed once per snapshot, never a per-row conversion of every
    timestamp to epoch seconds (the costliest step over 50M events). A day is 86,400 seconds in any
    session time zone (the interval is given in seconds).
    """
    if isinstance(snaps, datetime):
        at = _utc(snaps)
        columns = {"snapshot_ts": ibis.literal(at, type=_TS_UTC)}
        columns |= {_cutoff(d): ibis.literal(at - timedelta(days=d), type=_TS_UTC) for d in CUTOFF_DAYS}
        return rows.mutate(**columns)
    cuts = {_cutoff(d): snaps.snapshot_ts - ibis.interval(seconds=d * 86_400) for d in CUTOFF_DAYS}
    return rows.cross_join(snaps.select("snapshot_ts", **cuts))


def _before(rows: ir.Table, snaps: Snapshots, within_days: int | None = None) -> ir.Table:
    """Rows strictly before each snapshot (and, given ``within_days``, less than that many days before)."""
    rows = with_snapshot(rows, snaps)
    keep = rows.ts < rows.snapshot_ts
    if within_days is not None:
        keep &= rows.ts > rows[_cutoff(within_days)]
    return rows.filter(keep)


def customer_snapshots(customers: ir.Table, snaps: Snapshots) -> ir.Table:
    """Every (customer, snapshot) pair where the customer had signed up strictly before the snapshot."""
    pairs = with_snapshot(customers, snaps)
    return pairs.filter(pairs.signup_ts < pairs.snapshot_ts)


def profile_features(customers: ir.Table, snaps: Snapshots) -> ir.Table:
    """Tenure and declared attributes."""
    pairs = customer_snapshots(customers, snaps)
    return pairs.select(
        "customer_id",
        "snapshot_ts",
        tenure_days=_days_between(pairs.snapshot_ts, pairs.signup_ts),
        **{c: pairs[c].fill_null("unknown") for c in PROFILE_CATEGORICALS},
    )


def orders_table(transactions: ir.Table) -> ir.Table:
    """Purchase lines rolled up to orders: one row per (customer, order) with the columns the features use.

    ``ts`` is the order's first line, ``value`` the sum of its lines and ``gap_days`` the time since the
    customer's previous order (null for the first). None of it depends on the snapshot -- the previous
    order of an order placed before ``T`` is also before ``T`` -- so a build computes this table once and
    passes it to :func:`transaction_features` and :func:`behaviour_features`. The order id is left out:
    nothing downstream needs it, and every column here is carried through the sort of the window.
    """
    purchases = transactions.filter(~transactions.is_return)
    orders = purchases.group_by(["customer_id", "order_id"]).aggregate(ts=_.ts.min(), value=_.amount.sum())
    orders = orders.select("customer_id", "ts", "value", epoch=orders.ts.epoch_seconds().cast("float64"))
    by_customer = ibis.window(group_by=orders.customer_id, order_by=orders.ts)
    gap = (orders.epoch - orders.epoch.lag().over(by_customer)) / SECONDS_PER_DAY
    return orders.mutate(gap_days=gap).drop("epoch")


def transaction_features(
    transactions: ir.Table, snaps: Snapshots, orders: ir.Table | None = None
) -> ir.Table:
    """RFM over several windows, order value, inter-purchase time, returns, diversity and trends.

    ``orders`` is :func:`orders_table` of ``transactions``; pass it when it is already computed.
    """
    orders = _before(orders_table(transactions) if orders is None else orders, snaps)
    prev30 = (orders.ts <= orders[_cutoff(30)]) & (orders.ts > orders[_cutoff(60)])
    aggs: dict[str, ir.Value] = {
        "last_order_ts": orders.ts.max(),
        "first_order_ts": orders.ts.min(),
        "orders_lifetime": orders.count(),
        "spend_lifetime": orders.value.sum(),
        "ipt_mean_days": orders.gap_days.mean(),
        "ipt_std_days": orders.gap_days.std(),
        "orders_prev30d": prev30.sum(),
        "spend_prev30d": ibis.ifelse(prev30, orders.value, 0.0).sum(),
    }
    for w in WINDOWS_DAYS:
        in_window = orders.ts > orders[_cutoff(w)]
        aggs[f"orders_{w}d"] = in_window.sum()
        aggs[f"spend_{w}d"] = ibis.ifelse(in_window, orders.value, 0.0).sum()
    per_order = orders.group_by(KEYS).aggregate(**aggs)

    # Line-level features over the last 365 days: returns and category diversity. Rolled up by category
    # first, so the distinct purchased categories are a count of groups (no distinct aggregate).
    lines = _before(transactions, snaps, within_days=365)
    by_category = lines.group_by([*KEYS, "category", "is_return"]).aggregate(amount=lines.amount.sum())
    purchase = ~by_category.is_return
    per_line = by_category.group_by(KEYS).aggregate(
        purchased_365d=ibis.ifelse(purchase, by_category.amount, 0.0).sum(),
        returned_365d=ibis.ifelse(by_category.is_return, -by_category.amount, 0.0).sum(),
        categories_365d=by_category.count(where=purchase & by_category.category.notnull()),
    )

    joined = per_order.left_join(per_line, KEYS)
    return joined.select(
        "customer_id",
        "snapshot_ts",
        # The smallest and largest order age, taken from the last and first order time (the same values).
        recency_days=_days_between(joined.snapshot_ts, joined.last_order_ts),
        first_purchase_days=_days_between(joined.snapshot_ts, joined.first_order_ts),
        **{c: joined[c] for w in WINDOWS_DAYS for c in (f"orders_{w}d", f"spend_{w}d")},
        orders_lifetime=joined.orders_lifetime,
        spend_lifetime=joined.spend_lifetime,
        avg_order_value=_safe_ratio(joined.spend_lifetime, joined.orders_lifetime),
        avg_order_value_365d=_safe_ratio(joined.spend_365d, joined.orders_365d),
        ipt_mean_days=joined.ipt_mean_days,
        ipt_std_days=joined.ipt_std_days,
        return_rate_365d=_safe_ratio(
            joined.returned_365d.fill_null(0.0), joined.purchased_365d.fill_null(0.0)
        ),
        categories_365d=joined.categories_365d.fill_null(0),
        orders_trend_30d=_trend(joined.orders_30d, joined.orders_prev30d),
        spend_trend_30d=_trend(joined.spend_30d, joined.spend_prev30d),
    )


def behaviour_features(
    events: ir.Table, transactions: ir.Table, snaps: Snapshots, orders: ir.Table | None = None
) -> ir.Table:
    """Activity recency, sessions, counts by event type, funnel rates and campaign response.

    ``orders`` is :func:`orders_table` of ``transactions``; pass it when it is already computed. Each part
    reads only the rows it needs (all history for recency, 90 or 30 days for the rest), so no large
    intermediate table is shared between them.
    """
    # Over all history: the first and last event, the event count and the last add-to-cart (their ages are
    # taken after aggregating). One scan and one aggregation, as for the last event alone.
    history = _before(events.select("customer_id", "ts", "event_type"), snaps)
    last_seen = history.group_by(KEYS).aggregate(
        last_event_ts=history.ts.max(),
        first_event_ts=history.ts.min(),
        events_lifetime=history.count(),
        last_cart_ts=history.ts.max(where=history.event_type == "add_to_cart"),
    )

    # Counts by event type over the last 30 / 90 days (the previous 30 days for the trend).
    ev = _before(events.select("customer_id", "ts", "event_type"), snaps, within_days=90)
    in30 = ev.ts > ev[_cutoff(30)]
    aggs: dict[str, ir.Value] = {
        "events_30d": in30.sum(),
        "events_prev30d": (~in30 & (ev.ts > ev[_cutoff(60)])).sum(),
    }
    for event_type in EVENT_TYPES:
        is_type = ev.event_type == event_type
        aggs[f"{event_type}_30d"] = (is_type & in30).sum()
        aggs[f"{event_type}_90d"] = is_type.sum()
    per_event = ev.group_by(KEYS).aggregate(**aggs)

    # Distinct sessions with an event in the last 7 / 30 days: one row per (customer, session) first.
    session_events = _before(
        events.filter(events.session_id.notnull()).select("customer_id", "ts", "session_id"),
        snaps,
        within_days=30,
    )
    sessions = (
        session_events.group_by([*KEYS, "session_id"])
        .aggregate(in7=(session_events.ts > session_events[_cutoff(7)]).any())
        .group_by(KEYS)
        .aggregate(sessions_7d=_.count(where=_.in7), sessions_30d=_.count())
    )

    # Campaign response: share of campaign clicks in the last 90 days followed by an order within 7 days
    # (and still before the snapshot). Such an order is itself within the last 90 days.
    clicks = _before(
        events.filter(events.event_type == "campaign_click").select("customer_id", "ts"),
        snaps,
        within_days=90,
    )
    # The 7-day deadline once per click (exactly 7 * 86,400 s later), not an age for every click x order pair.
    clicks = clicks.select(
        "customer_id",
        "snapshot_ts",
        click_ts=clicks.ts,
        deadline=clicks.ts + ibis.interval(seconds=RESPONSE_DAYS * 86_400),
    )
    recent_orders = _before(
        (orders_table(transactions) if orders is None else orders).select("customer_id", "ts"),
        snaps,
        within_days=90,
    ).select("customer_id", "snapshot_ts", order_ts="ts")
    responded = (
        clicks.join(
            recent_orders,
            (clicks.customer_id == recent_orders.customer_id)
            & (clicks.snapshot_ts == recent_orders.snapshot_ts)
            & (recent_orders.order_ts >= clicks.click_ts)
            & (recent_orders.order_ts <= clicks.deadline),
        )
        .select(clicks.customer_id, clicks.snapshot_ts, clicks.click_ts)
        .distinct()
        .group_by(KEYS)
        .aggregate(responded_clicks=_.count())
    )
    # 90-day purchase orders for the cart-to-purchase rate.
    orders_90d = recent_orders.group_by(KEYS).aggregate(orders_90d=_.count())

    joined = (
        last_seen.left_join(per_event, KEYS)
        .left_join(sessions, KEYS)
        .left_join(responded, KEYS)
        .left_join(orders_90d, KEYS)
    )
    # Customers whose events are all older than the windows: zero counts, as for the others.
    counts = {c: joined[c].fill_null(0) for c in [*aggs, "sessions_7d", "sessions_30d"]}
    since_last = _days_between(joined.snapshot_ts, joined.last_event_ts)
    since_first = _days_between(joined.snapshot_ts, joined.first_event_ts)
    return joined.select(
        "customer_id",
        "snapshot_ts",
        days_since_last_event=since_last,
        days_since_last_cart=_days_between(joined.snapshot_ts, joined.last_cart_ts),
        first_event_days=since_first,
        events_lifetime=joined.events_lifetime,
        # The events the customer's own pace (lifetime events per day since the first) would have produced
        # since the last one: the silence measured against the customer's own rate, the quantity behind a
        # BTYD P(alive). At most events_lifetime, since the last event is no older than the first.
        expected_events_missed=_safe_ratio(joined.events_lifetime * since_last, since_first),
        events_30d=counts["events_30d"],
        sessions_7d=counts["sessions_7d"],
        sessions_30d=counts["sessions_30d"],
        **{f"{t}_{w}d": counts[f"{t}_{w}d"] for t in EVENT_TYPES for w in (30, 90)},
        events_trend_30d=_trend(counts["events_30d"], counts["events_prev30d"]),
        view_to_cart_rate_90d=_safe_ratio(counts["add_to_cart_90d"], counts["view_90d"]),
        cart_to_purchase_rate_90d=_safe_ratio(joined.orders_90d.fill_null(0), counts["add_to_cart_90d"]),
        campaign_response_90d=_safe_ratio(joined.responded_clicks.fill_null(0), counts["campaign_click_90d"]),
    )


def with_all_customers(
    features: ir.Table, customers: ir.Table, snaps: Snapshots, fill: dict[str, object]
) -> ir.Table:
    """Left-join a feature table onto every (customer, snapshot) pair so customers without rows get zeros."""
    pairs = customer_snapshots(customers, snaps).select("customer_id", "snapshot_ts")
    joined = pairs.left_join(features, KEYS)
    cols = [c for c in features.columns if c not in KEYS]
    return joined.select(
        "customer_id",
        "snapshot_ts",
        **{c: (joined[c].fill_null(fill[c]) if c in fill else joined[c]) for c in cols},
    )


def feature_expressions(
    customers: ir.Table,
    transactions: ir.Table,
    events: ir.Table,
    snaps: Snapshots,
    *,
    orders: ir.Table | None = None,
) -> dict[str, ir.Table]:
    """The three feature-view tables as Ibis expressions (nothing is executed here).

    ``orders`` is :func:`orders_table` of ``transactions``; a build passes it once computed (cached) so
    that the two views that need it do not roll the order lines up again.
    """
    orders = orders_table(transactions) if orders is None else orders
    tx = transaction_features(transactions, snaps, orders)
    # Customers without orders: counts and sums are 0, recency/ipt/order value stay null (unknown).
    tx_zero: dict[str, object] = {
        c: 0 for c in tx.columns if c.startswith(("orders_", "spend_", "categories_"))
    }
    bh = behaviour_features(events, transactions, snaps, orders)
    # Customers without events: counts are 0, recency, rates and the expected events missed stay null.
    bh_zero: dict[str, object] = {
        c: 0
        for c in bh.columns
        if c.endswith(("_30d", "_90d", "_7d", "_lifetime")) and "rate" not in c and "response" not in c
    }
    return {
        "customer_profile": profile_features(customers, snaps),
        "customer_transactions": with_all_customers(tx, customers, snaps, tx_zero),
        "customer_behaviour": with_all_customers(bh, customers, snaps, bh_zero),
    }


def _threads() -> int:
    """CPUs this process may run on (see :func:`portrait.cpu.available_cores`)."""
    return available_cores()


# Ibis' DuckDB connection runs in UTC. The row order of the feature tables carries no meaning, so DuckDB
# need not keep it (less memory and more parallelism when writing). DuckDB 2.0's partitioned-execution
# optimizer splits the large aggregations by customer-id ranges and, for scans filtered on ``ts``, rescans
# the whole filtered input once per range (about 1.5x the CPU of the behaviour view at 1M customers).
_DUCKDB_CONFIG: dict[str, object] = {
    "preserve_insertion_order": False,
    "disabled_optimizers": "partitioned_execution",
}


def _duckdb(spill: Path | None = None) -> ibis.BaseBackend:
    """A DuckDB connection on all the CPUs this process may use, configured for feature builds, spilling to
    ``spill`` (default: DuckDB's ``.tmp`` in the current folder)."""
    where: dict[str, object] = {"temp_directory": str(spill)} if spill else {}
    try:
        return ibis.duckdb.connect(threads=_threads(), **_DUCKDB_CONFIG, **where)
    except duckdb.Error:  # a DuckDB without that optimizer (< 2.0): nothing to disable
        return ibis.duckdb.connect(threads=_threads(), preserve_insertion_order=False, **where)


def _connect(
    clean_dir: Path, backend: ibis.BaseBackend | None, spill: Path | None = None
) -> tuple[ibis.BaseBackend, dict[str, ir.Table]]:
    con = backend or _duckdb(spill)
    tables = {
        name: con.read_parquet(str(clean_dir / f"{name}.parquet"))
        for name in ("customers", "transactions", "events")
    }
    return con, tables


def compute_features(
    clean_dir: Path,
    out_dir: Path,
    snapshots: Sequence[datetime],
    *,
    backend: ibis.BaseBackend | None = None,
    created: datetime | None = None,
) -> FeatureBuild:
    """Compute the three feature tables for ``snapshots`` from the validated inputs in ``clean_dir``.

    Writes ``out_dir/<view>/snapshot=<T>.parquet`` per view and snapshot, atomically (temp file, then
    rename), so an interrupted build leaves earlier snapshot files intact. The order roll-up
    (:func:`orders_table`) is stored once in a temporary table of the backend and shared by the views and
    snapshots; each snapshot is then computed on its own, as literals (see :data:`Snapshots`).
    """
    quiet_third_party()  # Feast, if imported since the CLI started, put its warning filter first
    started = time.perf_counter()
    snaps_utc = sorted({_utc(s) for s in snapshots})
    created = created or datetime.now(UTC)
    with ExitStack() as cleanup:
        # A connection of our own spills in the command's scratch folder (removed even after a kill).
        spill = cleanup.enter_context(spill_folder(out_dir)) if backend is None else None
        return _compute(clean_dir, out_dir, snaps_utc, created, backend, spill, started)


def _compute(
    clean_dir: Path,
    out_dir: Path,
    snaps_utc: list[datetime],
    created: datetime,
    backend: ibis.BaseBackend | None,
    spill: Path | None,
    started: float,
) -> FeatureBuild:
    con, tables = _connect(clean_dir, backend, spill)
    paths: dict[str, list[Path]] = {v: [] for v in VIEWS}
    rows = 0
    # Orders do not depend on the snapshot: roll the lines up once for every view and snapshot.
    orders_name = f"_portrait_orders_{uuid.uuid4().hex}"
    orders = con.create_table(orders_name, orders_table(tables["transactions"]), temp=True)
    try:
        for snap in snaps_utc:
            exprs = feature_expressions(
                tables["customers"], tables["transactions"], tables["events"], snap, orders=orders
            )
            for view, expr in exprs.items():
                final = expr.rename(event_timestamp="snapshot_ts").mutate(
                    created_timestamp=ibis.literal(created).cast("timestamp('UTC')")
                )
                target = snapshot_path(out_dir, view, snap)
                with atomic_path(target) as tmp:
                    con.to_parquet(final, str(tmp))
                paths[view].append(target)
            paths.setdefault(realtime.VIEW, []).append(realtime.build_table(clean_dir, out_dir, snap))
            rows += int(con.execute(exprs["customer_profile"].count()))
            logger.info(
                "features for snapshot %s written (%.1f s so far)",
                snap.isoformat(),
                time.perf_counter() - started,
            )
    finally:
        _release(con, orders_name, owned=backend is None)
    return FeatureBuild(snaps_utc, paths, rows, time.perf_counter() - started)


def _release(con: ibis.BaseBackend, table: str, *, owned: bool) -> None:
    """Drop a build's temporary table; a connection the build opened itself is simply closed."""
    if owned:
        con.disconnect()
        return
    try:
        con.drop_table(table, force=True)
    except Exception:  # noqa: BLE001 - some Ibis/sqlglot pairs cannot render DROP TABLE; it is temporary
        logger.warning("could not drop the temporary table %s; it lasts until the session ends", table)


def compute_features_frame(
    clean_dir: Path, snapshots: Sequence[datetime], *, backend: ibis.BaseBackend | None = None
) -> dict[str, object]:
    """Compute the feature tables in memory as pandas frames (tests, notebooks, small data)."""
    con, tables = _connect(clean_dir, backend)
    snaps = snapshot_table(snapshots)
    exprs = feature_expressions(tables["customers"], tables["transactions"], tables["events"], snaps)
    return {view: con.execute(expr) for view, expr in exprs.items()}


def feature_schema() -> dict[str, ibis.Schema]:
    """The output schema of each feature view, derived from the expressions without running them."""
    from features.contract import ARROW_SCHEMAS

    empty = {
        name: ibis.table(ibis.Schema.from_pyarrow(schema), name=name)
        for name, schema in ARROW_SCHEMAS.items()
    }
    snaps = ibis.table({"snapshot_ts": "timestamp('UTC')"}, name="snapshots")
    exprs = feature_expressions(empty["customers"], empty["transactions"], empty["events"], snaps)
    return {view: expr.schema() for view, expr in exprs.items()}

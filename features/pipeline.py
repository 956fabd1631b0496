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
* ``customer_behaviour``     -- recency of activity, sessions, event counts by type, funnel rates and
  campaign response.

Each table has ``customer_id``, ``event_timestamp`` (= the snapshot ``T``) and ``created_timestamp``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import ibis
import ibis.expr.types as ir
from ibis import _

from features.contract import EVENT_TYPES

logger = logging.getLogger(__name__)

WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90, 365)
SECONDS_PER_DAY = 86_400.0
VIEWS: tuple[str, ...] = ("customer_profile", "customer_transactions", "customer_behaviour")
PROFILE_CATEGORICALS: tuple[str, ...] = ("region", "gender", "age_band", "channel")


@dataclass(frozen=True)
class FeatureBuild:
    """What a feature build wrote."""

    snapshots: list[datetime]
    paths: dict[str, list[Path]]
    rows: int
    seconds: float


def _days_between(later: ir.TimestampValue, earlier: ir.TimestampValue) -> ir.FloatingValue:
    return (later.epoch_seconds() - earlier.epoch_seconds()).cast("float64") / SECONDS_PER_DAY


def _safe_ratio(num: ir.NumericValue, den: ir.NumericValue) -> ir.FloatingValue:
    """num / den, null when the denominator is zero (LightGBM treats null as missing)."""
    return ibis.ifelse(den > 0, num.cast("float64") / den.cast("float64"), ibis.null("float64"))


def _trend(recent: ir.NumericValue, previous: ir.NumericValue) -> ir.FloatingValue:
    """Symmetric change in [-1, 1]: (recent - previous) / (recent + previous); 0 when both are 0."""
    total = recent + previous
    return ibis.ifelse(total > 0, (recent - previous).cast("float64") / total.cast("float64"), 0.0)


def snapshot_table(snapshots: Sequence[datetime]) -> ir.Table:
    """A one-column table of snapshot timestamps (UTC)."""
    values = [s if s.tzinfo else s.replace(tzinfo=UTC) for s in snapshots]
    return ibis.memtable({"snapshot_ts": values}).mutate(snapshot_ts=_.snapshot_ts.cast("timestamp('UTC')"))


def customer_snapshots(customers: ir.Table, snaps: ir.Table) -> ir.Table:
    """Every (customer, snapshot) pair where the customer had signed up strictly before the snapshot."""
    return customers.cross_join(snaps).filter(_.signup_ts < _.snapshot_ts)


def profile_features(customers: ir.Table, snaps: ir.Table) -> ir.Table:
    """Tenure and declared attributes."""
    pairs = customer_snapshots(customers, snaps)
    return pairs.select(
        "customer_id",
        "snapshot_ts",
        tenure_days=_days_between(pairs.snapshot_ts, pairs.signup_ts),
        **{c: pairs[c].fill_null("unknown") for c in PROFILE_CATEGORICALS},
    )


def orders_table(transactions: ir.Table) -> ir.Table:
    """Purchase lines rolled up to orders: one row per (customer, order)."""
    purchases = transactions.filter(~transactions.is_return)
    return purchases.group_by(["customer_id", "order_id"]).aggregate(
        ts=_.ts.min(),
        value=_.amount.sum(),
        lines=_.count(),
    )


def transaction_features(transactions: ir.Table, snaps: ir.Table) -> ir.Table:
    """RFM over several windows, order value, inter-purchase time, returns, diversity and trends."""
    orders = orders_table(transactions).cross_join(snaps).filter(_.ts < _.snapshot_ts)
    orders = orders.mutate(age_days=_days_between(orders.snapshot_ts, orders.ts))
    # Inter-purchase gaps between consecutive orders before the snapshot.
    by_customer = ibis.window(group_by=[orders.customer_id, orders.snapshot_ts], order_by=orders.ts)
    orders = orders.mutate(gap_days=_days_between(orders.ts, orders.ts.lag().over(by_customer)))

    aggs: dict[str, ir.Value] = {
        "recency_days": orders.age_days.min(),
        "first_purchase_days": orders.age_days.max(),
        "orders_lifetime": orders.count(),
        "spend_lifetime": orders.value.sum(),
        "ipt_mean_days": orders.gap_days.mean(),
        "ipt_std_days": orders.gap_days.std(),
        "orders_prev30d": ((orders.age_days >= 30) & (orders.age_days < 60)).sum(),
        "spend_prev30d": ibis.ifelse(
            (orders.age_days >= 30) & (orders.age_days < 60), orders.value, 0.0
        ).sum(),
    }
    for w in WINDOWS_DAYS:
        in_window = orders.age_days < w
        aggs[f"orders_{w}d"] = in_window.sum()
        aggs[f"spend_{w}d"] = ibis.ifelse(in_window, orders.value, 0.0).sum()
    per_order = orders.group_by(["customer_id", "snapshot_ts"]).aggregate(**aggs)

    # Line-level features over the last 365 days: returns and category diversity.
    lines = transactions.cross_join(snaps).filter(_.ts < _.snapshot_ts)
    lines = lines.filter(_days_between(lines.snapshot_ts, lines.ts) < 365)
    per_line = lines.group_by(["customer_id", "snapshot_ts"]).aggregate(
        purchased_365d=ibis.ifelse(~lines.is_return, lines.amount, 0.0).sum(),
        returned_365d=ibis.ifelse(lines.is_return, -lines.amount, 0.0).sum(),
        categories_365d=ibis.ifelse(~lines.is_return, lines.category, ibis.null("string")).nunique(),
    )

    joined = per_order.left_join(per_line, ["customer_id", "snapshot_ts"])
    return joined.select(
        "customer_id",
        "snapshot_ts",
        "recency_days",
        "first_purchase_days",
        *[c for w in WINDOWS_DAYS for c in (f"orders_{w}d", f"spend_{w}d")],
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


def behaviour_features(events: ir.Table, transactions: ir.Table, snaps: ir.Table) -> ir.Table:
    """Activity recency, sessions, counts by event type, funnel rates and campaign response."""
    ev = events.cross_join(snaps).filter(_.ts < _.snapshot_ts)
    ev = ev.mutate(age_days=_days_between(ev.snapshot_ts, ev.ts))
    aggs: dict[str, ir.Value] = {
        "days_since_last_event": ev.age_days.min(),
        "events_30d": (ev.age_days < 30).sum(),
        "events_prev30d": ((ev.age_days >= 30) & (ev.age_days < 60)).sum(),
        "sessions_7d": ibis.ifelse(ev.age_days < 7, ev.session_id, ibis.null("string")).nunique(),
        "sessions_30d": ibis.ifelse(ev.age_days < 30, ev.session_id, ibis.null("string")).nunique(),
        "days_since_last_cart": ibis.ifelse(
            ev.event_type == "add_to_cart", ev.age_days, ibis.null("float64")
        ).min(),
    }
    for event_type in EVENT_TYPES:
        is_type = ev.event_type == event_type
        aggs[f"{event_type}_30d"] = (is_type & (ev.age_days < 30)).sum()
        aggs[f"{event_type}_90d"] = (is_type & (ev.age_days < 90)).sum()
    per_event = ev.group_by(["customer_id", "snapshot_ts"]).aggregate(**aggs)

    # Campaign response: share of campaign clicks in the last 90 days followed by an order within 7 days
    # (and still before the snapshot).
    clicks = ev.filter((ev.event_type == "campaign_click") & (ev.age_days < 90)).select(
        "customer_id", "snapshot_ts", click_ts=ev.ts
    )
    orders = orders_table(transactions).select("customer_id", order_ts="ts")
    responded = (
        clicks.join(
            orders,
            (clicks.customer_id == orders.customer_id)
            & (orders.order_ts >= clicks.click_ts)
            & (orders.order_ts < clicks.snapshot_ts)
            & (_days_between(orders.order_ts, clicks.click_ts) <= 7),
        )
        .select(clicks.customer_id, clicks.snapshot_ts, clicks.click_ts)
        .distinct()
        .group_by(["customer_id", "snapshot_ts"])
        .aggregate(responded_clicks=_.count())
    )
    # 90-day purchase orders for the cart-to-purchase rate.
    recent_orders = (
        orders_table(transactions)
        .cross_join(snaps)
        .filter(_.ts < _.snapshot_ts)
        .filter(lambda t: _days_between(t.snapshot_ts, t.ts) < 90)
        .group_by(["customer_id", "snapshot_ts"])
        .aggregate(orders_90d=_.count())
    )
    joined = per_event.left_join(responded, ["customer_id", "snapshot_ts"]).left_join(
        recent_orders, ["customer_id", "snapshot_ts"]
    )
    return joined.select(
        "customer_id",
        "snapshot_ts",
        "days_since_last_event",
        "days_since_last_cart",
        "events_30d",
        "sessions_7d",
        "sessions_30d",
        *[f"{t}_{w}d" for t in EVENT_TYPES for w in (30, 90)],
        events_trend_30d=_trend(joined.events_30d, joined.events_prev30d),
        view_to_cart_rate_90d=_safe_ratio(joined.add_to_cart_90d, joined.view_90d),
        cart_to_purchase_rate_90d=_safe_ratio(joined.orders_90d.fill_null(0), joined.add_to_cart_90d),
        campaign_response_90d=_safe_ratio(joined.responded_clicks.fill_null(0), joined.campaign_click_90d),
    )


def with_all_customers(
    features: ir.Table, customers: ir.Table, snaps: ir.Table, fill: dict[str, object]
) -> ir.Table:
    """Left-join a feature table onto every (customer, snapshot) pair so customers without rows get zeros."""
    pairs = customer_snapshots(customers, snaps).select("customer_id", "snapshot_ts")
    joined = pairs.left_join(features, ["customer_id", "snapshot_ts"])
    cols = [c for c in features.columns if c not in ("customer_id", "snapshot_ts")]
    return joined.select(
        "customer_id",
        "snapshot_ts",
        **{c: (joined[c].fill_null(fill[c]) if c in fill else joined[c]) for c in cols},
    )


def feature_expressions(
    customers: ir.Table, transactions: ir.Table, events: ir.Table, snaps: ir.Table
) -> dict[str, ir.Table]:
    """The three feature-view tables as Ibis expressions (nothing is executed here)."""
    tx = transaction_features(transactions, snaps)
    # Customers without orders: counts and sums are 0, recency/ipt/order value stay null (unknown).
    tx_zero: dict[str, object] = {
        c: 0 for c in tx.columns if c.startswith(("orders_", "spend_", "categories_"))
    }
    bh = behaviour_features(events, transactions, snaps)
    # Customers without events: counts are 0, recency and rates stay null.
    bh_zero: dict[str, object] = {
        c: 0
        for c in bh.columns
        if c.endswith(("_30d", "_90d", "_7d")) and "rate" not in c and "response" not in c
    }
    return {
        "customer_profile": profile_features(customers, snaps),
        "customer_transactions": with_all_customers(tx, customers, snaps, tx_zero),
        "customer_behaviour": with_all_customers(bh, customers, snaps, bh_zero),
    }


def _connect(
    clean_dir: Path, backend: ibis.BaseBackend | None
) -> tuple[ibis.BaseBackend, dict[str, ir.Table]]:
    con = backend or ibis.duckdb.connect(threads=os.cpu_count() or 2)
    tables = {
        name: con.read_parquet(str(clean_dir / f"{name}.parquet"))
        for name in ("customers", "transactions", "events")
    }
    return con, tables


def snapshot_label(snapshot: datetime) -> str:
    return snapshot.astimezone(UTC).strftime("%Y%m%dT%H%M%S")


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
    rename), so an interrupted build leaves earlier snapshot files intact.
    """
    started = time.perf_counter()
    snaps_utc = sorted({s if s.tzinfo else s.replace(tzinfo=UTC) for s in snapshots})
    created = created or datetime.now(UTC)
    con, tables = _connect(clean_dir, backend)
    paths: dict[str, list[Path]] = {v: [] for v in VIEWS}
    rows = 0
    for snap in snaps_utc:
        snaps = snapshot_table([snap])
        exprs = feature_expressions(tables["customers"], tables["transactions"], tables["events"], snaps)
        for view, expr in exprs.items():
            final = expr.rename(event_timestamp="snapshot_ts").mutate(
                created_timestamp=ibis.literal(created).cast("timestamp('UTC')")
            )
            target = out_dir / view / f"snapshot={snapshot_label(snap)}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            con.to_parquet(final, str(tmp))
            os.replace(tmp, target)
            paths[view].append(target)
        rows += int(con.execute(exprs["customer_profile"].count()))
        logger.info("features for snapshot %s written", snap.isoformat())
    return FeatureBuild(snaps_utc, paths, rows, time.perf_counter() - started)


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

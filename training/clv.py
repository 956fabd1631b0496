"""CLV: gross purchase value in the next horizon (catalogue entry ``clv``), in parts, with a range.

Most customers spend nothing in a horizon, so the model is a LightGBM regressor with a Tweedie
objective (a compound Poisson-gamma: a point mass at zero plus a continuous spend part), tuned on
Poisson deviance. Its trees boost from a purchase model: BG/NBD + Gamma-Gamma (``training.btyd``,
PyMC-Marketing), fitted point in time at every snapshot on that snapshot's features only, gives each row
the base ``log(expected value)`` (LightGBM's ``init_score``); the trees learn what it misses, and the
purchase model extrapolates where trees cannot (customers older than any the training snapshots saw).
Value tiers: high (top 10 %), medium (next 30 %), low.

The hooks :func:`prepare` (before fitting), :func:`finish` (after) and :func:`gate` (the champion
decision) are called by ``training.train``; :func:`finish` attaches the served parts
(:class:`portrait.value.ValueParts`: the purchase model fitted at the test snapshot, the conformal
interval, category preference) and returns the metrics logged next to the value's: the pure purchase
model on the same test customers, interval coverage, next-order-date errors against two baselines and
category AUCs against the spend-share baseline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from portrait.btyd import Btyd, summary
from portrait.model import BASE_COLUMN
from portrait.settings import Settings
from portrait.value import DERIVED, Interval, Taste, ValueParts, derived_features
from training.specs import ModelSpec, spec_for

logger = logging.getLogger(__name__)

MONOTONE = {"spend_365d": 1, "spend_lifetime": 1, "orders_365d": 1, "orders_lifetime": 1}
BOOST_FROM_PURCHASE_MODEL = False
"""True: the trees boost from the purchase model's log expected value and also read its P(active), expected
orders and order value (measured in benchmarks/RESULTS.md, issue #21). False: today's Tweedie trees alone
give the value, and the purchase model only splits it into parts (and gives the range, the next order and
category preference)."""
DISTRIBUTED_REFIT = not BOOST_FROM_PURCHASE_MODEL
"""Whether ``training.distributed`` can refit the trees: it fits the model's features alone, without the purchase
model's base (``init_score``) and derived columns; when it cannot, ``training.train.fit_final`` refits in the
training process (on its frame, a sample of customers on the cluster profile's large frames) and says so."""
CONCENTRATIONS = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Prior weights (in orders) tried for category preference, chosen on the latest training snapshot."""


def spec(horizon_days: int = 365) -> ModelSpec:
    return spec_for("clv", horizon_days=horizon_days)


@dataclass
class Prepared:
    """What :func:`prepare` fitted: the purchase model per training snapshot and at the test snapshot."""

    per_snapshot: dict[pd.Timestamp, Btyd]
    test: Btyd
    nonbuyer_value: float
    nonbuyer_p_order: float
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


def prepare(settings: Settings, ts: Any, spec: ModelSpec) -> Prepared:
    """Fit the purchase model at every snapshot and write each training row's base raw score."""
    from training.btyd import fit_btyd, fit_per_snapshot

    started = time.perf_counter()
    seen = pd.concat([ts.train, ts.validation], ignore_index=True)
    nonbuyers = seen[pd.to_numeric(seen["orders_lifetime"], errors="coerce").fillna(0) < 1]
    nonbuyer_value = float(nonbuyers.label.mean()) if len(nonbuyers) else 0.0
    nonbuyer_p_order = float((nonbuyers.label > 0).mean()) if len(nonbuyers) else 0.0
    fits = fit_per_snapshot(seen, nonbuyer_value=nonbuyer_value)
    h = spec.label.horizon_days
    for frame in (ts.train, ts.validation):
        base = np.zeros(len(frame))
        derived = {name: np.full(len(frame), np.nan) for name in DERIVED}
        for snapshot, fitted in fits.items():
            rows = (frame.event_timestamp == snapshot).to_numpy()
            s = summary(frame[rows])
            base[rows] = fitted.log_base(s, h)
            for name, values in derived_features(fitted, s, h).items():
                derived[name][rows] = values
        if BOOST_FROM_PURCHASE_MODEL:
            frame[BASE_COLUMN] = base
        for name, values in derived.items():
            frame[name] = values
    test = fit_btyd(ts.test, label=str(ts.plan.test.date()), nonbuyer_value=nonbuyer_value)
    for name, values in derived_features(test, summary(ts.test), h).items():
        ts.test[name] = values  # what the served model derives itself (the example logged with it)
    if BOOST_FROM_PURCHASE_MODEL:
        ts.derived = list(DERIVED)  # the trees read them; the served model derives them from its base
    seconds = time.perf_counter() - started
    logger.info("clv: purchase model fitted at %d snapshots in %.1fs", len(fits) + 1, seconds)
    return Prepared(fits, test, nonbuyer_value, nonbuyer_p_order, seconds)


def finish(
    settings: Settings, ts: Any, spec: ModelSpec, outcome: Any, prepared: Prepared
) -> dict[str, float]:
    """Attach the served parts to the fitted model; the extra test metrics to log."""
    from training.evaluate import evaluate_regressor

    model = outcome.model
    h = spec.label.horizon_days
    interval = None
    if outcome.held_out is not None:
        rows, predicted = outcome.held_out
        interval = Interval.fit(rows.label.to_numpy(dtype=float), predicted)
    parts = ValueParts(
        prepared.test, h, interval, None, prepared.nonbuyer_p_order, boost=BOOST_FROM_PURCHASE_MODEL
    )
    model.base = parts
    test = ts.test
    y = test.label.to_numpy(dtype=float)
    values = model.score(test)
    metrics: dict[str, float] = {"btyd_seconds": prepared.seconds}
    pure = prepared.test.expected_value(summary(test), h)
    metrics |= {f"test_btyd_{k}": v for k, v in evaluate_regressor(y, pure).items() if k != "n"}
    out = parts.outputs(test, values)
    if interval is not None:
        metrics["test_interval_coverage"] = float(np.mean((out["p10"] <= y) & (y <= out["p90"])))
        metrics["test_interval_width_ratio"] = float(np.mean(out["p90"] - out["p10"]) / max(np.mean(y), 1e-9))
    metrics |= _next_order_metrics(settings, ts, parts, out)
    try:
        taste, category_metrics = _taste(settings, ts, spec, prepared, parts, values)
    except Exception as exc:  # noqa: BLE001 - a value model without category preference still serves
        logger.warning("clv: no category preference (%s)", exc)
        taste, category_metrics = None, {}
    parts.taste = taste
    metrics |= category_metrics
    model.metadata["value_parts"] = parts.summary()
    metrics |= {f"btyd_{k}": v for k, v in prepared.test.purchases.as_dict().items()}
    metrics |= {f"gg_{k}": v for k, v in prepared.test.spend.as_dict().items()}
    return metrics


def _next_order_metrics(
    settings: Settings, ts: Any, parts: ValueParts, out: dict[str, Any]
) -> dict[str, float]:
    """Median absolute error (days) of the next order date among test customers with an order before and
    one within the horizon: the model's, the naive one's (last order + her mean gap) and BG/NBD's median
    wait given active (its mean is infinite for customers with ``r + x <= 1``); all clipped to the horizon."""
    from training.category import first_order_within

    test = ts.test
    h = parts.horizon_days
    actual = first_order_within(settings.clean_dir, ts.plan.test, h, test.customer_id.astype(str).tolist())
    s = summary(test)
    rows = s.buyer & np.isfinite(actual)
    if rows.sum() < 10:
        return {}
    recency = pd.to_numeric(test["recency_days"], errors="coerce").to_numpy(dtype=float)
    gap = pd.to_numeric(test["ipt_mean_days"], errors="coerce").to_numpy(dtype=float)
    typical_gap = float(np.nanmedian(gap)) if np.isfinite(gap).any() else float(h)
    naive = np.clip(np.where(np.isfinite(gap), gap, typical_gap) - recency, 0.0, h)
    btyd = np.clip(parts.btyd.purchases.wait_quantile(s, 0.5), 0.0, h)
    model = np.clip(out["next_order_days"], 0.0, h)

    def mae(predicted: np.ndarray) -> float:
        return float(np.median(np.abs(predicted[rows] - actual[rows])))

    return {
        "test_next_order_mae_days": mae(model),
        "test_next_order_naive_mae_days": mae(naive),
        "test_next_order_btyd_mae_days": mae(btyd),
        "test_next_order_customers": float(rows.sum()),
    }


def _taste(
    settings: Settings, ts: Any, spec: ModelSpec, prepared: Prepared, parts: ValueParts, values: np.ndarray
) -> tuple[Taste | None, dict[str, float]]:
    """Category preference: the prior weight chosen on the latest training snapshot, measured at the test
    snapshot against the spend-share baseline, and the counts of every customer at the data's end."""
    from features.history import data_end
    from training.category import bought_within, counts_before, mean_auc, top_categories

    h = spec.label.horizon_days
    clean = settings.clean_dir

    def scored(
        frame: pd.DataFrame, at: Any, fitted: Btyd, frame_values: np.ndarray, kappas: tuple[float, ...]
    ):
        cats = top_categories(clean, at)
        if not cats:
            return None
        ids = frame.customer_id.astype(str).tolist()
        counts = counts_before(clean, at, ids, cats)
        labels = bought_within(clean, at, h, ids, cats)
        probe = ValueParts(fitted, h, None, None, prepared.nonbuyer_p_order)
        results = {}
        for kappa in kappas:
            probe.taste = Taste(
                cats, counts.columns, counts.prior().tolist(), kappa, ids, counts.counts, counts.orders
            )
            out = probe.outputs(frame, frame_values, customer_ids=ids)
            results[kappa] = mean_auc(labels, out["category_scores"])[0]
        return cats, counts, labels, results

    latest = max(prepared.per_snapshot)
    seen = pd.concat([ts.train, ts.validation], ignore_index=True)
    at_latest = seen[seen.event_timestamp == latest].reset_index(drop=True)
    fitted_latest = prepared.per_snapshot[latest]
    first = scored(
        at_latest, latest.to_pydatetime(), fitted_latest,
        fitted_latest.expected_value(summary(at_latest), h), CONCENTRATIONS,
    )  # fmt: skip
    if first is None:
        return None, {}
    kappa = max(first[3], key=lambda k: (np.nan_to_num(first[3][k], nan=-1.0), -k))
    second = scored(ts.test, ts.plan.test, prepared.test, values, (kappa,))
    assert second is not None
    cats, counts, labels, results = second
    baseline, per_category = mean_auc(labels, counts.spend_share)
    metrics = {
        "test_category_auc": results[kappa],
        "test_category_share_auc": baseline,
        "category_concentration": kappa,
        "category_count": float(len(cats)),
    }
    # Served: every customer's counts at the end of the data (the latest history training has).
    import duckdb

    end = data_end(clean) + timedelta(seconds=1)
    con = duckdb.connect()
    try:
        ids = con.execute(
            "SELECT DISTINCT CAST(customer_id AS VARCHAR) FROM read_parquet(?)",
            [str(clean / "customers.parquet")],
        ).fetchnumpy()
    finally:
        con.close()
    all_ids = sorted(next(iter(ids.values())).tolist())
    served_cats = top_categories(clean, end)
    now = counts_before(clean, end, all_ids, served_cats)
    taste = Taste(
        served_cats, now.columns, now.prior().tolist(), kappa, all_ids,
        now.counts.astype(np.float32), now.orders.astype(np.float32), as_of=end.isoformat(),
    )  # fmt: skip
    return taste, metrics


def gate(decision: Any, metrics: dict[str, float], spec: ModelSpec) -> Any:
    """The champion rule, plus: the candidate must also beat the pure purchase model on the same test
    customers (headline metric). With no champion yet the candidate is promoted either way (something must
    serve), and the reason says how it compares."""
    key = spec.primary_metric
    candidate, pure = metrics.get(f"test_{key}"), metrics.get(f"test_btyd_{key}")
    if candidate is None or pure is None or not np.isfinite(pure):
        return decision
    better = candidate > pure if spec.higher_is_better else candidate < pure
    versus = f"purchase model's {pure:.4f}"
    if better:
        return replace(decision, reason=f"{decision.reason}; beats the {versus}")
    if decision.champion_version is None:
        return replace(decision, reason=f"{decision.reason}; does not beat the {versus}")
    return replace(decision, promoted=False, reason=f"{key} {candidate:.4f} does not beat the {versus}")


__all__ = ["MONOTONE", "Prepared", "finish", "gate", "prepare", "spec"]

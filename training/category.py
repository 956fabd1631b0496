"""Category preference: order counts per top category before a snapshot, and who bought what after it.

Orders (not spend) are counted: "bought lighting in 4 of her 6 orders" is what P(her next order holds
lighting) is estimated from. The top categories are those with the most spend before the snapshot
(:mod:`features.categories` picks them the same way; the catch-all ``other`` and missing are left out).
The baseline the model is measured against is that module's spend share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from features.categories import DEFAULT_TOP_N, EXCLUDED, column_name


@dataclass
class CategoryCounts:
    """``counts[i, c]``: orders of customer ``ids[i]`` containing category ``categories[c]`` before ``at``;
    ``orders[i]``: her orders; ``spend_share[i, c]``: her share of spend in ``c`` (NaN: no purchase)."""

    ids: list[str]
    categories: list[str]
    counts: np.ndarray
    orders: np.ndarray
    spend_share: np.ndarray
    at: datetime

    @property
    def columns(self) -> list[str]:
        return [column_name(c).replace("cat_share_", "category_", 1) for c in self.categories]

    def prior(self) -> np.ndarray:
        """Each category's share of all orders containing it."""
        total = max(float(self.orders.sum()), 1.0)
        return np.clip(self.counts.sum(axis=0) / total, 1e-4, 1.0)


def _query(sql: str, params: list[Any]) -> pd.DataFrame:
    """One query's result on a fresh in-memory DuckDB connection in UTC (closed afterwards)."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params).df()


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def top_categories(clean_dir: Path, at: datetime, top_n: int = DEFAULT_TOP_N) -> list[str]:
    """The ``top_n`` categories with the most spend before ``at``."""
    path = clean_dir / "transactions.parquet"
    if not path.exists():
        return []
    ranked = _query(
        "SELECT CAST(category AS VARCHAR) AS category, sum(amount) AS value FROM read_parquet(?) "
        "WHERE NOT is_return AND amount > 0 AND ts < ? AND category IS NOT NULL "
        "GROUP BY 1 ORDER BY value DESC, category",
        [str(path), _utc(at)],
    )
    ranked = ranked[~ranked.category.str.lower().isin(EXCLUDED)]
    return ranked.category.head(top_n).tolist()


def counts_before(
    clean_dir: Path, at: datetime, customer_ids: Sequence[str], categories: Sequence[str]
) -> CategoryCounts:
    """Order counts per category (and spend shares) of ``customer_ids`` from every purchase before ``at``."""
    ids = [str(c) for c in customer_ids]
    cats = list(categories)
    n, k = len(ids), len(cats)
    counts, orders = np.zeros((n, k)), np.zeros(n)
    spend, total = np.zeros((n, k)), np.zeros(n)
    path = clean_dir / "transactions.parquet"
    if path.exists() and n:
        lines = _query(
            "SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST(order_id AS VARCHAR) AS order_id, "
            "CAST(category AS VARCHAR) AS category, sum(amount) AS value FROM read_parquet(?) "
            "WHERE NOT is_return AND ts < ? GROUP BY ALL",
            [str(path), _utc(at)],
        )
        index = pd.Index(ids)
        rows = index.get_indexer(lines.customer_id)
        lines = lines[rows >= 0].assign(row=rows[rows >= 0])
        per_order = lines.groupby(["row", "order_id"]).size().reset_index()
        np.add.at(orders, per_order.row.to_numpy(), 1.0)
        np.add.at(total, lines.row.to_numpy(), lines.value.clip(lower=0).to_numpy())
        col = pd.Index(cats).get_indexer(lines.category)
        inside = lines[col >= 0].assign(col=col[col >= 0])
        hits = inside.drop_duplicates(["row", "order_id", "col"])
        np.add.at(counts, (hits.row.to_numpy(), hits.col.to_numpy()), 1.0)
        np.add.at(
            spend, (inside.row.to_numpy(), inside.col.to_numpy()), inside.value.clip(lower=0).to_numpy()
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total[:, None] > 0, spend / total[:, None], np.nan)
    return CategoryCounts(ids, cats, counts, orders, share, _utc(at))


def bought_within(
    clean_dir: Path, at: datetime, days: int, customer_ids: Sequence[str], categories: Sequence[str]
) -> np.ndarray:
    """``(customers, categories)`` 1 where the customer bought in the category in ``[at, at + days)``."""
    ids = [str(c) for c in customer_ids]
    out = np.zeros((len(ids), len(categories)))
    path = clean_dir / "transactions.parquet"
    if not path.exists():
        return out
    hits = _query(
        "SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id, CAST(category AS VARCHAR) AS category "
        "FROM read_parquet(?) WHERE NOT is_return AND ts >= ? AND ts < ? + to_days(CAST(? AS INTEGER))",
        [str(path), _utc(at), _utc(at), int(days)],
    )
    rows = pd.Index(ids).get_indexer(hits.customer_id)
    cols = pd.Index(list(categories)).get_indexer(hits.category)
    keep = (rows >= 0) & (cols >= 0)
    out[rows[keep], cols[keep]] = 1.0
    return out


def first_order_within(clean_dir: Path, at: datetime, days: int, customer_ids: Sequence[str]) -> np.ndarray:
    """Days from ``at`` to each customer's first order in ``[at, at + days)`` (NaN: none)."""
    ids = [str(c) for c in customer_ids]
    path = clean_dir / "transactions.parquet"
    first = _query(
        "SELECT CAST(customer_id AS VARCHAR) AS customer_id, "
        "epoch(min(ts)) - epoch(CAST(? AS TIMESTAMPTZ)) AS seconds FROM read_parquet(?) "
        "WHERE NOT is_return AND ts >= ? AND ts < ? + to_days(CAST(? AS INTEGER)) GROUP BY 1",
        [_utc(at), str(path), _utc(at), _utc(at), int(days)],
    )
    return (first.set_index("customer_id").seconds / 86_400.0).reindex(ids).to_numpy(dtype=float)


def mean_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, list[float]]:
    """Mean AUC over the categories with both outcomes among the customers (NaN scores count as 0)."""
    from sklearn.metrics import roc_auc_score

    aucs = []
    for c in range(labels.shape[1]):
        y = labels[:, c]
        if 0 < y.sum() < len(y):
            aucs.append(float(roc_auc_score(y, np.nan_to_num(scores[:, c], nan=0.0))))
        else:
            aucs.append(float("nan"))
    finite = [a for a in aucs if np.isfinite(a)]
    return (float(np.mean(finite)) if finite else float("nan")), aucs


__all__ = [
    "CategoryCounts",
    "bought_within",
    "counts_before",
    "first_order_within",
    "mean_auc",
    "top_categories",
]

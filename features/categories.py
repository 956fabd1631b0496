"""Category mix: what share of each customer's spend went to each of the top product categories.

The lookalike representation reads it next to the ``lookalike_v1`` features so that audiences are alike in
*taste* (what they buy), not only in volume (how much and how often): on UCI Online Retail the Feast features
alone leave "buys mostly lighting" indistinguishable from "buys mostly kitchenware" at the same spend.

Point in time like the feature pipeline: only purchase lines with ``snapshot - days <= ts < snapshot`` count
(returns excluded). The top categories are the ``top_n`` with the largest spend in that window (the catch-all
``other`` and missing categories left out); each becomes a column ``cat_share_<category>`` holding the
customer's share of spend in it, in [0, 1]. Customers without purchases in the window get missing values
(NaN), never zeros: "bought nothing" is not "bought no lighting".

A separate module (not a view of ``features/pipeline.py``): the mix depends on which categories are on top,
which is a property of the population at the snapshot, and only the lookalike representation reads it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

PREFIX = "cat_share_"
DEFAULT_TOP_N = 12
DEFAULT_DAYS = 365
EXCLUDED = ("other",)


@dataclass(frozen=True)
class CategoryMix:
    """The customers' spend shares per top category (``frame``: ``customer_id`` + one column each)."""

    frame: pd.DataFrame
    columns: list[str]
    categories: list[str]
    snapshot: datetime
    days: int


def column_name(category: str) -> str:
    """``cat_share_<category>`` with anything but letters, digits and ``_`` replaced by ``_``."""
    return PREFIX + re.sub(r"[^0-9a-zA-Z_]+", "_", str(category).strip().lower()).strip("_")


def category_mix(
    clean_dir: Path,
    snapshot: datetime,
    customer_ids: Sequence[str] | np.ndarray,
    *,
    top_n: int = DEFAULT_TOP_N,
    days: int = DEFAULT_DAYS,
) -> CategoryMix:
    """Spend shares per top category over the ``days`` before ``snapshot``, one row per id of ``customer_ids``
    (in that order). No transactions file (or no categorised purchase): no columns."""
    ids = pd.Series(np.asarray(customer_ids).astype(str), name="customer_id")
    snapshot = snapshot.astimezone(UTC) if snapshot.tzinfo else snapshot.replace(tzinfo=UTC)
    empty = CategoryMix(pd.DataFrame({"customer_id": ids}), [], [], snapshot, days)
    path = clean_dir / "transactions.parquet"
    if not path.exists() or top_n < 1:
        return empty
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        spend = con.execute(
            "SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST(category AS VARCHAR) AS category, "
            "sum(amount) AS value FROM read_parquet(?) "
            "WHERE NOT is_return AND amount > 0 AND ts < ? AND ts >= ? - to_days(CAST(? AS INTEGER)) "
            "GROUP BY ALL",
            [str(path), snapshot, snapshot, days],
        ).df()
    finally:
        con.close()
    if spend.empty:
        return empty
    spend = spend[spend.customer_id.isin(set(ids.tolist()))]
    categorised = spend[spend.category.notna() & ~spend.category.str.lower().isin(EXCLUDED)]
    ranked = categorised.groupby("category").value.sum().sort_values(ascending=False, kind="stable")
    top = [str(c) for c in ranked.index[:top_n] if ranked[c] > 0]
    if not top:
        return empty
    total = spend.groupby("customer_id").value.sum()
    shares = (
        categorised[categorised.category.isin(top)]
        .pivot_table(index="customer_id", columns="category", values="value", aggfunc="sum", fill_value=0.0)
        .reindex(columns=top, fill_value=0.0)
    )
    shares = shares.reindex(total.index, fill_value=0.0).div(total.where(total > 0), axis=0)
    columns = [column_name(c) for c in top]
    if len(set(columns)) != len(columns):  # two categories that differ only in punctuation
        columns = [f"{name}_{i}" for i, name in enumerate(columns)]
    shares.columns = columns
    frame = pd.DataFrame({"customer_id": ids}).merge(
        shares.reset_index(names="customer_id"), on="customer_id", how="left"
    )
    logger.info("category mix: %d customers x %d categories (%s)", len(frame), len(top), ", ".join(top))
    return CategoryMix(frame, columns, top, snapshot, days)


__all__ = ["DEFAULT_DAYS", "DEFAULT_TOP_N", "PREFIX", "CategoryMix", "category_mix", "column_name"]

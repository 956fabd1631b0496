"""Audience insight: how an audience differs from the population, attribute by attribute, and whether it is noise.

For every numeric column (scores, features) the audience's mean is set against the population's; for every
categorical column (tiers, lifecycle stage, RFM segment, region, ...) each value's share. The *lift* is the
audience's figure over the population's. Whether a difference is more than noise is tested audience against
**the rest of the population** (two independent samples): Welch's t-test for means, the two-proportion z-test
for shares, then the Benjamini-Hochberg correction over every test of the report (``q_value``; significant when
``q <= alpha``). The effect size used to rank traits is Cohen's d (means) or Cohen's h (shares), so a trait of
a tiny audience does not rank high on its p-value alone.

Aggregates are sums a DuckDB query gives in one scan (count, mean, M2 per numeric column; counts per value
per categorical column, through ``GROUPING SETS``); the population's are computed once and cached
(:meth:`portrait.audience.population.Population.stats`), the rest of the population's are derived from both
(Chan's parallel-variance formula), so an insight scans only the audience's rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from pydantic import BaseModel, Field
from scipy import stats as sps

from portrait import reasons
from portrait.audience.filters import quote
from portrait.files import write_text_atomic

ALPHA = 0.05
TOP_TRAITS = 8
MISSING = "(not given)"


@dataclass
class Aggregate:
    """Sufficient statistics of a set of customers."""

    n: int
    numeric: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # column -> (count, mean, M2)
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)  # column -> value -> count


def aggregate(
    con: duckdb.DuckDBPyConnection, relation: str, numeric: Sequence[str], attributes: Sequence[str]
) -> Aggregate:
    """The sufficient statistics of ``relation`` (a table or view name of ``con``): two scans at most."""
    (n,) = con.execute(f"SELECT count(*) FROM {relation}").fetchone()
    out = Aggregate(int(n))
    if numeric:
        parts = []
        for c in numeric:
            q = quote(c)
            parts += [f"count({q})", f"avg({q})", f"coalesce(var_pop({q}) * count({q}), 0)"]
        row = con.execute(f"SELECT {', '.join(parts)} FROM {relation}").fetchone()
        for i, c in enumerate(numeric):
            count, mean, m2 = row[3 * i : 3 * i + 3]
            out.numeric[c] = (int(count), float(mean) if mean is not None else math.nan, float(m2 or 0.0))
    if attributes:
        cols = [f"CAST({quote(c)} AS VARCHAR) AS {quote(c)}" for c in attributes]
        sets = ", ".join(f"({quote(c)})" for c in attributes)
        groupings = ", ".join(f"grouping({quote(c)})" for c in attributes)
        rows = con.execute(
            f"SELECT {', '.join(quote(c) for c in attributes)}, {groupings}, count(*) "
            f"FROM (SELECT {', '.join(cols)} FROM {relation}) GROUP BY GROUPING SETS ({sets})"
        ).fetchall()
        k = len(attributes)
        out.categorical = {c: {} for c in attributes}
        for row in rows:
            for i, c in enumerate(attributes):
                if row[k + i] == 0:
                    value = MISSING if row[i] is None else str(row[i])
                    out.categorical[c][value] = out.categorical[c].get(value, 0) + int(row[-1])
    return out


def save_aggregate(path: Path, agg: Aggregate) -> None:
    write_text_atomic(path, json.dumps(asdict(agg)))


def load_aggregate(path: Path) -> Aggregate | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Aggregate(
            n=int(data["n"]),
            numeric={k: (int(v[0]), float(v[1]), float(v[2])) for k, v in data["numeric"].items()},
            categorical={k: {str(a): int(b) for a, b in v.items()} for k, v in data["categorical"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


# ---- the report ------------------------------------------------------------------------------------------


class NumericTrait(BaseModel):
    """A numeric column: mean in the audience and in the population."""

    field: str
    audience_mean: float | None = Field(description="Mean over audience members with a value.")
    population_mean: float | None = Field(description="Mean over the whole population (audience included).")
    audience_count: int = Field(description="Audience members with a value.")
    lift: float | None = Field(description="audience_mean / population_mean (None when not meaningful).")
    effect: float | None = Field(description="Cohen's d of audience against the rest of the population.")
    p_value: float | None = Field(description="Welch's t-test, audience against the rest of the population.")
    q_value: float | None = Field(description="Benjamini-Hochberg adjusted p-value over the whole report.")
    significant: bool = Field(description="q_value <= alpha.")
    text: str = Field(description="The difference in words.")


class CategoryTrait(BaseModel):
    """One value of a categorical column: its share in the audience and in the population."""

    field: str
    value: str
    audience_share: float
    population_share: float
    audience_count: int
    lift: float | None = Field(description="audience_share / population_share.")
    effect: float = Field(description="Cohen's h of audience against the rest of the population.")
    p_value: float | None = Field(description="Two-proportion z-test, audience against the rest.")
    q_value: float | None
    significant: bool
    text: str


class Insight(BaseModel):
    """How an audience differs from the population."""

    audience_size: int = Field(description="Audience members found in the population.")
    population_size: int
    alpha: float = Field(description="Significance level of the Benjamini-Hochberg adjusted p-values.")
    tests: int = Field(description="Number of tests corrected for.")
    method: str = Field(description="How differences were tested.")
    top_traits: list[str] = Field(description="The strongest significant differences, in words.")
    numeric: list[NumericTrait]
    categorical: list[CategoryTrait]


def insight(
    audience: Aggregate, population: Aggregate, *, alpha: float = ALPHA, top: int = TOP_TRAITS
) -> Insight:
    """Compare an audience's statistics with its population's (see the module docstring)."""
    n_a, n_p = audience.n, population.n
    n_r = n_p - n_a
    numeric: list[dict[str, Any]] = []
    for col, (cnt_p, mean_p, m2_p) in population.numeric.items():
        cnt_a, mean_a, m2_a = audience.numeric.get(col, (0, math.nan, 0.0))
        row: dict[str, Any] = {
            "field": col,
            "audience_mean": _finite(mean_a),
            "population_mean": _finite(mean_p),
            "audience_count": cnt_a,
            "lift": _ratio(mean_a, mean_p),
            "effect": None,
            "p_value": None,
        }
        cnt_r = cnt_p - cnt_a
        if cnt_a >= 2 and cnt_r >= 2 and math.isfinite(mean_a) and math.isfinite(mean_p):
            mean_r = (cnt_p * mean_p - cnt_a * mean_a) / cnt_r
            m2_r = max(m2_p - m2_a - (mean_r - mean_a) ** 2 * cnt_a * cnt_r / cnt_p, 0.0)
            var_a, var_r = m2_a / (cnt_a - 1), m2_r / (cnt_r - 1)
            row["p_value"] = welch_p(mean_a, var_a, cnt_a, mean_r, var_r, cnt_r)
            pooled = math.sqrt((var_a + var_r) / 2)
            row["effect"] = (mean_a - mean_r) / pooled if pooled > 0 else 0.0
        numeric.append(row)
    categorical: list[dict[str, Any]] = []
    for col, counts_p in population.categorical.items():
        counts_a = audience.categorical.get(col, {})
        for value, x_p in sorted(counts_p.items(), key=lambda kv: -kv[1]):
            x_a = counts_a.get(value, 0)
            share_a = x_a / n_a if n_a else 0.0
            share_p = x_p / n_p if n_p else 0.0
            x_r = x_p - x_a
            share_r = x_r / n_r if n_r > 0 else 0.0
            categorical.append(
                {
                    "field": col,
                    "value": value,
                    "audience_share": share_a,
                    "population_share": share_p,
                    "audience_count": x_a,
                    "lift": _ratio(share_a, share_p),
                    "effect": 2 * math.asin(math.sqrt(share_a)) - 2 * math.asin(math.sqrt(share_r)),
                    "p_value": two_proportion_p(x_a, n_a, x_r, n_r) if n_a and n_r > 0 else None,
                }
            )
    rows = numeric + categorical
    q = benjamini_hochberg([r["p_value"] for r in rows])
    for row, q_value in zip(rows, q, strict=True):
        row["q_value"] = q_value
        row["significant"] = q_value is not None and q_value <= alpha
    for row in numeric:
        row["text"] = numeric_text(row["field"], row["audience_mean"], row["population_mean"])
    for row in categorical:
        row["text"] = category_text(
            row["field"], row["value"], row["audience_share"], row["population_share"]
        )
    traits = top_traits(numeric, categorical, top)
    return Insight(
        audience_size=n_a,
        population_size=n_p,
        alpha=alpha,
        tests=sum(p is not None for p in (r["p_value"] for r in rows)),
        method=(
            "audience against the rest of the population: Welch's t-test (means), two-proportion z-test "
            "(shares); Benjamini-Hochberg adjusted over all tests"
        ),
        top_traits=traits,
        numeric=[NumericTrait(**r) for r in numeric],
        categorical=[CategoryTrait(**r) for r in categorical],
    )


def top_traits(numeric: list[dict[str, Any]], categorical: list[dict[str, Any]], top: int) -> list[str]:
    """The strongest significant differences in words: one per feature family (``orders_30d`` and
    ``orders_365d`` are one family) and per categorical column, by effect size."""
    candidates = [
        (abs(r["effect"]), _family(r["field"]), r["text"])
        for r in numeric
        if r["significant"] and r["effect"] is not None
    ]
    candidates += [
        (abs(r["effect"]), r["field"], r["text"])
        for r in categorical
        if r["significant"] and r["audience_share"] > r["population_share"]
    ]
    out, seen = [], set()
    for effect, family, text in sorted(candidates, key=lambda c: -c[0]):
        if family in seen or effect < 0.05:
            continue
        seen.add(family)
        out.append(text)
        if len(out) >= top:
            break
    return out


def _family(name: str) -> str:
    stem, _, window = name.rpartition("_")
    if stem and (window == "lifetime" or (window.endswith("d") and window[:-1].isdigit())):
        return stem
    return name


# ---- statistics ------------------------------------------------------------------------------------------


def welch_p(mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int) -> float:
    """Two-sided p-value of Welch's t-test from summary statistics."""
    se2 = var_a / n_a + var_b / n_b
    if se2 <= 0:
        return 1.0 if mean_a == mean_b else 0.0
    t = (mean_a - mean_b) / math.sqrt(se2)
    df = se2**2 / ((var_a / n_a) ** 2 / max(n_a - 1, 1) + (var_b / n_b) ** 2 / max(n_b - 1, 1))
    return float(2 * sps.t.sf(abs(t), df))


def two_proportion_p(x_a: int, n_a: int, x_b: int, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test."""
    pooled = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    diff = x_a / n_a - x_b / n_b
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    return float(2 * sps.norm.sf(abs(diff / se)))


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (None stays None and is not counted)."""
    index = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not index:
        return out
    p = np.array([p_values[i] for i in index], dtype=np.float64)
    m = len(p)
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(adjusted, 1.0)
    for i, value in zip(index, q, strict=True):
        out[i] = float(value)
    return out


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _ratio(a: float, b: float) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b <= 0:
        return None
    return a / b


# ---- words -----------------------------------------------------------------------------------------------

# feature family -> (more, less): how to say "r times more / less" of the family.
COMPARATIVES: dict[str, tuple[str, str]] = {
    "orders": (
        "buys {x} more often than the average customer",
        "buys {x} less often than the average customer",
    ),
    "spend": ("spends {x} more than the average customer", "spends {x} less than the average customer"),
    "conversion_probability": (
        "is {x} more likely to buy soon than the average customer",
        "is {x} less likely to buy soon than the average customer",
    ),
    "churn_probability": (
        "is {x} more likely to churn than the average customer",
        "is {x} less likely to churn than the average customer",
    ),
    "value_predicted": (
        "is predicted to spend {x} more than the average customer",
        "is predicted to spend {x} less than the average customer",
    ),
    "events": (
        "is {x} more active than the average customer",
        "is {x} less active than the average customer",
    ),
    "sessions": (
        "visits {x} more often than the average customer",
        "visits {x} less often than the average customer",
    ),
    "avg_order_value": (
        "places orders {x} larger than the average customer's",
        "places orders {x} smaller than the average customer's",
    ),
    "recency_days": (
        "last bought {x} longer ago than the average customer",
        "bought more recently than the average customer",
    ),
}
TIER_WORDS = {"churn": "churn-risk", "conversion": "purchase-propensity", "value": "value"}


def ratio_words(r: float) -> str:
    """``3×`` from 1.5 on, else a percentage (``25%``)."""
    if r >= 1.5:
        return f"{r:.1f}".rstrip("0").rstrip(".") + "×"
    if r >= 1:
        return f"{r - 1:.0%}"
    return f"{1 - r:.0%}"


def numeric_text(feature: str, mean_a: float | None, mean_p: float | None) -> str:
    """The difference in means in words, e.g. ``buys 3.1× more often than the average customer (5.2 orders in
    the last 365 days on average, against 1.7)``."""
    if mean_a is None:
        return f"{_label(feature)}: no values in the audience"
    phrase = _phrase(feature, mean_a)
    if "on average" not in phrase:
        phrase += " on average"
    if mean_p is None:
        return phrase
    against = f"against {_figure(feature, mean_p)}"
    r = _ratio(mean_a, mean_p)
    words = COMPARATIVES.get(feature) or COMPARATIVES.get(_family(feature))
    if r is None or words is None or 0.9 < r < 1.1:
        return f"{phrase}, {against} for the average customer"
    template = words[0] if r >= 1 else words[1]
    return f"{template.format(x=ratio_words(r))} ({phrase}, {against})"


def category_text(column: str, value: str, share_a: float, share_p: float) -> str:
    """A value's share in words, e.g. ``42% are in the high churn-risk tier, against 20% of all customers (2.1×)``."""
    lift = _ratio(share_a, share_p)
    lift_text = f" ({lift:.1f}×)" if lift is not None else ""
    return f"{share_a:.0%} {_value_label(column, value)}, against {share_p:.0%} of all customers{lift_text}"


def _value_label(column: str, value: str) -> str:
    if column.endswith("_tier"):
        model = column[: -len("_tier")]
        return f"are in the {value} {TIER_WORDS.get(model, model)} tier"
    if column == "lifecycle_stage":
        return f"are at lifecycle stage '{value.replace('_', ' ')}'"
    if column == "rfm_segment":
        return f"are in the RFM segment '{value}'"
    if value == MISSING:
        return f"have no {column.replace('_', ' ')} given"
    return f"have {reasons.phrase(column, value)}"


SCORE_PHRASES = {
    "churn_probability": "a churn risk of {p}",
    "conversion_probability": "a purchase propensity of {p}",
    "value_predicted": "a predicted value of {v}",
}


def _phrase(feature: str, value: float) -> str:
    """A value in words: the tag scores here, the features through ``portrait.reasons``."""
    template = SCORE_PHRASES.get(feature)
    if template is None:
        return reasons.phrase(feature, value)
    return template.format(p=f"{value:.0%}", v=_fmt(value))


def _figure(feature: str, value: float) -> str:
    """A population figure as the audience's is phrased: shares as percentages, the rest as numbers."""
    template = SCORE_PHRASES.get(feature) or reasons.PHRASES.get(feature, "")
    return f"{value:.0%}" if "{p}" in template else _fmt(value)


def _label(feature: str) -> str:
    return feature.replace("_", " ")


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


__all__ = [
    "ALPHA",
    "Aggregate",
    "CategoryTrait",
    "Insight",
    "NumericTrait",
    "aggregate",
    "benjamini_hochberg",
    "category_text",
    "insight",
    "numeric_text",
    "two_proportion_p",
    "welch_p",
]

"""The probabilistic purchase model behind predicted value: BG/NBD and Gamma-Gamma, in closed form.

"Buy 'til you die" (BTYD) models describe a customer by three numbers from her purchase history -- how many
repeat orders (``x``), when the last one came (``t_x``, time from the first order) and how long she has
been a customer (``T``, time since the first order) -- plus her mean order value:

* **BG/NBD** (Fader, Hardie & Lee 2005): while active a customer orders at a Poisson rate ``lambda ~
  Gamma(r, alpha)``; after each order she drops out with probability ``p ~ Beta(a, b)``. It gives
  P(active), the expected orders in the next ``t`` and the time to the next order.
* **Gamma-Gamma** (Fader, Hardie & Lee 2005b): order values vary around a customer's own mean, which
  varies across customers; her expected order value shrinks her observed mean toward the population's.

The parameters are fitted in training (``training.btyd``, PyMC-Marketing, point in time: only the history
before a snapshot); this module holds only the formulas, in NumPy/SciPy, so the served model needs no
PyMC. Time is in weeks (the fitted parameters' unit); the inputs are the feature pipeline's day counts
(``recency_days``, ``first_purchase_days``, ``orders_lifetime``, ``avg_order_value``). Customers without
a purchase have no BTYD description: every function returns NaN for them.

The formulas are those of PyMC-Marketing's ``BetaGeoModel`` / ``GammaGammaModel`` (pinned by
``tests/training/test_clv_parts.py`` against the library on the same parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import hyp2f1

DAYS_PER_UNIT = 7.0
"""BTYD time unit in days (weeks: the scale the parameters' priors are set for)."""
INPUTS = ("recency_days", "first_purchase_days", "orders_lifetime", "avg_order_value")
"""The features a BTYD description is computed from."""


@dataclass(frozen=True)
class Summary:
    """Per customer: repeat orders ``x``, time of the last order ``t_x`` and age ``T`` (weeks, from the
    first order), mean order value ``m`` and whether she has bought at all (``buyer``)."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    m: np.ndarray
    buyer: np.ndarray


def summary(columns: Mapping[str, Any]) -> Summary:
    """The BTYD description from feature columns (a DataFrame or column name -> array)."""
    get = {c: np.asarray(columns[c], dtype="float64") for c in INPUTS}
    orders = np.nan_to_num(get["orders_lifetime"], nan=0.0)
    buyer = (orders >= 1) & np.isfinite(get["first_purchase_days"]) & np.isfinite(get["recency_days"])
    age = np.where(buyer, get["first_purchase_days"], np.nan) / DAYS_PER_UNIT
    last = np.where(buyer, get["first_purchase_days"] - get["recency_days"], np.nan) / DAYS_PER_UNIT
    # A first order on the snapshot's last day has age ~0: keep T > 0 and 0 <= t_x <= T.
    age = np.maximum(age, 1.0 / (7 * DAYS_PER_UNIT))
    last = np.clip(last, 0.0, age)
    x = np.where(buyer, np.maximum(orders - 1.0, 0.0), np.nan)
    m = np.where(buyer, get["avg_order_value"], np.nan)
    return Summary(x=x, t_x=last, T=age, m=m, buyer=buyer)


@dataclass(frozen=True)
class BetaGeo:
    """Fitted BG/NBD parameters (time unit: weeks)."""

    r: float
    alpha: float
    a: float
    b: float

    def _odds_dead(self, s: Summary) -> np.ndarray:
        """``a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)`` where ``x > 0``, else 0."""
        x = np.nan_to_num(s.x, nan=0.0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_odds = (
                np.log(self.a)
                - np.log(np.maximum(self.b + x - 1.0, 1e-12))
                + (self.r + x) * (np.log(self.alpha + s.T) - np.log(self.alpha + s.t_x))
            )
            return np.where(x > 0, np.exp(np.minimum(log_odds, 700.0)), 0.0)

    def p_alive(self, s: Summary) -> np.ndarray:
        """P(still active now)."""
        return np.where(s.buyer, 1.0 / (1.0 + self._odds_dead(s)), np.nan)

    def expected_orders(self, s: Summary, days: float) -> np.ndarray:
        """Expected orders in the next ``days`` (Fader, Hardie & Lee 2005, eq. 10)."""
        t = days / DAYS_PER_UNIT
        x = np.nan_to_num(s.x, nan=0.0)
        T = np.nan_to_num(s.T, nan=1.0)
        ratio = (self.alpha + T) / (self.alpha + T + t)
        with np.errstate(invalid="ignore", over="ignore"):
            hyp = hyp2f1(self.r + x, self.b + x, self.a + self.b + x - 1.0, t / (self.alpha + T + t))
            numerator = (self.a + self.b + x - 1.0) / (self.a - 1.0) * (1.0 - ratio ** (self.r + x) * hyp)
        out = numerator / (1.0 + self._odds_dead(s))
        return np.where(s.buyer, np.maximum(out, 0.0), np.nan)

    def p_order_within(self, s: Summary, days: float) -> np.ndarray:
        """P(at least one order in the next ``days``): active, and her Poisson clock rings in time."""
        return np.where(s.buyer, self.p_alive(s) * self.wait_cdf(s, days), np.nan)

    def wait_cdf(self, s: Summary, days: float | np.ndarray) -> np.ndarray:
        """P(next order within ``days`` | active): the rate's posterior is Gamma(r + x, alpha + T), so the
        wait is Lomax (Pareto II)."""
        t = np.asarray(days, dtype=float) / DAYS_PER_UNIT
        shape = self.r + np.nan_to_num(s.x, nan=0.0)
        scale = self.alpha + np.nan_to_num(s.T, nan=1.0)
        return 1.0 - (scale / (scale + t)) ** shape

    def wait_quantile(self, s: Summary, q: np.ndarray | float) -> np.ndarray:
        """Days until the next order at level ``q`` of the wait's distribution given active."""
        shape = self.r + np.nan_to_num(s.x, nan=0.0)
        scale = self.alpha + np.nan_to_num(s.T, nan=1.0)
        q = np.clip(np.asarray(q, dtype=float), 0.0, 1.0 - 1e-12)
        return np.where(s.buyer, scale * ((1.0 - q) ** (-1.0 / shape) - 1.0) * DAYS_PER_UNIT, np.nan)

    def expected_wait_days(self, s: Summary) -> np.ndarray:
        """The mean wait until the next order given active (infinite when ``r + x <= 1``)."""
        shape = self.r + np.nan_to_num(s.x, nan=0.0)
        scale = self.alpha + np.nan_to_num(s.T, nan=1.0)
        with np.errstate(divide="ignore"):
            out = np.where(shape > 1.0, scale / np.maximum(shape - 1.0, 1e-12), np.inf) * DAYS_PER_UNIT
        return np.where(s.buyer, out, np.nan)

    def as_dict(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class GammaGamma:
    """Fitted Gamma-Gamma parameters (order values)."""

    p: float
    q: float
    v: float

    @property
    def population_mean(self) -> float:
        return self.p * self.v / (self.q - 1.0) if self.q > 1.0 else float("nan")

    def expected_order_value(self, s: Summary) -> np.ndarray:
        """A customer's expected order value: her mean over ``x + 1`` orders shrunk toward the population's
        (orders here count the first one: the features hold the mean of all orders)."""
        n = np.nan_to_num(s.x, nan=0.0) + 1.0
        m = np.nan_to_num(s.m, nan=0.0)
        weight = self.p * n / (self.p * n + self.q - 1.0)
        out = (1.0 - weight) * self.population_mean + weight * np.maximum(m, 0.0)
        return np.where(s.buyer, out, np.nan)

    def as_dict(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "v": self.v}


@dataclass(frozen=True)
class Btyd:
    """BG/NBD + Gamma-Gamma fitted at one snapshot; ``nonbuyer_value`` is the value per horizon assumed for
    customers without a purchase (the training mean), which the trees then correct."""

    purchases: BetaGeo
    spend: GammaGamma
    nonbuyer_value: float = 0.0
    fitted_at: str = ""
    customers: int = 0

    def expected_value(self, s: Summary, days: float) -> np.ndarray:
        """Expected gross value in the next ``days`` (BTYD alone); ``nonbuyer_value`` for non-buyers."""
        value = self.purchases.expected_orders(s, days) * self.spend.expected_order_value(s)
        return np.where(s.buyer, value, self.nonbuyer_value)

    def log_base(self, s: Summary, days: float, floor: float = 1e-3) -> np.ndarray:
        """``log`` of :meth:`expected_value`, floored: the offset the trees boost from."""
        return np.log(np.maximum(np.nan_to_num(self.expected_value(s, days), nan=floor), floor))

    def as_dict(self) -> dict[str, Any]:
        return {
            "bgnbd": self.purchases.as_dict(),
            "gamma_gamma": self.spend.as_dict(),
            "nonbuyer_value": self.nonbuyer_value,
            "fitted_at": self.fitted_at,
            "customers": self.customers,
        }


__all__ = ["DAYS_PER_UNIT", "INPUTS", "BetaGeo", "Btyd", "GammaGamma", "Summary", "summary"]

"""Synthetic customer data with an exactly known ground truth.

:func:`generate` writes the three contract inputs (``customers``, ``transactions``, ``events``, with
exactly the Arrow schemas of :data:`features.contract.ARROW_SCHEMAS`) plus ``truth.parquet``: the
latent parameters of every customer. :func:`true_scores` turns those parameters and the history
observable before a snapshot into the Bayes-optimal churn / conversion / value predictions, so a
trained model can be compared with the best achievable one. :func:`history_before` and
:func:`realised_labels` read the generated files with DuckDB for that purpose.

The process
-----------
* Every customer belongs to one latent audience segment (bargain hunters, loyal high spenders,
  seasonal gift buyers, window shoppers, app-heavy young, lapsing, ...). Segments shape the profile
  attributes (region, gender, age band, channel), category preferences, purchase and browse rates,
  spend, event-type mix, return rate, hour-of-day and Christmas seasonality.
* Pareto/NBD-style lifetimes: per customer a purchase-occasion rate ``lambda_p`` and a browse-session
  rate ``lambda_b`` (gamma around the segment mean), and a dropout rate ``mu`` (gamma): the customer
  dies at ``signup + Exp(mu)``. Nothing at all (no purchase, no event, no return) happens after death.
* While alive, purchase occasions and browse sessions are Poisson processes with intensity
  ``rate * s(t)``, where ``s`` (mean ~1) is a known weekly x yearly x hour-of-day multiplier of the
  segment (:func:`seasonal_intensity`). Arrival times are drawn by inverting the cumulative intensity.
* The arrival time of a session is its *last* moment: a purchase occasion's order (1-3 lines) is
  placed at the arrival, preceded minutes before by views (and usually an add-to-cart) of each
  purchased category in the same session; a browse session ends with its last event at the arrival.
  Sessions never cross a UTC midnight nor start before signup / history start.
* A purchased line is returned with the customer's return probability at the customer's next
  session, if that comes within 30 days: a return line (``is_return``, negative amount and quantity)
  with order id ``R<n>`` for the purchase ``O<n>``, whose session is ``S<n>``.
* Only activity in ``[max(signup, start), end)`` is recorded; earlier customers are "pre-existing".
* Optional **regime shift** (``SynthConfig.shift_at``): a random ``shift_share`` of customers (drawn from
  their own random stream, ``shifted`` in the truth) buy at ``shift_factor`` times their purchase rate
  from ``shift_at`` on. Each of their purchase occasions after ``shift_at`` is kept with probability
  ``shift_factor`` (thinning a Poisson process multiplies its rate); a dropped one stays a session with
  its views and add-to-cart events but no order (an abandoned cart), so browsing is unchanged. The
  thinning draws come from a separate stream and happen after everything else is drawn, so the other
  customers' records are exactly those of the same config without a shift, and a config without a
  shift writes exactly what it wrote before the option existed. :func:`true_scores` knows nothing of the
  shift: after ``shift_at`` it is the truth of the world without it.

Ground truth
------------
Because each session leaves an event exactly at its arrival time, the last activity time strictly
before a snapshot at 00:00 UTC is the last session arrival, and :func:`true_scores` is the exact
posterior (up to day-grid quadrature, < 2e-3) given the true parameters. Returns happen at session
times and carry no extra information about being alive. Labels: see :data:`LABEL_DEFINITIONS`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contract import ARROW_SCHEMAS, EVENT_TYPES, TS
from portrait.files import publish, temp_beside

logger = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = (
    "apparel", "shoes", "beauty", "electronics", "home", "grocery", "sports", "toys", "books", "jewelry",
)  # fmt: skip
REGIONS: tuple[str, ...] = ("FR", "DE", "ES", "IT", "NL", "UK")
GENDERS: tuple[str, ...] = ("F", "M", "X")
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
CHANNELS: tuple[str, ...] = ("organic", "paid_search", "social", "email", "affiliate", "app_store")
OUTPUTS: tuple[str, ...] = ("customers", "transactions", "events", "truth")

LABEL_DEFINITIONS: dict[str, str] = {
    "churn": "no purchase line (is_return = false) with ts in (T, T + churn_horizon_days]",
    "conversion": "at least one purchase line (is_return = false) with ts in (T, T + conversion_horizon_days]",
    "value": "sum of amount over purchase lines (is_return = false, gross of returns) with ts in (T, T + H]",
}
"""Label definitions matched by :func:`true_scores` and :func:`realised_labels` (snapshot ``T``)."""

DAY_US = 86_400_000_000
SECOND = 1.0 / 86_400.0
CHUNK_CUSTOMERS = 100_000  # fixed (part of the output definition: results depend on it)
PREEXISTING_SHARE = 0.3
PREHISTORY_DAYS = 365.0
DEATH_CAP = datetime(2200, 1, 1, tzinfo=UTC)  # death_ts beyond it is capped (far past any horizon)
LINES_PER_ORDER_P = np.array([0.55, 0.30, 0.15])  # P(1, 2, 3 lines)
EXTRA_QUANTITY_MEAN = 0.35  # quantity = 1 + Poisson
LINE_PRICE_SIGMA = 0.5  # lognormal noise of one line's unit price
CUSTOMER_PRICE_SIGMA = 0.35  # lognormal spread of customers' unit price around the segment's
CATEGORY_PRICE = np.array([1.0, 1.2, 0.8, 2.5, 1.3, 0.5, 1.1, 0.9, 0.6, 2.0])  # relative price per category
PREF_CONCENTRATION = 15.0  # Dirichlet concentration of a customer's category preferences
BROWSE_WIDE_SHARE = 0.2  # share of browsing draws taken uniformly over categories
SESSION_FOCUS = 0.7  # P(an event of a browse session concerns the session's main category)
PURCHASE_EXTRA_VIEWS = 0.5  # views per purchased line = 1 + Poisson
ADD_TO_CART_P = 0.8  # P(add_to_cart before buying a line)
EVENT_GAP_DAYS = 80 * SECOND  # mean gap between events of a session
CHECKOUT_GAP_DAYS = 120 * SECOND  # mean gap between the last event and the order
RETURN_WINDOW_DAYS = 30.0
QUADRATURE_STEPS_PER_DAY = 1  # grid of the truth's integrals (8x finer moves p_* by < 2e-3)
RATE_SHAPE, BROWSE_SHAPE, DROPOUT_SHAPE = 2.0, 1.5, 2.0  # gamma shapes of the customer rates
NULL_RATE = {"region": 0.01, "gender": 0.08, "age_band": 0.12, "channel": 0.03}
WEEKLY = np.array([0.96, 0.94, 0.95, 0.98, 1.04, 1.08, 1.05])  # Monday .. Sunday
HOURLY_AMPLITUDE = 0.7
# Event types in contract order (view, add_to_cart, search, app_open, campaign_click) -> order in a session.
TYPE_RANK = np.array([3, 4, 2, 0, 1])
VIEW, ADD_TO_CART, APP_OPEN = (EVENT_TYPES.index(t) for t in ("view", "add_to_cart", "app_open"))
CATEGORISED_TYPES = np.array([t in ("view", "add_to_cart", "search") for t in EVENT_TYPES])


# ---- configuration and result --------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Same config -> identical table contents."""

    n_customers: int = 10_000
    seed: int = 0
    start: datetime = datetime(2023, 1, 1, tzinfo=UTC)
    """History start: activity is recorded from here (a share of customers signed up earlier)."""
    end: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    """History end (exclusive): nothing is generated at or after it."""
    n_segments: int = 6
    shift_at: datetime | None = None
    """Regime shift (None: none): from this moment the purchase rate of a share of customers drops."""
    shift_share: float = 0.5
    """Share of customers the shift hits (chosen at random, recorded as ``shifted`` in the truth)."""
    shift_factor: float = 0.3
    """A shifted customer's purchase rate after ``shift_at`` is ``shift_factor`` times the rate before."""


@dataclass(frozen=True)
class SynthResult:
    """Files written by :func:`generate`."""

    paths: dict[str, Path]
    counts: dict[str, int]
    seconds: float


# ---- segments ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Archetype:
    name: str
    share: float
    purchases_per_year: float
    browse_sessions_per_year: float
    dropouts_per_year: float  # mean of the customers' dropout rate mu
    unit_price: float
    return_prob: float
    session_events: float  # mean events per browse session (>= 1)
    event_mix: tuple[float, ...]  # over EVENT_TYPES
    app_share: float  # P(a purchase session starts with app_open)
    categories: tuple[float, ...]  # weights over CATEGORIES
    season_amplitude: float  # 0: flat year, 1: reference Nov/Dec peak, 3: gift buyer
    peak_hour: float
    region: tuple[float, ...]
    gender: tuple[float, ...]
    age_band: tuple[float, ...]
    channel: tuple[float, ...]


ARCHETYPES: tuple[_Archetype, ...] = (
    _Archetype(
        "bargain_hunter", 0.22, 10.0, 10.0, 0.5, 14.0, 0.06, 3.0, (0.45, 0.12, 0.20, 0.05, 0.18), 0.10,
        (2.0, 1.0, 1.0, 1.0, 2.0, 3.5, 0.7, 1.5, 0.5, 0.2), 1.2, 13.0,
        (0.25, 0.2, 0.2, 0.2, 0.05, 0.1), (0.55, 0.4, 0.05), (0.08, 0.25, 0.3, 0.22, 0.1, 0.05),
        (0.1, 0.35, 0.1, 0.15, 0.28, 0.02),
    ),
    _Archetype(
        "loyal_high_spender", 0.12, 15.0, 7.5, 0.15, 45.0, 0.04, 2.5, (0.55, 0.20, 0.10, 0.10, 0.05), 0.35,
        (2.0, 1.5, 2.5, 0.8, 2.0, 0.5, 0.5, 0.4, 0.8, 3.0), 0.6, 20.0,
        (0.2, 0.25, 0.1, 0.1, 0.15, 0.2), (0.6, 0.37, 0.03), (0.02, 0.12, 0.28, 0.3, 0.2, 0.08),
        (0.45, 0.08, 0.05, 0.35, 0.02, 0.05),
    ),
    _Archetype(
        "seasonal_gift_buyer", 0.14, 3.5, 4.0, 0.35, 35.0, 0.10, 2.5, (0.62, 0.15, 0.15, 0.02, 0.06), 0.05,
        (0.8, 0.4, 1.0, 1.5, 0.8, 0.2, 0.6, 3.5, 2.5, 2.0), 3.0, 19.0,
        (0.2, 0.25, 0.1, 0.15, 0.1, 0.2), (0.45, 0.52, 0.03), (0.03, 0.15, 0.3, 0.3, 0.15, 0.07),
        (0.35, 0.35, 0.1, 0.1, 0.08, 0.02),
    ),
    _Archetype(
        "window_shopper", 0.18, 1.7, 20.0, 0.6, 28.0, 0.12, 4.0, (0.68, 0.12, 0.15, 0.03, 0.02), 0.10,
        (3.0, 2.5, 2.0, 1.0, 1.0, 0.3, 1.0, 0.4, 0.5, 1.0), 1.0, 21.0,
        (0.18, 0.18, 0.18, 0.18, 0.1, 0.18), (0.62, 0.34, 0.04), (0.3, 0.35, 0.15, 0.1, 0.06, 0.04),
        (0.25, 0.1, 0.5, 0.05, 0.05, 0.05),
    ),
    _Archetype(
        "app_heavy_young", 0.18, 8.5, 17.0, 0.8, 20.0, 0.20, 3.0, (0.42, 0.15, 0.08, 0.30, 0.05), 0.90,
        (3.0, 2.5, 1.5, 2.0, 0.3, 0.3, 1.5, 0.2, 0.3, 0.5), 0.8, 22.0,
        (0.15, 0.2, 0.2, 0.15, 0.15, 0.15), (0.5, 0.45, 0.05), (0.45, 0.4, 0.1, 0.03, 0.01, 0.01),
        (0.1, 0.05, 0.35, 0.02, 0.03, 0.45),
    ),
    _Archetype(
        "lapsing", 0.16, 8.5, 5.0, 3.0, 25.0, 0.08, 2.0, (0.55, 0.15, 0.15, 0.05, 0.10), 0.15,
        (1.0, 0.8, 0.8, 1.8, 1.8, 1.0, 1.8, 0.8, 1.5, 0.3), 1.0, 18.0,
        (0.2, 0.2, 0.15, 0.15, 0.1, 0.2), (0.45, 0.5, 0.05), (0.03, 0.1, 0.17, 0.25, 0.25, 0.2),
        (0.15, 0.3, 0.1, 0.15, 0.28, 0.02),
    ),
    _Archetype(
        "sports_enthusiast", 0.10, 7.0, 9.0, 0.4, 40.0, 0.07, 3.0, (0.55, 0.18, 0.15, 0.07, 0.05), 0.30,
        (1.5, 2.5, 0.3, 1.0, 0.3, 0.3, 4.0, 0.3, 0.3, 0.3), 0.9, 7.0,
        (0.15, 0.25, 0.1, 0.1, 0.2, 0.2), (0.35, 0.62, 0.03), (0.15, 0.35, 0.25, 0.15, 0.07, 0.03),
        (0.3, 0.25, 0.25, 0.1, 0.05, 0.05),
    ),
    _Archetype(
        "home_maker", 0.10, 5.5, 6.5, 0.3, 55.0, 0.05, 3.5, (0.60, 0.15, 0.18, 0.02, 0.05), 0.05,
        (0.3, 0.3, 0.5, 1.2, 4.0, 1.5, 0.3, 0.5, 0.8, 0.3), 0.7, 10.0,
        (0.25, 0.2, 0.15, 0.15, 0.1, 0.15), (0.6, 0.38, 0.02), (0.02, 0.1, 0.25, 0.3, 0.2, 0.13),
        (0.35, 0.25, 0.05, 0.25, 0.08, 0.02),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class _Segments:
    """Per-segment parameters as arrays (index = segment id)."""

    names: list[str]
    share: np.ndarray
    purchase_rate: np.ndarray  # per day
    browse_rate: np.ndarray  # per day
    dropout_rate: np.ndarray  # per day
    unit_price: np.ndarray
    return_prob: np.ndarray
    session_events: np.ndarray
    event_mix: np.ndarray  # (S, len(EVENT_TYPES))
    app_share: np.ndarray
    categories: np.ndarray  # (S, len(CATEGORIES)), rows sum to 1
    season_amplitude: np.ndarray
    peak_hour: np.ndarray
    attributes: dict[str, np.ndarray]  # attribute -> (S, levels) probabilities


def _variant(base: _Archetype, index: int, rng: np.random.Generator) -> _Archetype:
    """A random perturbation of an archetype, for configs with more segments than archetypes."""

    def jitter(weights: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(float(w) for w in np.asarray(weights) * rng.lognormal(0.0, 0.5, len(weights)))

    scale = rng.lognormal(0.0, 0.3, 5)
    return replace(
        base,
        name=f"{base.name}_{index}",
        purchases_per_year=base.purchases_per_year * scale[0],
        browse_sessions_per_year=base.browse_sessions_per_year * scale[1],
        dropouts_per_year=base.dropouts_per_year * scale[2],
        unit_price=base.unit_price * scale[3],
        return_prob=min(0.5, base.return_prob * scale[4]),
        categories=jitter(base.categories),
        event_mix=jitter(base.event_mix),
        peak_hour=float((base.peak_hour + rng.normal(0.0, 2.0)) % 24),
    )


def _segment_table(config: SynthConfig) -> _Segments:
    """The first ``n_segments`` archetypes, extended with seeded variants when more are asked for."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0,)))
    chosen = [
        ARCHETYPES[i] if i < len(ARCHETYPES) else _variant(ARCHETYPES[i % len(ARCHETYPES)], i, rng)
        for i in range(config.n_segments)
    ]

    def col(attr: str) -> np.ndarray:
        return np.array([getattr(a, attr) for a in chosen], dtype=np.float64)

    def rows(attr: str) -> np.ndarray:
        matrix = col(attr)
        return matrix / matrix.sum(axis=1, keepdims=True)

    share = col("share")
    return _Segments(
        names=[a.name for a in chosen],
        share=share / share.sum(),
        purchase_rate=col("purchases_per_year") / 365.0,
        browse_rate=col("browse_sessions_per_year") / 365.0,
        dropout_rate=col("dropouts_per_year") / 365.0,
        unit_price=col("unit_price"),
        return_prob=col("return_prob"),
        session_events=col("session_events"),
        event_mix=rows("event_mix"),
        app_share=col("app_share"),
        categories=rows("categories"),
        season_amplitude=col("season_amplitude"),
        peak_hour=col("peak_hour"),
        attributes={name: rows(name) for name in ("region", "gender", "age_band", "channel")},
    )


# ---- time and seasonality ------------------------------------------------------------------------------


def _to_day(moment: datetime) -> float:
    """A timezone-aware datetime as float days since the Unix epoch."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware (UTC) datetime")
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(days=1)


def _days_to_us(days: np.ndarray) -> np.ndarray:
    return np.rint(days * DAY_US).astype(np.int64)


def _series_to_days(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Datetimes (naive = UTC) as float days since the epoch; NaT -> NaN."""
    index = pd.DatetimeIndex(values)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    micros = index.as_unit("us").asi8.astype(np.float64)
    micros[index.isna()] = np.nan
    return micros / DAY_US


def _yearly_shape(day_of_year: np.ndarray) -> np.ndarray:
    """Reference yearly multiplier (mean 1 over a year): Black Friday, Christmas, sales, August lull."""
    bumps = ((329.0, 6.0, 1.0), (350.0, 9.0, 1.2), (8.0, 8.0, 0.35), (185.0, 12.0, 0.15), (220.0, 25.0, -0.2))

    def curve(day: np.ndarray) -> np.ndarray:
        out = np.ones_like(day, dtype=np.float64)
        for centre, width, height in bumps:
            distance = np.abs(day - centre)
            distance = np.minimum(distance, 365.0 - distance)
            out += height * np.exp(-0.5 * (distance / width) ** 2)
        return out

    return curve(day_of_year.astype(np.float64)) / curve(np.arange(365.0)).mean()


def seasonal_intensity(hours: np.ndarray, amplitude: float, peak_hour: float) -> np.ndarray:
    """The intensity multiplier ``s(t)`` (mean ~1) during whole UTC hours since the epoch.

    ``s = weekly[day of week] * (1 + amplitude * (yearly(day of year) - 1)) * hourly(hour, peak_hour)``,
    each factor normalised to mean 1; ``hourly = 1 + 0.7 cos(2 pi (hour + 0.5 - peak_hour) / 24)``.
    It is constant within each hour, so the cumulative intensity is piecewise linear.
    """
    hours = np.asarray(hours, dtype=np.int64)
    days = hours // 24
    day_of_week = (days + 3) % 7  # 1970-01-01 was a Thursday
    dates = days.astype("datetime64[D]")
    day_of_year = (dates - dates.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)
    yearly = np.maximum(1.0 + amplitude * (_yearly_shape(day_of_year) - 1.0), 0.05)
    hourly = 1.0 + HOURLY_AMPLITUDE * np.cos(2 * np.pi * (hours % 24 + 0.5 - peak_hour) / 24.0)
    return WEEKLY[day_of_week] / WEEKLY.mean() * yearly * hourly


@dataclass(frozen=True)
class _SeasonGrid:
    """Cumulative seasonal intensity of each profile on an hourly grid (in days of unit intensity)."""

    origin_hour: int
    cum: np.ndarray  # (profiles, hours + 1)

    @classmethod
    def build(
        cls, amplitude: np.ndarray, peak_hour: np.ndarray, first_day: float, last_day: float
    ) -> _SeasonGrid:
        origin = int(np.floor(first_day * 24)) - 1
        hours = np.arange(origin, int(np.ceil(last_day * 24)) + 1, dtype=np.int64)
        cum = np.zeros((len(amplitude), len(hours) + 1))
        for p, (amp, peak) in enumerate(zip(amplitude, peak_hour, strict=True)):
            cum[p, 1:] = np.cumsum(seasonal_intensity(hours, float(amp), float(peak))) / 24.0
        return cls(origin, cum)

    @property
    def _knots(self) -> np.ndarray:
        return np.arange(self.cum.shape[1], dtype=np.float64)

    def cumulative(self, profile: np.ndarray, days: np.ndarray) -> np.ndarray:
        """S(t) for each row's profile; ``days`` has the shape of ``profile`` plus optional trailing axes."""
        position = np.asarray(days, dtype=np.float64) * 24.0 - self.origin_hour
        if position.size and (np.nanmin(position) < 0 or np.nanmax(position) > self.cum.shape[1] - 1):
            raise ValueError("time outside the seasonal grid")
        hour = np.minimum(position.astype(np.int64), self.cum.shape[1] - 2)
        fraction = position - hour
        profile = np.asarray(profile, dtype=np.int64).reshape(
            profile.shape + (1,) * (position.ndim - profile.ndim)
        )
        flat = hour + profile * self.cum.shape[1]  # index into the flattened (profile, hour) grid
        values = self.cum.ravel()
        below = values[flat]
        return below + fraction * (values[flat + 1] - below)

    def inverse(self, profile: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The time (days) at which each row's cumulative intensity reaches ``values``."""
        out = np.empty_like(values)
        for p in np.unique(profile):
            rows = profile == p
            out[rows] = (np.interp(values[rows], self.cum[p], self._knots) + self.origin_hour) / 24.0
        return out


# ---- customers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Customers:
    """Latent parameters and attributes of customers (times in float days since the epoch)."""

    segment: np.ndarray
    signup: np.ndarray
    death: np.ndarray
    purchase_rate: np.ndarray
    browse_rate: np.ndarray
    dropout_rate: np.ndarray
    unit_price: np.ndarray
    return_prob: np.ndarray
    prefs: np.ndarray  # (n, categories)
    attributes: dict[str, np.ndarray]  # int8 codes, -1 = null

    def __len__(self) -> int:
        return len(self.segment)

    def take(self, lo: int, hi: int) -> _Customers:
        """Customers ``lo`` .. ``hi - 1``."""
        return _Customers(
            **{
                name: ({k: v[lo:hi] for k, v in value.items()} if isinstance(value, dict) else value[lo:hi])
                for name, value in vars(self).items()
            }
        )

    @property
    def mean_line_value(self) -> np.ndarray:
        """Expected gross value of one order line."""
        return self.unit_price * (1.0 + EXTRA_QUANTITY_MEAN) * (self.prefs @ CATEGORY_PRICE)

    @property
    def mean_order_value(self) -> np.ndarray:
        """Expected gross value of one order (purchase occasion)."""
        return self.mean_line_value * float(LINES_PER_ORDER_P @ np.arange(1, 4))


@dataclass(frozen=True)
class _Categorical:
    """Row-wise categorical distributions, sampled with one ``searchsorted`` on the flattened CDF."""

    flat: np.ndarray  # row r's CDF shifted by r, rows concatenated (increasing)
    levels: int

    @classmethod
    def of(cls, probabilities: np.ndarray) -> _Categorical:
        cumulative = np.cumsum(probabilities, axis=1)
        cumulative /= cumulative[:, -1:]
        cumulative += np.arange(len(cumulative))[:, None]
        return cls(cumulative.ravel(), probabilities.shape[1])

    def sample(self, rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
        """One draw (level index, int8) from each given row's distribution."""
        rows = np.asarray(rows, dtype=np.int64)
        position = np.searchsorted(self.flat, rows + rng.random(len(rows)), side="right")
        return np.minimum(position - rows * self.levels, self.levels - 1).astype(np.int8)


def _draw_signups(rng: np.random.Generator, n: int, start: float, end: float) -> np.ndarray:
    """Sorted signup times (whole seconds): a share before ``start``, the rest growing towards ``end``."""
    pre = rng.random(n) < PREEXISTING_SHARE
    growing = -1.0 + np.sqrt(1.0 + 3.0 * rng.random(n))  # density proportional to 1 + x on [0, 1]
    days = np.where(pre, start - PREHISTORY_DAYS * rng.random(n), start + (end - start) * growing)
    return np.sort(np.floor(days * 86_400.0)) / 86_400.0


def _draw_customers(config: SynthConfig, segments: _Segments) -> _Customers:
    """Segments, attributes and latent rates of all customers (ids follow signup order)."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    n = config.n_customers
    segment = rng.choice(len(segments.share), size=n, p=segments.share).astype(np.int16)
    signup = _draw_signups(rng, n, _to_day(config.start), _to_day(config.end))
    dropout = rng.gamma(DROPOUT_SHAPE, segments.dropout_rate[segment] / DROPOUT_SHAPE)
    death = np.minimum(signup + rng.exponential(1.0, n) / dropout, _to_day(DEATH_CAP))
    death = np.floor(death * 86_400.0) / 86_400.0  # whole seconds, like signup
    attributes = {}
    for name, table in segments.attributes.items():
        codes = _Categorical.of(table).sample(rng, segment)
        attributes[name] = np.where(rng.random(n) < NULL_RATE[name], -1, codes).astype(np.int8)
    prefs = rng.gamma(PREF_CONCENTRATION * segments.categories[segment])
    prefs = np.maximum(prefs, 1e-12)
    mean_return = segments.return_prob[segment]
    return _Customers(
        segment=segment,
        signup=signup,
        death=death,
        purchase_rate=rng.gamma(RATE_SHAPE, segments.purchase_rate[segment] / RATE_SHAPE),
        browse_rate=rng.gamma(BROWSE_SHAPE, segments.browse_rate[segment] / BROWSE_SHAPE),
        dropout_rate=dropout,
        unit_price=segments.unit_price[segment]
        * rng.lognormal(-0.5 * CUSTOMER_PRICE_SIGMA**2, CUSTOMER_PRICE_SIGMA, n),
        return_prob=rng.beta(20.0 * mean_return, 20.0 * (1.0 - mean_return)),
        prefs=prefs / prefs.sum(axis=1, keepdims=True),
        attributes=attributes,
    )


def _customer_ids(n: int) -> pa.Array:
    """``C0000001`` ... (zero-padded so that ids sort naturally)."""
    width = max(7, len(str(n)))
    return _prefixed("C", np.arange(1, n + 1), width)


def _prefixed(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pa.array(numbers, type=pa.int64()).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _labels(levels: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    """String array of ``levels[code]`` with nulls where ``code < 0``."""
    return pa.array(levels, type=pa.string()).take(pa.array(codes.astype(np.int32), mask=codes < 0))


def _timestamps(days: np.ndarray) -> pa.Array:
    return pa.array(_days_to_us(days), type=pa.int64()).cast(TS)


def _customers_table(ids: pa.Array, customers: _Customers) -> pa.Table:
    levels = {"region": REGIONS, "gender": GENDERS, "age_band": AGE_BANDS, "channel": CHANNELS}
    columns = [ids, _timestamps(customers.signup)]
    columns += [_labels(levels[name], customers.attributes[name]) for name in levels]
    return pa.Table.from_arrays(columns, schema=ARROW_SCHEMAS["customers"])


def _truth_table(ids: pa.Array, customers: _Customers, segments: _Segments, config: SynthConfig) -> pa.Table:
    """The latent parameters of every customer (rates per day, times UTC)."""
    start, end = _to_day(config.start), _to_day(config.end)
    columns: dict[str, pa.Array | np.ndarray] = {
        "customer_id": ids,
        "segment": customers.segment.astype(np.int32),
        "segment_name": pa.array(segments.names).take(pa.array(customers.segment.astype(np.int32))),
        "signup_ts": _timestamps(customers.signup),
        "death_ts": _timestamps(customers.death),
        "observed_from": _timestamps(np.maximum(customers.signup, start)),
        "observed_until": _timestamps(np.full(len(customers), end)),
        "purchase_rate": customers.purchase_rate,
        "browse_rate": customers.browse_rate,
        "dropout_rate": customers.dropout_rate,
        "season_amplitude": segments.season_amplitude[customers.segment],
        "peak_hour": segments.peak_hour[customers.segment],
        "unit_price": customers.unit_price,
        "mean_line_value": customers.mean_line_value,
        "mean_order_value": customers.mean_order_value,
        "return_prob": customers.return_prob,
    }
    for k, name in enumerate(CATEGORIES):
        columns[f"pref_{name}"] = customers.prefs[:, k]
    recorded = {k: v for k, v in vars(config).items() if k not in _SHIFT_FIELDS}
    recorded |= {"start": str(config.start), "end": str(config.end)}
    if config.shift_at is not None:
        shifted = _shifted_customers(config)
        columns["shifted"] = shifted
        columns["purchase_rate_after_shift"] = np.where(
            shifted, customers.purchase_rate * config.shift_factor, customers.purchase_rate
        )
        recorded |= {
            "shift_at": str(config.shift_at),
            "shift_share": config.shift_share,
            "shift_factor": config.shift_factor,
        }
    table = pa.table(columns)
    return table.replace_schema_metadata({"synth_config": json.dumps(recorded)})


_SHIFT_FIELDS = ("shift_at", "shift_share", "shift_factor")


def _shifted_customers(config: SynthConfig) -> np.ndarray:
    """Which customers the regime shift hits (own random stream: the other draws do not move)."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(3,)))
    return rng.random(config.n_customers) < config.shift_share


def _thin_purchases(
    config: SynthConfig,
    index: int,
    shifted: np.ndarray,
    sessions: _Sessions,
    lines: _Lines,
    returned: tuple[np.ndarray, np.ndarray],
) -> tuple[_Lines, tuple[np.ndarray, np.ndarray]]:
    """Drop the orders (and their returns) of the shifted customers' thinned purchase occasions.

    ``shifted`` flags the chunk's customers. One uniform per session from the chunk's own shift stream;
    an occasion at or after ``shift_at`` is kept when it is below ``shift_factor``.
    """
    assert config.shift_at is not None
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(4, index)))
    draw = rng.random(len(sessions.arrival))
    dropped = (
        sessions.purchase
        & shifted[sessions.customer]
        & (sessions.arrival >= _to_day(config.shift_at))
        & (draw >= config.shift_factor)
    )
    keep = ~dropped[lines.session]
    if keep.all():
        return lines, returned
    position = np.cumsum(keep) - 1
    kept = _Lines(*(getattr(lines, f)[keep] for f in _Lines.__dataclass_fields__))
    index_returned, when = returned
    still = keep[index_returned]
    return kept, (position[index_returned[still]], when[still])


# ---- one chunk of customers: sessions, orders, events --------------------------------------------------


@dataclass(frozen=True)
class _Sessions:
    """Sessions sorted by (customer, arrival); ``arrival`` is the session's last moment (days)."""

    customer: np.ndarray  # index into the chunk's customers
    arrival: np.ndarray
    purchase: np.ndarray  # bool: a purchase occasion (else a browse session)


@dataclass(frozen=True)
class _Lines:
    """Purchased order lines."""

    session: np.ndarray  # index into _Sessions
    position: np.ndarray  # 0, 1, 2 within the order
    category: np.ndarray
    quantity: np.ndarray
    amount: np.ndarray


@dataclass(frozen=True)
class _EventRows:
    session: np.ndarray
    rank: np.ndarray  # order within the session
    event_type: np.ndarray  # index into EVENT_TYPES
    category: np.ndarray  # index into CATEGORIES, -1 = null

    def take(self, order: np.ndarray) -> _EventRows:
        return _EventRows(*(getattr(self, f)[order] for f in _EventRows.__dataclass_fields__))

    @staticmethod
    def concat(parts: list[_EventRows]) -> _EventRows:
        return _EventRows(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _EventRows.__dataclass_fields__)
        )


def _sorted_uniforms(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """For each count c, c sorted U(0, 1) draws, concatenated (order statistics from exponential spacings)."""
    sizes = counts + 1
    ends = np.cumsum(sizes)
    cumulative = np.cumsum(rng.exponential(1.0, int(ends[-1]) if len(ends) else 0))
    base = np.where(ends > sizes, cumulative[np.maximum(ends - sizes - 1, 0)], 0.0)
    total = cumulative[ends - 1] - base
    values = (cumulative - np.repeat(base, sizes)) / np.repeat(total, sizes)
    keep = np.ones(len(values), bool)
    keep[ends - 1] = False
    return values[keep]


def _draw_sessions(
    rng: np.random.Generator, customers: _Customers, season: _SeasonGrid, start: float, end: float
) -> _Sessions:
    """Purchase occasions and browse sessions while alive inside the history window.

    Sessions are one Poisson process of intensity ``(lambda_p + lambda_b) s(t)`` on
    ``[max(signup, start), min(death, end))``, each a purchase with probability
    ``lambda_p / (lambda_p + lambda_b)``. Arrivals are sorted uniforms in cumulative-intensity space
    mapped back through its inverse, so they come out sorted by (customer, arrival).
    """
    lo, hi = np.maximum(customers.signup, start), np.minimum(customers.death, end)
    alive = hi > lo
    profile = customers.segment.astype(np.intp)
    rate = customers.purchase_rate + customers.browse_rate
    s_lo = season.cumulative(profile, lo)
    exposure = np.where(alive, season.cumulative(profile, np.where(alive, hi, lo)) - s_lo, 0.0)
    counts = rng.poisson(rate * exposure)
    customer = np.repeat(np.arange(len(counts)), counts)
    target = s_lo[customer] + _sorted_uniforms(rng, counts) * exposure[customer]
    arrival = np.clip(
        season.inverse(profile[customer], target), lo[customer], np.nextafter(hi[customer], -np.inf)
    )
    purchase = rng.random(len(customer)) * rate[customer] < customers.purchase_rate[customer]
    return _Sessions(customer, arrival, purchase)


def _order_within_groups(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Stable permutation sorting by (group, key) of rows already grouped (non-decreasing ``group``).

    Only the groups whose keys are out of order are sorted, so nearly sorted input is cheap.
    """
    order = np.arange(len(key))
    unsorted = np.flatnonzero((key[1:] < key[:-1]) & (group[1:] == group[:-1]))
    if len(unsorted):
        rows = np.flatnonzero(np.isin(group, np.unique(group[unsorted])))
        order[rows] = rows[np.lexsort((key[rows], group[rows]))]
    return order


def _group_positions(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c-1 for each count c, concatenated."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def _draw_lines(rng: np.random.Generator, customers: _Customers, sessions: _Sessions) -> _Lines:
    """1-3 lines per purchase occasion; category from preferences; lognormal unit prices."""
    occasions = np.flatnonzero(sessions.purchase)
    n_lines = 1 + (rng.random(len(occasions))[:, None] >= np.cumsum(LINES_PER_ORDER_P)[:-1]).sum(axis=1)
    session = np.repeat(occasions, n_lines)
    customer = sessions.customer[session]
    category = _Categorical.of(customers.prefs).sample(rng, customer)
    quantity = 1 + rng.poisson(EXTRA_QUANTITY_MEAN, len(session))
    noise = rng.lognormal(-0.5 * LINE_PRICE_SIGMA**2, LINE_PRICE_SIGMA, len(session))
    price = customers.unit_price[customer] * CATEGORY_PRICE[category] * noise
    amount = _distinct_lines(session, category, quantity, np.round(price * quantity, 2))
    return _Lines(session, _group_positions(n_lines), category, quantity, amount)


def _distinct_lines(
    session: np.ndarray, category: np.ndarray, quantity: np.ndarray, amount: np.ndarray
) -> np.ndarray:
    """Amounts with a cent added to any line identical to an earlier line of its order.

    Keeps every transaction row unique, so contract validation never quarantines one as a duplicate.
    """
    amount = amount.copy()
    changed = True
    while changed:
        changed = False
        for lag in (1, 2):  # orders have at most 3 lines
            same = (session[lag:] == session[:-lag]) & (category[lag:] == category[:-lag])
            same &= (quantity[lag:] == quantity[:-lag]) & (amount[lag:] == amount[:-lag])
            if same.any():
                rows = np.flatnonzero(same) + lag
                amount[rows] = np.round(amount[rows] + 0.01, 2)
                changed = True
    return amount


def _draw_returns(
    rng: np.random.Generator, customers: _Customers, sessions: _Sessions, lines: _Lines
) -> tuple[np.ndarray, np.ndarray]:
    """Which lines are returned (index into lines) and when: at the next session, if within 30 days."""
    following = np.append(sessions.arrival[1:], np.inf)
    same_customer = np.append(sessions.customer[1:] == sessions.customer[:-1], False)
    next_arrival = np.where(same_customer, following, np.inf)
    eligible = next_arrival[lines.session] - sessions.arrival[lines.session] <= RETURN_WINDOW_DAYS
    chosen = rng.random(len(lines.session)) < customers.return_prob[sessions.customer[lines.session]]
    returned = np.flatnonzero(eligible & chosen)
    return returned, next_arrival[lines.session[returned]]


def _purchase_event_rows(
    rng: np.random.Generator, customers: _Customers, segments: _Segments, sessions: _Sessions, lines: _Lines
) -> _EventRows:
    """Per purchase session: maybe app_open; per line, views then maybe add_to_cart in its category."""
    occasions = np.flatnonzero(sessions.purchase)
    app = rng.random(len(occasions)) < segments.app_share[customers.segment[sessions.customer[occasions]]]
    n_views = 1 + rng.poisson(PURCHASE_EXTRA_VIEWS, len(lines.session))
    cart = rng.random(len(lines.session)) < ADD_TO_CART_P
    view_line = np.repeat(np.arange(len(lines.session)), n_views)
    parts = [
        _EventRows(occasions[app], np.zeros(app.sum(), np.int16), np.full(app.sum(), APP_OPEN, np.int8),
                   np.full(app.sum(), -1, np.int8)),
        _EventRows(lines.session[view_line], (1 + 2 * lines.position[view_line]).astype(np.int16),
                   np.full(len(view_line), VIEW, np.int8), lines.category[view_line]),
        _EventRows(lines.session[cart], (2 + 2 * lines.position[cart]).astype(np.int16),
                   np.full(cart.sum(), ADD_TO_CART, np.int8), lines.category[cart]),
    ]  # fmt: skip
    return _EventRows.concat(parts)


def _browse_event_rows(
    rng: np.random.Generator, customers: _Customers, segments: _Segments, sessions: _Sessions
) -> _EventRows:
    """Per browse session: 1 + Poisson events of the segment's type mix around one main category."""
    browses = np.flatnonzero(~sessions.purchase)
    customer = sessions.customer[browses]
    segment = customers.segment[customer]
    n_events = 1 + rng.poisson(segments.session_events[segment] - 1.0)
    session = np.repeat(browses, n_events)
    owner = np.repeat(customer, n_events)
    event_type = _Categorical.of(segments.event_mix).sample(rng, np.repeat(segment, n_events))
    wide = _Categorical.of((1.0 - BROWSE_WIDE_SHARE) * customers.prefs + BROWSE_WIDE_SHARE / len(CATEGORIES))
    category = np.repeat(wide.sample(rng, customer), n_events)
    wander = np.flatnonzero(rng.random(len(session)) >= SESSION_FOCUS)
    category[wander] = wide.sample(rng, owner[wander])
    category = np.where(CATEGORISED_TYPES[event_type], category, -1).astype(np.int8)
    return _EventRows(session, TYPE_RANK[event_type].astype(np.int16), event_type, category)


def _event_times(
    rng: np.random.Generator, rows: _EventRows, sessions: _Sessions, floor_day: np.ndarray
) -> np.ndarray:
    """Times of events sorted by (session, rank): exponential gaps counted back from the arrival.

    Browse sessions end with an event at the arrival; purchase sessions end a checkout gap before
    the order. A session that would start before ``floor_day`` (its midnight, signup or history start)
    is compressed to fit.
    """
    session = rows.session
    starts = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    block = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(session)]))
    gaps = rng.exponential(EVENT_GAP_DAYS, len(session))
    checkout = np.where(sessions.purchase, rng.exponential(CHECKOUT_GAP_DAYS, len(sessions.purchase)), 0.0)
    cumulative = np.cumsum(gaps)
    ends = np.r_[starts[1:], len(session)] - 1
    offset = cumulative[ends][block] - cumulative + checkout[session]
    owner = session[starts]
    room = sessions.arrival[owner] - floor_day[owner]
    span = offset[starts]
    scale = np.where(span > room, room / np.where(span > 0, span, 1.0), 1.0)
    return sessions.arrival[session] - offset * scale[block]


def _transactions_table(
    ids: pa.Array,
    sessions: _Sessions,
    lines: _Lines,
    returned: tuple[np.ndarray, np.ndarray],
    session_numbers: pa.Array,
) -> pa.Table:
    """Purchase lines (order ``O<n>``) and return lines (``R<n>``), sorted by customer and time.

    Purchases happen at their session's arrival and returns at the next session's, so sorting by
    the index of that session (purchases first) sorts by (customer, time).
    """
    index, return_time = returned
    sign = np.r_[np.ones(len(lines.session), np.int64), -np.ones(len(index), np.int64)]
    when = np.r_[2 * lines.session, 2 * (lines.session[index] + 1) + 1]
    order = np.argsort(when, kind="stable")
    ts = np.r_[sessions.arrival[lines.session], return_time][order]
    customer = sessions.customer[np.r_[lines.session, lines.session[index]]][order]
    order_id = pa.concat_arrays(
        [
            pc.binary_join_element_wise("O", session_numbers.take(pa.array(lines.session)), ""),
            pc.binary_join_element_wise("R", session_numbers.take(pa.array(lines.session[index])), ""),
        ]
    ).take(pa.array(order))
    amount = np.r_[lines.amount, lines.amount[index]][order] * sign[order] + 0.0  # + 0.0: no -0.0
    columns = [
        order_id,
        ids.take(pa.array(customer)),
        _timestamps(ts),
        pa.array(amount, type=pa.float64()),
        pa.array(np.r_[lines.quantity, lines.quantity[index]][order] * sign[order]),
        _labels(CATEGORIES, np.r_[lines.category, lines.category[index]][order]),
        pa.array(sign[order] < 0),
    ]
    return pa.Table.from_arrays(columns, schema=ARROW_SCHEMAS["transactions"])


def _events_table(
    ids: pa.Array, sessions: _Sessions, rows: _EventRows, ts_days: np.ndarray, session_numbers: pa.Array
) -> pa.Table:
    """Events sorted by customer and time (ties keep the within-session order)."""
    customer = sessions.customer[rows.session]
    ts = _days_to_us(ts_days)
    order = _order_within_groups(customer, ts)
    session_ids = pc.binary_join_element_wise("S", session_numbers, "")
    columns = [
        ids.take(pa.array(customer[order])),
        pa.array(ts[order], type=pa.int64()).cast(TS),
        _labels(EVENT_TYPES, rows.event_type[order]),
        _labels(CATEGORIES, rows.category[order]),
        session_ids.take(pa.array(rows.session[order])),
    ]
    return pa.Table.from_arrays(columns, schema=ARROW_SCHEMAS["events"])


def _simulate_chunk(
    index: int,
    config: SynthConfig,
    customers: _Customers,
    ids: pa.Array,
    segments: _Segments,
    season: _SeasonGrid,
    first_session: int,
    shifted: np.ndarray | None = None,
) -> tuple[pa.Table, pa.Table, int]:
    """Transactions and events of one chunk of customers; returns them and the number of sessions.

    ``shifted`` (regime shift only) flags which of the chunk's customers the shift hits.
    """
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2, index)))
    start, end = _to_day(config.start), _to_day(config.end)
    sessions = _draw_sessions(rng, customers, season, start, end)
    lines = _draw_lines(rng, customers, sessions)
    returned = _draw_returns(rng, customers, sessions, lines)
    order_lines = lines
    if shifted is not None:  # after every draw of the chunk's own stream, which it leaves as it was
        order_lines, returned = _thin_purchases(config, index, shifted, sessions, lines, returned)
    rows = _EventRows.concat(
        [
            _purchase_event_rows(rng, customers, segments, sessions, lines),
            _browse_event_rows(rng, customers, segments, sessions),
        ]
    )
    rows = rows.take(np.argsort(rows.session * 8 + rows.rank, kind="stable"))  # rank < 8
    floor_day = np.maximum(np.floor(sessions.arrival), np.maximum(customers.signup, start)[sessions.customer])
    ts = _event_times(rng, rows, sessions, floor_day)
    n_sessions = len(sessions.arrival)
    numbers = np.arange(first_session, first_session + n_sessions, dtype=np.int64)
    session_numbers = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), 10, "0")
    return (
        _transactions_table(ids, sessions, order_lines, returned, session_numbers),
        _events_table(ids, sessions, rows, ts, session_numbers),
        n_sessions,
    )


# ---- writing -------------------------------------------------------------------------------------------


@contextmanager
def _atomic_writers(out_dir: Path, schemas: dict[str, pa.Schema]) -> Iterator[dict[str, pq.ParquetWriter]]:
    """Parquet writers on temporary files, renamed to ``<name>.parquet`` only if the block succeeds."""
    temps: dict[str, Path] = {}
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        for name, schema in schemas.items():
            temps[name] = temp_beside(out_dir / f"{name}.parquet")
            writers[name] = pq.ParquetWriter(temps[name], schema, compression="zstd")
        yield writers
    except BaseException:
        for writer in writers.values():
            writer.close()
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        raise
    for writer in writers.values():
        writer.close()
    publish([(temp, out_dir / f"{name}.parquet") for name, temp in temps.items()])


def _write_chunk(writers: dict[str, pq.ParquetWriter], transactions: pa.Table, events: pa.Table) -> None:
    """Append one chunk as one row group per table."""
    writers["transactions"].write_table(transactions, row_group_size=max(1, len(transactions)))
    writers["events"].write_table(events, row_group_size=max(1, len(events)))


def _validate(config: SynthConfig) -> None:
    if config.n_customers < 1 or config.n_segments < 1:
        raise ValueError("n_customers and n_segments must be >= 1")
    if _to_day(config.end) <= _to_day(config.start):
        raise ValueError("end must be after start")
    if config.shift_at is not None:
        _to_day(config.shift_at)  # timezone-aware
        if not 0.0 <= config.shift_share <= 1.0 or not 0.0 <= config.shift_factor <= 1.0:
            raise ValueError("shift_share and shift_factor must be between 0 and 1")


def generate(config: SynthConfig, out_dir: Path) -> SynthResult:
    """Simulate customers, transactions and events and write them (plus ``truth``) to ``out_dir``.

    Files are written atomically as ``<out_dir>/{customers,transactions,events,truth}.parquet``.
    Customers are simulated in fixed chunks of :data:`CHUNK_CUSTOMERS`, each one Parquet row group.
    """
    began = time.perf_counter()
    _validate(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    segments = _segment_table(config)
    customers = _draw_customers(config, segments)
    ids = _customer_ids(config.n_customers)
    start, end = _to_day(config.start), _to_day(config.end)
    season = _SeasonGrid.build(segments.season_amplitude, segments.peak_hour, start - 1.0, end + 1.0)
    truth = _truth_table(ids, customers, segments, config)
    shifted = _shifted_customers(config) if config.shift_at is not None else None
    counts = dict.fromkeys(OUTPUTS, 0)
    schemas = {
        **{name: ARROW_SCHEMAS[name] for name in ("customers", "transactions", "events")},
        "truth": truth.schema,
    }
    with _atomic_writers(out_dir, schemas) as writers, ThreadPoolExecutor(max_workers=1) as writer_thread:
        writers["customers"].write_table(_customers_table(ids, customers))
        writers["truth"].write_table(truth)
        counts["customers"] = counts["truth"] = config.n_customers
        first_session = 0
        pending: Future[None] | None = None
        for index, lo in enumerate(range(0, config.n_customers, CHUNK_CUSTOMERS)):
            hi = min(lo + CHUNK_CUSTOMERS, config.n_customers)
            transactions, events, n_sessions = _simulate_chunk(
                index, config, customers.take(lo, hi), ids[lo:hi], segments, season, first_session,
                None if shifted is None else shifted[lo:hi],
            )  # fmt: skip
            first_session += n_sessions
            counts["transactions"] += len(transactions)
            counts["events"] += len(events)
            logger.debug("chunk %d: customers %d-%d, %d sessions", index, lo, hi, n_sessions)
            if pending is not None:
                pending.result()
            # Encoding a chunk (in the thread) overlaps with simulating the next one; order is kept.
            pending = writer_thread.submit(_write_chunk, writers, transactions, events)
        if pending is not None:
            pending.result()
    seconds = time.perf_counter() - began
    logger.info(
        "synthetic data in %s: %d customers, %d transactions, %d events (%.1f s)",
        out_dir, counts["customers"], counts["transactions"], counts["events"], seconds,
    )  # fmt: skip
    return SynthResult({name: out_dir / f"{name}.parquet" for name in OUTPUTS}, counts, seconds)


# ---- observed history and realised labels --------------------------------------------------------------


def _connect() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def history_before(data_dir: Path, snapshot: datetime) -> pd.DataFrame:
    """Per customer with any activity strictly before ``snapshot``: what a model could observe.

    Columns (index ``customer_id``): ``last_activity`` (latest transaction or event), ``last_purchase``
    (latest purchase line), ``n_orders`` (distinct purchase orders), ``n_events``.
    """
    query = """
        WITH activity AS (
            SELECT customer_id, ts, CASE WHEN NOT is_return THEN order_id END AS purchase_order, 0 AS event
            FROM read_parquet($transactions) WHERE ts < $snapshot
            UNION ALL
            SELECT customer_id, ts, NULL, 1 FROM read_parquet($events) WHERE ts < $snapshot
        )
        SELECT customer_id,
               max(ts) AS last_activity,
               max(ts) FILTER (WHERE purchase_order IS NOT NULL) AS last_purchase,
               count(DISTINCT purchase_order) AS n_orders,
               sum(event)::BIGINT AS n_events
        FROM activity GROUP BY customer_id ORDER BY customer_id
    """
    parameters = {
        "transactions": str(data_dir / "transactions.parquet"),
        "events": str(data_dir / "events.parquet"),
        "snapshot": snapshot,
    }
    with _connect() as connection:
        return connection.execute(query, parameters).df().set_index("customer_id")


def realised_labels(
    data_dir: Path,
    snapshot: datetime,
    *,
    churn_horizon_days: int = 90,
    conversion_horizon_days: int = 30,
    clv_horizon_days: int = 365,
) -> pd.DataFrame:
    """The labels of :data:`LABEL_DEFINITIONS` for customers signed up before ``snapshot``.

    Columns: ``customer_id``, ``churned``, ``converted``, ``value``. Raises ``ValueError`` if a horizon
    runs past the generated history (the label would be censored).
    """
    horizons = (churn_horizon_days, conversion_horizon_days, clv_horizon_days)
    history_end = pq.read_table(data_dir / "truth.parquet", columns=["observed_until"]).column(0)[0].as_py()
    if snapshot + timedelta(days=max(horizons)) > history_end:
        raise ValueError(f"snapshot + horizon runs past the generated history ({history_end})")
    query = """
        SELECT c.customer_id,
               count(t.ts) FILTER (WHERE t.ts <= $t + to_days($churn)) = 0 AS churned,
               count(t.ts) FILTER (WHERE t.ts <= $t + to_days($conversion)) > 0 AS converted,
               coalesce(sum(t.amount) FILTER (WHERE t.ts <= $t + to_days($clv)), 0.0) AS value
        FROM read_parquet($customers) c
        LEFT JOIN read_parquet($transactions) t
          ON t.customer_id = c.customer_id AND NOT t.is_return AND t.ts > $t
        WHERE c.signup_ts < $t
        GROUP BY c.customer_id ORDER BY c.customer_id
    """
    parameters = {
        "customers": str(data_dir / "customers.parquet"),
        "transactions": str(data_dir / "transactions.parquet"),
        "t": snapshot,
        "churn": churn_horizon_days,
        "conversion": conversion_horizon_days,
        "clv": clv_horizon_days,
    }
    with _connect() as connection:
        return connection.execute(query, parameters).df()


# ---- ground truth --------------------------------------------------------------------------------------


def _decay_weight(delta: np.ndarray) -> np.ndarray:
    """(1 - exp(-delta)) / delta, with the limit 1 at 0 (delta >= 0)."""
    delta = np.maximum(delta, 1e-12)
    return -np.expm1(-delta) / delta


def _death_integral(mu: np.ndarray, rate: np.ndarray, u: np.ndarray, exposure: np.ndarray) -> np.ndarray:
    """``int_0^L mu exp(-mu u - rate E(u)) du`` per row from its values on a grid ``u`` (rows or shared).

    ``E(u) = S(t0 + u) - S(t0)`` is the seasonal exposure since ``t0``. The exponent is taken as
    linear within each step, which is exact where ``s`` is constant.
    """
    exponent = mu[:, None] * u + rate[:, None] * exposure
    return (
        mu[:, None]
        * np.diff(u, axis=1)
        * np.exp(-exponent[:, :-1])
        * _decay_weight(np.diff(exponent, axis=1))
    ).sum(axis=1)


def _grid(length: float) -> np.ndarray:
    """``0 .. 1`` in steps of at most 1 / QUADRATURE_STEPS_PER_DAY days of a ``length``-day interval."""
    return np.linspace(0.0, 1.0, max(1, int(np.ceil(length * QUADRATURE_STEPS_PER_DAY))) + 1)


def _exposure_after(
    snapshot: float, horizon: float, profile: np.ndarray, season: _SeasonGrid
) -> tuple[np.ndarray, np.ndarray]:
    """Shared grid ``u`` (1, m+1) over ``[0, horizon]`` and each row's ``S(T + u) - S(T)`` (n, m+1).

    The nodes are the same for everyone, so S is evaluated once per profile and gathered.
    """
    u = (horizon * _grid(horizon))[None, :]
    profiles = np.arange(season.cum.shape[0])
    table = season.cumulative(profiles, np.broadcast_to(snapshot + u, (len(profiles), u.shape[1])))
    return u, (table - table[:, :1])[profile]


def _no_purchase_if_alive(
    mu: np.ndarray,
    rate: np.ndarray,
    snapshot: float,
    horizon: float,
    profile: np.ndarray,
    season: _SeasonGrid,
) -> np.ndarray:
    """P(no purchase in (T, T + h] | alive at T): survive without a purchase, or die before one."""
    u, exposure = _exposure_after(snapshot, horizon, profile, season)
    survive = np.exp(-mu * horizon - rate * exposure[:, -1])
    return survive + _death_integral(mu, rate, u, exposure)


def _discounted_exposure(
    mu: np.ndarray, snapshot: float, horizon: float, profile: np.ndarray, season: _SeasonGrid
) -> np.ndarray:
    """``int_0^H exp(-mu u) s(T + u) du`` per row (expected purchase occasions per unit rate)."""
    u, exposure = _exposure_after(snapshot, horizon, profile, season)
    step = np.diff(u, axis=1)
    weights = np.exp(-mu[:, None] * u[:, :-1]) * _decay_weight(mu[:, None] * step)
    return (weights * np.diff(exposure, axis=1)).sum(axis=1)


def _alive_probability(
    mu: np.ndarray,
    rate: np.ndarray,
    signup: np.ndarray,
    observed_from: np.ndarray,
    last_activity: np.ndarray,
    snapshot: float,
    profile: np.ndarray,
    season: _SeasonGrid,
) -> np.ndarray:
    """P(alive at T | no session arrival in (t_a, T), params), t_a = last activity (or window start).

    Relative weights: alive ``exp(-mu D - rate (S(T) - S(t_a)))``; died in (t_a, T) by the integral;
    and, for customers without any activity, died before the window ``exp(mu (w0 - signup)) - 1``.
    """
    inactive = np.isnan(last_activity)
    t_a = np.where(inactive, observed_from, last_activity)
    length = snapshot - t_a
    u = length[:, None] * _grid(np.max(length, initial=0.0))[None, :]
    cumulative = season.cumulative(profile, t_a[:, None] + u)
    exposure = cumulative - cumulative[:, :1]
    alive = np.exp(-mu * length - rate * exposure[:, -1])
    died = _death_integral(mu, rate, u, exposure)
    before = np.where(inactive, np.expm1(np.minimum(mu * (observed_from - signup), 700.0)), 0.0)
    return alive / (alive + died + before)


def true_scores(
    truth: pd.DataFrame,
    history: pd.DataFrame,
    snapshot: datetime,
    *,
    churn_horizon_days: int = 90,
    conversion_horizon_days: int = 30,
    clv_horizon_days: int = 365,
    chunk_size: int = 20_000,
) -> pd.DataFrame:
    """Bayes-optimal scores at ``snapshot`` from the true parameters and the history before it.

    ``truth`` is ``truth.parquet``; ``history`` has a ``last_activity`` column indexed by customer id
    (as from :func:`history_before`; missing customers had no activity). Only customers signed up
    before the snapshot are scored. Exact for snapshots at 00:00 UTC (sessions never cross midnight).

    Returns ``customer_id``, ``segment``, ``p_alive``, ``p_churn`` (P no purchase in the churn horizon),
    ``p_convert`` (P purchase in the conversion horizon) and ``expected_value`` (expected gross purchase
    value in the CLV horizon); see :data:`LABEL_DEFINITIONS`.
    """
    T = _to_day(snapshot)
    scored = truth[truth["signup_ts"] < snapshot].reset_index(drop=True)
    if len(scored) and _series_to_days(scored["observed_until"]).max() < T:
        raise ValueError("snapshot is after the end of the generated history")
    if len(scored) and _series_to_days(scored["observed_from"]).min() > T:
        raise ValueError("snapshot is before the start of the generated history")
    profiles = scored[["season_amplitude", "peak_hour"]].drop_duplicates().reset_index(drop=True)
    profile = (
        scored[["season_amplitude", "peak_hour"]]
        .merge(profiles.reset_index(), how="left", on=["season_amplitude", "peak_hour"])["index"]
        .to_numpy(np.intp)
    )
    observed_from = _series_to_days(scored["observed_from"])
    horizon = max(churn_horizon_days, conversion_horizon_days, clv_horizon_days)
    season = _SeasonGrid.build(
        profiles["season_amplitude"].to_numpy(), profiles["peak_hour"].to_numpy(),
        np.min(observed_from, initial=T) - 1.0, T + horizon + 1.0,
    )  # fmt: skip
    last = _series_to_days(history["last_activity"].reindex(scored["customer_id"]))
    if np.any(last >= T):
        raise ValueError("history must only hold activity strictly before the snapshot")
    parts = []
    for lo in range(0, len(scored), chunk_size):
        rows = slice(lo, lo + chunk_size)
        parts.append(
            _score_chunk(scored.iloc[rows], last[rows], observed_from[rows], profile[rows], T,
                         season, (churn_horizon_days, conversion_horizon_days, clv_horizon_days))
        )  # fmt: skip
    columns = ["customer_id", "segment", "p_alive", "p_churn", "p_convert", "expected_value"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _score_chunk(
    truth: pd.DataFrame,
    last_activity: np.ndarray,
    observed_from: np.ndarray,
    profile: np.ndarray,
    snapshot: float,
    season: _SeasonGrid,
    horizons: tuple[int, int, int],
) -> pd.DataFrame:
    """:func:`true_scores` for one chunk of customers (times in days; horizons churn, conversion, CLV)."""
    churn_h, conversion_h, clv_h = horizons
    mu = truth["dropout_rate"].to_numpy(np.float64)
    buy = truth["purchase_rate"].to_numpy(np.float64)
    rate = buy + truth["browse_rate"].to_numpy(np.float64)
    signup = _series_to_days(truth["signup_ts"])
    p_alive = _alive_probability(mu, rate, signup, observed_from, last_activity, snapshot, profile, season)

    def no_purchase(horizon: int) -> np.ndarray:
        return 1.0 - p_alive + p_alive * _no_purchase_if_alive(mu, buy, snapshot, horizon, profile, season)

    value = p_alive * truth["mean_order_value"].to_numpy() * buy
    value = value * _discounted_exposure(mu, snapshot, clv_h, profile, season)
    return pd.DataFrame(
        {
            "customer_id": truth["customer_id"].to_numpy(),
            "segment": truth["segment"].to_numpy(),
            "p_alive": p_alive,
            "p_churn": no_purchase(churn_h),
            "p_convert": 1.0 - no_purchase(conversion_h),
            "expected_value": value,
        }
    )


__all__ = [
    "CATEGORIES",
    "LABEL_DEFINITIONS",
    "SynthConfig",
    "SynthResult",
    "generate",
    "history_before",
    "realised_labels",
    "seasonal_intensity",
    "true_scores",
]

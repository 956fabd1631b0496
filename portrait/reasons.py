"""Reason phrases: a feature's value and its effect on a score, in words a marketer can read."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from portrait import catalogue

# feature -> how to say its value. ``{v}`` is the formatted value.
PHRASES: dict[str, str] = {
    "recency_days": "last purchase {v} days ago",
    "first_purchase_days": "first purchase {v} days ago",
    "tenure_days": "customer for {v} days",
    "orders_lifetime": "{v} orders in total",
    "spend_lifetime": "{v} spent in total",
    "avg_order_value": "average order of {v}",
    "avg_order_value_365d": "average order of {v} over the last year",
    "ipt_mean_days": "buys every {v} days on average",
    "ipt_std_days": "purchase gaps vary by {v} days",
    "return_rate_365d": "returned {p} of purchases in the last year",
    "categories_365d": "bought from {v} categories in the last year",
    "orders_trend_30d": "order trend over the last 30 days: {s}",
    "spend_trend_30d": "spend trend over the last 30 days: {s}",
    "days_since_last_event": "last visit {v} days ago",
    "days_since_last_cart": "last add-to-cart {v} days ago",
    "first_event_days": "first visit {v} days ago",
    "events_lifetime": "{v} interactions in total",
    "expected_events_missed": "{v} interactions expected since the last visit at the usual pace",
    "events_30d": "{v} interactions in the last 30 days",
    "events_trend_30d": "activity trend over the last 30 days: {s}",
    "sessions_7d": "{v} sessions in the last 7 days",
    "sessions_30d": "{v} sessions in the last 30 days",
    "view_to_cart_rate_90d": "adds {p} of viewed items to the cart",
    "cart_to_purchase_rate_90d": "{v} orders per add-to-cart (90 days)",
    "campaign_response_90d": "responded to {p} of campaign clicks",
    "region": "region {raw}",
    "gender": "gender {raw}",
    "age_band": "age band {raw}",
    "channel": "acquired through {raw}",
    "btyd_p_active": "active with probability {p} (purchase model)",
    "btyd_orders": "{v} orders expected by the purchase model",
    "btyd_order_value": "expected order value {v} (purchase model)",
}

WINDOW_PHRASES = {
    "orders": "{v} orders in the last {w} days",
    "spend": "{v} spent in the last {w} days",
    "view": "{v} product views in the last {w} days",
    "add_to_cart": "{v} add-to-carts in the last {w} days",
    "search": "{v} searches in the last {w} days",
    "app_open": "{v} app opens in the last {w} days",
    "campaign_click": "{v} campaign clicks in the last {w} days",
}

DEFAULT_WORDS = ("raises the score", "lowers the score")


def target_words(target: str) -> tuple[str, str]:
    """How a reason says a feature pushes model ``target``'s score up / down (its catalogue vocabulary)."""
    try:
        return catalogue.get(target).reason_words
    except KeyError:
        return DEFAULT_WORDS


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.1f}"


def _trend(value: float) -> str:
    if value > 0.2:
        return "rising"
    if value < -0.2:
        return "falling"
    return "steady"


UNKNOWN_PHRASES = {
    "recency_days": "no purchase yet",
    "first_purchase_days": "no purchase yet",
    "days_since_last_event": "no visits yet",
    "first_event_days": "no visits yet",
    "days_since_last_cart": "never added to cart",
    "avg_order_value": "no orders yet",
    "avg_order_value_365d": "no orders in the last year",
    "ipt_mean_days": "no repeat purchase yet",
    "ipt_std_days": "too few purchases to measure the gaps between them",
    "return_rate_365d": "no purchases in the last year",
    "view_to_cart_rate_90d": "no product views in the last 90 days",
    "cart_to_purchase_rate_90d": "no add-to-carts in the last 90 days",
    "campaign_response_90d": "no campaign clicks in the last 90 days",
    "orders_trend_30d": "no orders to compare",
    "spend_trend_30d": "no spend to compare",
    "events_trend_30d": "no activity to compare",
    "expected_events_missed": "no visit pattern yet",
    "region": "region not given",
    "gender": "gender not given",
    "age_band": "age band not given",
    "channel": "acquisition channel not given",
}

_FORMATS: dict[str, Callable[[float], str]] = {"v": _fmt, "p": lambda n: f"{n:.0%}", "s": _trend}
_FIELD = re.compile(r"\{(\w+)\}")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def phrase(feature: str, value: Any) -> str:
    """The feature's value in words, e.g. ``last purchase 143 days ago``."""
    if _missing(value):
        return UNKNOWN_PHRASES.get(feature) or _unknown(feature)
    return _phraser(feature)(value)


def describe(feature: str, value: Any, effect: float, target: str) -> str:
    """``phrase`` plus the direction of its effect, e.g. ``last purchase 143 days ago (raises churn risk)``."""
    return describer(feature, target, effect > 0)(value)


@lru_cache(maxsize=4096)
def describer(feature: str, target: str, raises: bool) -> Callable[[Any], str]:
    """:func:`describe` of one feature, target and direction as a function of the value, worked out once:
    reasons are built by the thousand per request."""
    up, down = target_words(target)
    suffix = f" ({up if raises else down})"
    unknown = phrase(feature, None) + suffix
    say = _phraser(feature)

    def text(value: Any) -> str:
        return unknown if _missing(value) else say(value) + suffix

    return text


def _unknown(feature: str) -> str:
    """A missing value in words, without the feature's column name (e.g. ``nothing spent in total``)."""
    template = PHRASES.get(feature)
    stem, _, window = feature.rpartition("_")
    if template is None and stem in WINDOW_PHRASES and window.endswith("d") and window[:-1].isdigit():
        template = WINDOW_PHRASES[stem].replace("{w}", window[:-1])
    if template is None:
        return "not known"
    if template.startswith("{v} spent"):
        return template.replace("{v} spent", "nothing spent")
    if template.startswith("{v} "):
        return template.replace("{v}", "no", 1)
    return "not known: " + _FIELD.sub("…", template)


@lru_cache(maxsize=1024)
def _phraser(feature: str) -> Callable[[Any], str]:
    """How to say a present value of ``feature``: its template split around its one field, so a value is
    formatted once and concatenated (no ``str.format`` per reason)."""
    template = PHRASES.get(feature)
    if template is None:
        stem, _, window = feature.rpartition("_")
        if stem in WINDOW_PHRASES and window.endswith("d") and window[:-1].isdigit():
            template = WINDOW_PHRASES[stem].replace("{w}", window[:-1])
        else:
            label = f"{feature.replace('_', ' ')} = "
            return lambda value: label + (value if isinstance(value, str) else _fmt(float(value)))
    before, name, after = _FIELD.split(template, maxsplit=1)
    fmt = _FORMATS.get(name)  # None: {raw}, the value as it is

    def say(value: Any) -> str:
        if isinstance(value, str):
            return before + value + after
        return before + (fmt(float(value)) if fmt else str(value)) + after

    return say

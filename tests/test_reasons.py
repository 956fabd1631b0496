"""Reason phrases: every kind of template, missing values and the effect's direction, as a marketer reads them."""

from __future__ import annotations

import math

import pytest

from portrait.reasons import PHRASES, describe, phrase


@pytest.mark.parametrize(
    ("feature", "value", "expected"),
    [
        ("recency_days", 143.4, "last purchase 143 days ago"),
        ("recency_days", 1234.5, "last purchase 1,234 days ago"),  # thousands separator, half to even
        ("recency_days", 2.0, "last purchase 2 days ago"),  # whole numbers without a decimal
        ("ipt_mean_days", 0.35, "buys every 0.3 days on average"),  # one decimal, rounded as Python does
        ("return_rate_365d", 0.125, "returned 12% of purchases in the last year"),
        ("orders_trend_30d", 0.5, "order trend over the last 30 days: rising"),
        ("orders_trend_30d", -0.2, "order trend over the last 30 days: steady"),
        ("orders_trend_30d", -0.21, "order trend over the last 30 days: falling"),
        ("region", "FR", "region FR"),
        ("orders_90d", 3.0, "3 orders in the last 90 days"),  # a window feature without its own phrase
        ("add_to_cart_7d", 12.0, "12 add-to-carts in the last 7 days"),
        ("mystery_score", 0.25, "mystery score = 0.2"),
        ("mystery_segment", "gold", "mystery segment = gold"),
        ("recency_days", None, "no purchase yet"),
        ("recency_days", math.nan, "no purchase yet"),
        ("spend_lifetime", None, "nothing spent in total"),
    ],
)
def test_phrase(feature, value, expected):
    assert phrase(feature, value) == expected


@pytest.mark.parametrize(
    ("effect", "target", "words"),
    [
        (0.4, "churn", "raises churn risk"),
        (-0.4, "churn", "lowers churn risk"),
        (0.1, "conversion", "raises purchase propensity"),
        (-0.1, "clv", "lowers predicted value"),
        (0.1, "something_else", "raises the score"),
    ],
)
def test_describe_adds_the_direction(effect, target, words):
    assert describe("recency_days", 30.2, effect, target) == f"last purchase 30 days ago ({words})"
    assert describe("recency_days", None, effect, target) == f"no purchase yet ({words})"


def test_every_phrase_has_one_field_that_is_filled():
    for feature, template in PHRASES.items():
        value = "XX" if "{raw}" in template else 7.0
        text = phrase(feature, value)
        assert "{" not in text and any(shown in text for shown in ("XX", "7", "rising")), (feature, text)

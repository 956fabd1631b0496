"""Lifecycle stages and RFM segments: the rules in ``portrait.lifecycle``, at their boundaries."""

from __future__ import annotations

import math

import pytest

from portrait.lifecycle import lifecycle_stage, rfm_segment

EDGES = {
    "recency": [10.0, 30.0, 60.0, 120.0],
    "frequency": [1.0, 2.0, 3.0, 5.0],
    "monetary": [50.0, 100.0, 200.0, 400.0],
}


@pytest.mark.parametrize(
    ("recency", "orders", "spend", "expected"),
    [
        (5.0, 8.0, 900.0, ("champions", "555")),
        (10.0, 5.0, 400.0, ("champions", "455")),  # on an edge: the upper quintile (side="right")
        (200.0, 6.0, 10.0, ("loyal", "151")),
        (20.0, 2.0, 100.0, ("potential loyalists", "433")),
        (20.0, 1.0, 20.0, ("potential loyalists", "421")),
        (9.9, 0.5, 20.0, ("new customers", "511")),
        (45.0, 1.0, 20.0, ("need attention", "321")),
        (90.0, 2.0, 20.0, ("at risk", "231")),
        (90.0, 3.0, 20.0, ("loyal", "241")),
        (300.0, 1.0, 20.0, ("hibernating", "121")),
        (None, 3.0, 20.0, ("no purchases", "000")),
        (math.nan, 3.0, 20.0, ("no purchases", "000")),
        (5.0, 0.0, 0.0, ("no purchases", "000")),
    ],
)
def test_rfm_segment(recency, orders, spend, expected):
    assert rfm_segment(recency, orders, spend, EDGES) == expected


def test_rfm_without_edges_scores_the_middle():
    assert rfm_segment(5.0, 2.0, 10.0, {}) == ("need attention", "333")


@pytest.mark.parametrize(
    ("recency", "tenure", "tier", "stage"),
    [
        (5.0, 10.0, None, "new"),
        (5.0, 400.0, None, "active"),
        (5.0, 400.0, "high", "at_risk"),
        (150.0, 400.0, None, "at_risk"),
        (300.0, 400.0, None, "dormant"),
        (400.0, 800.0, None, "churned"),
        (None, 60.0, None, "new"),
        (None, 200.0, None, "dormant"),
    ],
)
def test_lifecycle_stage(recency, tenure, tier, stage):
    assert lifecycle_stage(recency, tenure, tier) == stage

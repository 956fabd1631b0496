"""Prometheus metrics of what the service answers: score distribution per model and tier, feature age.

Exposed on BentoML's ``/metrics`` next to its own request metrics. ``prometheus_client`` is imported when
the service starts (BentoML sets its multiprocess directory in the worker first; see ``bentoml.metrics``).
A request's tags are observed for at most :data:`SAMPLE` customers (evenly spaced), so a 10,000-id call
costs what a 50-id call does; tier counts are exact.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from portrait import catalogue

SAMPLE = 50
PROBABILITY_BUCKETS = tuple(i / 10 for i in range(1, 10)) + (1.0,)
VALUE_BUCKETS = (0.0, 1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0)
AGE_BUCKETS = (
    60.0,
    600.0,
    3600.0,
    6 * 3600.0,
    86400.0,
    2 * 86400.0,
    7 * 86400.0,
    30 * 86400.0,
    365 * 86400.0,
)


@cache
def tag_metrics() -> TagMetrics:
    """The process's metrics (Prometheus registers a metric name once per process)."""
    return TagMetrics()


class TagMetrics:
    """The service's own metrics (one instance per worker)."""

    def __init__(self) -> None:
        from prometheus_client import Counter as PromCounter
        from prometheus_client import Histogram

        self.probability = Histogram(
            "portrait_tag_probability",
            "Probability served per tag model (sampled customers).",
            ["model"],
            buckets=PROBABILITY_BUCKETS,
        )
        self.value = Histogram(
            "portrait_tag_value",
            "Predicted value served per value model (sampled customers).",
            ["model"],
            buckets=VALUE_BUCKETS,
        )
        self.tiers = PromCounter(
            "portrait_tags_by_tier", "Tags served per model and tier.", ["model", "tier"]
        )
        self.feature_age = Histogram(
            "portrait_feature_age_seconds",
            "Age of the features served, per source (batch snapshot, real-time push; sampled customers).",
            ["source"],
            buckets=AGE_BUCKETS,
        )
        self.unknown = PromCounter("portrait_unknown_customers", "Requested ids without features online.")

    def observe(self, tags: Sequence[Any]) -> None:
        """Count tiers of every answered customer and observe scores and ages of a sample of them."""
        found = [t for t in tags if t.found]
        if len(found) != len(tags):
            self.unknown.inc(len(tags) - len(found))
        if not found:
            return
        step = max(1, math.ceil(len(found) / SAMPLE))
        sample = found[::step]
        now = datetime.now(UTC).timestamp()
        for entry in catalogue.tag_models():
            field = entry.response_field
            tiers = Counter(getattr(t, field).tier for t in found if getattr(t, field, None) is not None)
            for tier, n in tiers.items():
                self.tiers.labels(entry.name, tier).inc(n)
            histogram = self.probability if entry.kind == "classifier" else self.value
            child = histogram.labels(entry.name)
            for t in sample:
                tag = getattr(t, field, None)
                if tag is not None:
                    child.observe(getattr(tag, entry.score_field))
        batch, live = self.feature_age.labels("batch"), self.feature_age.labels("realtime")
        for t in sample:
            if t.features_timestamp is not None:
                batch.observe(max(0.0, now - t.features_timestamp.timestamp()))
            pushed = (t.features_timestamps or {}).get("realtime")
            if pushed is not None:
                live.observe(max(0.0, now - pushed.timestamp()))

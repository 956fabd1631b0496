"""The Feast repo: apply, materialize into SQLite, online == offline, point-in-time retrieval."""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd
import pytest

from features import store as fs
from features.pipeline import compute_features
from tests.conftest import TINY_SNAPSHOT


@pytest.fixture
def built(tiny_clean):
    snaps = [TINY_SNAPSHOT - timedelta(days=30), TINY_SNAPSHOT]
    compute_features(tiny_clean.clean_dir, tiny_clean.features_dir, snaps)
    store = fs.apply(tiny_clean)
    return tiny_clean, store


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if isinstance(a, float):
        return b == pytest.approx(a)
    return a == b


def test_registry_has_one_service_per_model(built):
    _, store = built
    names = {s.name for s in store.list_feature_services()}
    assert names == {"churn_v1", "conversion_v1", "clv_v1", "lookalike_v1", fs.SERVING_SERVICE}
    assert {v.name for v in store.list_feature_views()} == {
        "customer_profile",
        "customer_transactions",
        "customer_behaviour",
    }
    lookalike = fs.feature_names(store, "lookalike")
    assert "tenure_days" in lookalike and "region" not in lookalike
    assert "region" in fs.feature_names(store, "churn")


def test_online_features_equal_offline_table(built):
    settings, store = built
    result = fs.materialize(settings, end=TINY_SNAPSHOT + timedelta(days=1))
    assert result["mode"] == "full"
    ids = ["A", "B", "C", "nobody"]
    online = fs.online_features(store, "churn", ids)
    offline = {
        view: pd.read_parquet(settings.features_dir / view / "snapshot=20240601T000000.parquet")
        for view in ("customer_profile", "customer_transactions", "customer_behaviour")
    }
    names = fs.feature_names(store, "churn")
    checked = 0
    for i, cid in enumerate(ids[:3]):
        for frame in offline.values():
            row = frame[frame.customer_id == cid].iloc[0]
            for name in frame.columns:
                if name in names:
                    assert _same(row[name], online[name][i]), (cid, name, row[name], online[name][i])
                    checked += 1
    assert checked > 100
    assert online["orders_lifetime"][3] is None  # unknown customer: no values


def test_incremental_materialize_continues(built):
    settings, store = built
    fs.materialize(settings, end=TINY_SNAPSHOT - timedelta(days=10))
    online = fs.online_features(store, "churn", ["A"])
    assert online["orders_lifetime"][0] == 2  # the earlier snapshot (2024-05-02): o1, o2
    second = fs.materialize(settings, end=TINY_SNAPSHOT + timedelta(days=1))
    assert second["mode"] == "incremental"
    assert fs.online_features(store, "churn", ["A"])["orders_lifetime"][0] == 3


def test_historical_features_are_point_in_time(built):
    settings, store = built
    entity_df = pd.DataFrame(
        {"customer_id": ["A", "A"], "event_timestamp": [TINY_SNAPSHOT - timedelta(days=30), TINY_SNAPSHOT]}
    )
    frame = fs.historical_features(settings, "churn", entity_df, store).sort_values("event_timestamp")
    assert list(frame.orders_lifetime) == [2, 3]

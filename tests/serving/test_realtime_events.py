"""Events in, tags updated at once: POST /v1/events against a real `bentoml serve` of a workspace copy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from features.pipeline import compute_features
from features.tables import snapshot_path
from portrait.settings import Settings
from portrait.workflow import validate
from serving.process import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live(served_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A copy of the served workspace (the shared one stays untouched) and a real server on it."""
    home = tmp_path_factory.mktemp("realtime") / "ws"
    shutil.copytree(served_home, home)
    with ServiceProcess(home, home.parent / "server.log") as server:
        server.wait_ready(120)
        yield server.url, home


def _tags(base: str, ids: list[str]) -> list[dict]:
    response = httpx.post(f"{base}/v1/tags", json={"customer_ids": ids}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_add_to_cart_event_changes_the_tags_at_once_and_reaches_the_next_batch(live) -> None:
    base, home = live
    ids = [f"C{i:07d}" for i in range(1, 80)]
    before = {t["customer_id"]: t for t in _tags(base, ids) if t["found"]}
    # A customer whose propensity can still rise, with no cart in the last day.
    cid = min(before, key=lambda c: abs(before[c]["conversion"]["probability"] - 0.3))
    assert before[cid]["realtime"]["cart_abandoned"] is False
    now = datetime.now(UTC).replace(microsecond=0)
    event = {
        "event_id": f"rt-{cid}-1",
        "customer_id": cid,
        "ts": now.isoformat(),
        "event_type": "add_to_cart",
        "category": "toys",
        "session_id": "rt-session",
    }
    response = httpx.post(f"{base}/v1/events", json={"events": [event]}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "customers_updated": 1}
    after = _tags(base, [cid])[0]
    assert after["realtime"]["cart_abandoned"] is True
    assert after["realtime"]["visited_today"] is True
    assert after["realtime"]["purchased_today"] is False
    assert after["features_timestamps"]["realtime"] is not None
    assert after["conversion"]["probability"] > before[cid]["conversion"]["probability"]
    # A retried batch is not counted twice; a bad item is refused with the batch validator's reason.
    retry = httpx.post(
        f"{base}/v1/events",
        json={"events": [event, {**event, "event_id": "rt-bad", "event_type": "teleport"}]},
        timeout=30,
    ).json()
    assert retry["accepted"] == 0 and retry["duplicates"] == 1
    assert retry["rejected"] == [{"index": 1, "kind": "event", "reason": "unknown_event_type"}]
    # The next batch build includes the event.
    settings = Settings(home=home)
    validate(settings)
    snapshot = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    compute_features(settings.clean_dir, settings.features_dir, [snapshot])
    behaviour = pd.read_parquet(snapshot_path(settings.features_dir, "customer_behaviour", snapshot))
    assert int(behaviour.set_index("customer_id").loc[cid, "add_to_cart_30d"]) == 1


def test_bad_event_requests_get_a_4xx_naming_the_problem(live) -> None:
    base, _ = live
    empty = httpx.post(f"{base}/v1/events", json={}, timeout=30)
    assert empty.status_code == 422 and "at least one item" in empty.text
    unknown_field = httpx.post(f"{base}/v1/events", json={"events": [{"customer": "x"}]}, timeout=30)
    assert unknown_field.status_code == 422 and "customer" in unknown_field.text
    broken = httpx.post(
        f"{base}/v1/events", content=b"{not json", headers={"content-type": "application/json"}, timeout=30
    )
    assert broken.status_code in (400, 422)


def test_metrics_show_the_score_distribution_and_the_feature_age(live) -> None:
    base, home = live
    served = _tags(base, [f"C{i:07d}" for i in range(1, 40)])
    # A second server on the same workspace starts meanwhile: each `bentoml serve` empties its BentoML home's
    # Prometheus folder, so the two must not share one (they did, and the first server's metrics vanished).
    with ServiceProcess(home, home.parent / "second.log") as second:
        second.wait_ready(120)
        assert "portrait_tags_by_tier_total" in httpx.get(f"{base}/metrics", timeout=30).text
        second_home = Path(second.env["BENTOML_HOME"])
    assert second_home.parent == Settings(home=home).data_root / "serving"
    metrics = httpx.get(f"{base}/metrics", timeout=30).text
    tiers = {t["churn"]["tier"] for t in served if t["found"]}  # which tiers depends on the trained model
    assert tiers
    for tier in tiers:
        assert f'portrait_tags_by_tier_total{{model="churn",tier="{tier}"}}' in metrics
    assert 'portrait_tag_probability_bucket{le="0.5",model="conversion"}' in metrics
    assert 'portrait_tag_value_count{model="clv"}' in metrics
    assert 'portrait_feature_age_seconds_bucket{le="+Inf",source="batch"}' in metrics

"""The value tag's parts, range, next order date and top categories, served in ``/v1/tags`` and the export
(issue #21), through the session's real service."""

from __future__ import annotations

from datetime import date

import pytest

from features import store as fs
from serving.tagger import Tagger


def test_value_tag_has_its_parts_range_next_order_and_categories(client, served) -> None:  # noqa: ANN001
    ids = sorted(fs.feature_table_ids(served))[:40]
    response = client.post("/v1/tags", json={"customer_ids": ids})
    assert response.status_code == 200, response.text
    tags = [t for t in response.json() if t["found"]]
    assert tags
    with_parts = 0
    for tag in tags:
        value = tag["value"]
        v = value["predicted_value"]
        assert value["p10"] <= v + 1e-6 and v <= value["p90"] + 1e-6
        categories = value["top_categories"]
        assert categories and all(0.0 <= c["probability"] <= 1.0 for c in categories)
        assert [c["probability"] for c in categories] == sorted(
            (c["probability"] for c in categories), reverse=True
        )
        if value["p_active"] is None:  # no purchase yet: the trees' value, no purchase-model parts
            continue
        with_parts += 1
        product = value["p_active"] * value["expected_orders"] * value["expected_order_value"]
        assert product == pytest.approx(v, rel=1e-6, abs=1e-9)
        assert len(value["parts"]) == 3 and value["parts"][0].startswith("active with probability")
        snapshot = date.fromisoformat(tag["features_timestamp"][:10])
        assert date.fromisoformat(value["next_order_date"]) >= snapshot
        assert 0.0 <= value["next_order_probability"] <= 1.0
    assert with_parts > 0
    schema = client.get("/docs.json").json()
    assert "top_categories" in str(schema) and "next_order_date" in str(schema)


def test_export_has_filterable_value_and_category_columns(served) -> None:  # noqa: ANN001
    tagger = Tagger(served)
    frame = tagger.tags_frame(sorted(fs.feature_table_ids(served))[:50])
    for column in ("value_p10", "value_p90", "value_p_active", "value_next_order_days"):
        assert column in frame.columns
    categories = [c for c in frame.columns if c.startswith("category_")]
    assert categories
    assert ((frame[categories] >= 0) & (frame[categories] <= 1)).all().all()

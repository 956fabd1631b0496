"""A quality card for every tag model over HTTP, and one model's monitoring detail."""

from __future__ import annotations

from portrait import catalogue


def test_every_tag_model_has_a_card(api) -> None:  # noqa: ANN001 - fixture
    response = api.get("/v1/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    for entry in catalogue.tag_models():
        card = models[entry.name]["card"]
        assert card is not None, entry.name
        assert card["model"] == entry.name and card["version"] == models[entry.name]["version"]
        assert card["evidence"] in ("test", "realised")
        assert card["grade"] in ("A", "B", "C", "D", "E")
        assert card["headline_metric"] == entry.headline_metric


def test_one_models_detail_and_an_unknown_model(api) -> None:  # noqa: ANN001 - fixture
    detail = api.get("/v1/models/churn")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["model"]["name"] == "churn" and body["model"]["card"]["model"] == "churn"
    assert isinstance(body["evaluations"], list)
    missing = api.get("/v1/models/nope")
    assert missing.status_code == 404 and "nope" in missing.text

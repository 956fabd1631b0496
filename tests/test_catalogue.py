"""The model catalogue is the one list of models: everything else derives from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features.feast_repo.feature_services import feature_services
from portrait import catalogue
from portrait.reasons import describe
from serving.schemas import CustomerTags
from training.specs import spec_for, tag_specs

ROOT = Path(__file__).resolve().parent.parent


def test_every_model_has_one_declaration() -> None:
    names = catalogue.names()
    assert len(names) == len(set(names))
    assert {e.feature_service for e in catalogue.entries()} == set(catalogue.feature_services().values())
    fields = [e.response_field for e in catalogue.tag_models()]
    assert len(fields) == len(set(fields)) and None not in fields
    assert catalogue.SEGMENT_MODEL in [e.name for e in catalogue.tag_models()]


def test_specs_feature_services_and_schema_derive_from_the_catalogue() -> None:
    specs = tag_specs()
    assert list(specs) == [e.name for e in catalogue.tag_models()]
    for entry in catalogue.tag_models():
        spec = specs[entry.name]
        assert spec.label.horizon_days == entry.label.horizon_days
        assert spec.tiers == entry.tiers and spec.primary_metric == entry.headline_metric
        assert entry.response_field in CustomerTags.model_fields
    assert spec_for("clv", horizon_days=180).label.horizon_days == 180
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        catalogue.get("nope")
    with pytest.raises(ValueError, match="not a tag model"):
        spec_for("lookalike")


def test_reason_words_come_from_the_entry() -> None:
    assert describe("recency_days", 12.0, 0.3, "churn").endswith("(raises churn risk)")
    assert describe("recency_days", 12.0, -0.3, "unknown-model").endswith("(lowers the score)")


def test_feature_services_follow_the_entries(workspace) -> None:  # noqa: ANN001 - fixture
    from features.feast_repo.feature_views import feature_views

    services = {s.name: s for s in feature_services(feature_views(workspace))}
    assert set(services) == {*catalogue.feature_services().values(), catalogue.SERVING_SERVICE}
    lookalike = services[catalogue.get("lookalike").feature_service]
    profile = next(p for p in lookalike.feature_view_projections if p.name == "customer_profile")
    assert [f.name for f in profile.features] == ["tenure_days"]


ADD_A_MODEL = r"""
import json, sys
from datetime import UTC, datetime, timedelta

from portrait import catalogue
from tests.plugins.winback import ENTRY

catalogue.register(ENTRY)  # the only change: one entry (+ its spec module)

from features.synth import SynthConfig
from portrait.settings import get_settings
from portrait.workflow import build_workspace

settings = get_settings()
end = datetime(2025, 1, 1, tzinfo=UTC)
build = build_workspace(
    settings,
    synth=SynthConfig(n_customers=1500, seed=7, start=end - timedelta(days=3 * 365), end=end),
    models=["churn", "winback"],
    trials=1,
    n_train=2,
    step_days=60,
)
from starlette.testclient import TestClient
from serving.service import Portrait
from training.tracking import configure, model_table

with TestClient(Portrait.to_asgi()) as client:
    tags = client.post("/v1/tags", json={"customer_ids": ["C0000001", "C0000002"]})
    models = client.get("/v1/models")
    schema = client.get("/docs.json").json()
table = model_table(configure(settings))
from features import store as fs
services = [s.name for s in fs.feature_store(settings).list_feature_services()]
print(json.dumps({
    "decision": build.outcomes["winback"].decision.promoted,
    "tags_status": tags.status_code,
    "tags": tags.json(),
    "models": [m["name"] for m in models.json()["models"]],
    "aliases": table[table.model == "winback"].aliases.tolist(),
    "services": services,
    "schema_has_field": "winback" in json.dumps(schema),
}))
"""


@pytest.mark.slow
def test_a_model_added_to_the_catalogue_is_trained_registered_promoted_and_served(tmp_path: Path) -> None:
    env = {**os.environ, "PORTRAIT_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("PORTRAIT_API_KEYS", None)
    done = subprocess.run(
        [sys.executable, "-c", ADD_A_MODEL], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["decision"] is True  # first version: promoted
    assert result["aliases"] == ["champion"]
    assert "winback_v1" in result["services"]
    assert result["tags_status"] == 200
    tagged = [t for t in result["tags"] if t["found"]]
    assert tagged, result["tags"]
    for tag in tagged:
        assert 0.0 <= tag["winback"]["probability"] <= 1.0
        assert tag["winback"]["tier"] in ("likely", "unlikely")
        assert tag["winback"]["horizon_days"] == 60
        assert tag["churn"] is not None  # the other models are unaffected
        assert all(r["text"].endswith("win-back odds)") for r in tag["winback"]["reasons"])
    assert "winback" in result["models"] and "churn" in result["models"]
    assert result["schema_has_field"]

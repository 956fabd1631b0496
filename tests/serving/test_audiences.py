"""/v1/audiences on the real service (in-process, the session's workspace with every model trained)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import SNAPSHOT

HIGH_CHURN_SPENDERS = {
    "and": [
        {"field": "churn_tier", "op": "in", "value": ["high", "medium"]},
        {"field": "spend_365d", "op": ">=", "value": 20},
        {"not": {"field": "region", "op": "eq", "value": "north"}},
    ]
}


def population(live) -> pd.DataFrame:
    from serving.audiences import book_of

    return pd.read_parquet(book_of(live).population.path)


def audit(served) -> list[dict]:
    """The audit trail's records of audience operations (portrait.audit)."""
    path = served.audit_log
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [x for x in lines if "audience_id" in x]


def create(client, body: dict, **headers) -> dict:
    r = client.post("/v1/audiences", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_the_population_is_every_customer_with_served_tags_and_snapshot_features(client, live, served):
    pop = population(live)
    profile = pd.read_parquet(
        served.features_dir / "customer_profile" / f"snapshot={SNAPSHOT:%Y%m%dT%H%M%S}.parquet"
    )
    assert sorted(pop.customer_id) == sorted(profile.customer_id.astype(str))
    assert {"churn_tier", "conversion_probability", "value_predicted", "lifecycle_stage", "rfm_segment",
            "spend_365d", "region", "sessions_30d"} <= set(pop.columns)  # fmt: skip
    ids = pop.customer_id.iloc[[0, 7, 99]].tolist()
    tags = {t["customer_id"]: t for t in client.post("/v1/tags", json={"customer_ids": ids}).json()}
    for row in pop.set_index("customer_id").loc[ids].itertuples():
        assert row.churn_probability == pytest.approx(tags[row.Index]["churn"]["probability"])
        assert row.conversion_tier == tags[row.Index]["conversion"]["tier"]
        assert row.lifecycle_stage == tags[row.Index]["lifecycle_stage"]


def test_dry_run_gives_size_and_tiers_and_stores_nothing(client, live, served):
    before = client.get("/v1/audiences").json()["audiences"]
    lines = len(audit(served))
    r = client.post("/v1/audiences", json={"filter": HIGH_CHURN_SPENDERS, "dry_run": True})
    assert r.status_code == 200, r.text
    body = r.json()
    pop = population(live)
    expected = pop[pop.churn_tier.isin(["high", "medium"]) & (pop.spend_365d >= 20) & (pop.region != "north")]
    assert body["size"] == len(expected) > 0 and body["population"] == len(pop)
    assert body["by_tier"]["churn_tier"] == expected.churn_tier.value_counts().sort_index().to_dict()
    assert body["by_tier"]["value_tier"] == expected.value_tier.value_counts().sort_index().to_dict()
    assert client.get("/v1/audiences").json()["audiences"] == before and len(audit(served)) == lines


def test_create_show_list_export_delete_with_an_audit_trail(client, live, served, monkeypatch):
    keys = {
        "writer": ["audiences:write", "audiences:read"],
        "reader": ["audiences:read"],
        "tags": ["tags:read"],
    }
    monkeypatch.setattr(live.settings, "api_keys", keys)
    writer, reader = {"X-API-Key": "writer"}, {"Authorization": "Bearer reader"}
    body = {"filter": HIGH_CHURN_SPENDERS, "name": "high churn spenders"}
    assert client.post("/v1/audiences", json=body).status_code == 401
    denied = client.post("/v1/audiences", json=body, headers=reader)
    assert denied.status_code == 403 and "audiences:write" in denied.json()["error"]
    assert client.get("/v1/audiences", headers={"X-API-Key": "tags"}).status_code == 403
    record = create(client, body, **writer)
    pop = population(live)
    expected = sorted(
        pop[
            pop.churn_tier.isin(["high", "medium"]) & (pop.spend_365d >= 20) & (pop.region != "north")
        ].customer_id
    )
    assert (
        record["size"] == len(expected)
        and record["kind"] == "filter"
        and record["name"] == "high churn spenders"
    )
    assert record["definition"]["filter"]["and"][1] == {"field": "spend_365d", "op": ">=", "value": 20.0}
    assert record["creator"].startswith("key:") and "writer" not in record["creator"]
    assert record["model_versions"] == {n: v for n, v in live.tagger.versions.items() if n != "lookalike"}
    assert record["snapshot"].startswith(SNAPSHOT.date().isoformat())
    folder = served.data_root / "audiences" / record["id"]
    assert (folder / "definition.json").exists() and (folder / "members.parquet").exists()

    shown = client.get(f"/v1/audiences/{record['id']}", headers=reader).json()
    assert shown == record
    listed = client.get("/v1/audiences", headers=reader).json()["audiences"]
    assert record["id"] in [a["id"] for a in listed]
    csv = client.get(f"/v1/audiences/{record['id']}/export", params={"format": "csv"}, headers=reader)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert record["id"] in csv.headers["content-disposition"]
    assert pd.read_csv(io.StringIO(csv.text)).customer_id.tolist() == expected
    parquet = client.get(f"/v1/audiences/{record['id']}/export?format=parquet", headers=reader)
    assert parquet.status_code == 200
    assert pd.read_parquet(io.BytesIO(parquet.content)).customer_id.tolist() == expected
    assert client.delete(f"/v1/audiences/{record['id']}", headers=reader).status_code == 403
    gone = client.delete(f"/v1/audiences/{record['id']}", headers=writer)
    assert gone.status_code == 200 and gone.json()["id"] == record["id"] and not folder.exists()
    assert client.get(f"/v1/audiences/{record['id']}", headers=reader).status_code == 404

    trail = [x for x in audit(served) if x["audience_id"] == record["id"]]
    assert [x["operation"] for x in trail] == ["create", "export", "export", "delete"]
    assert [x["action"].split(" ")[0] for x in trail] == ["POST", "GET", "GET", "DELETE"]
    assert {x["outcome"] for x in trail} == {"allowed"} and len({x["request_id"] for x in trail}) == 4
    writer_print, reader_print = trail[0]["caller"], trail[1]["caller"]
    assert (
        writer_print == record["creator"]
        and reader_print != writer_print
        and trail[3]["caller"] == writer_print
    )
    assert [x.get("format") for x in trail[1:3]] == ["csv", "parquet"] and trail[1]["rows"] == len(expected)
    assert all("writer" not in json.dumps(x) and "reader" not in json.dumps(x) for x in trail)  # no raw keys


@pytest.mark.parametrize(
    ("body", "status", "problem"),
    [
        (
            {"filter": {"field": "spend_356d", "op": ">", "value": 1}},
            422,
            "unknown field 'spend_356d'; did you mean spend_365d",
        ),
        ({"filter": {"field": "spend_365d", "op": ">", "value": "lots"}}, 422, "expects a number"),
        ({"filter": {"field": "churn_tier", "op": "between", "value": ["a", "b"]}}, 422, "numeric field"),
        ({"filter": {"field": "churn_tier", "op": "like", "value": "h%"}}, 422, "filter"),
        ({"filter": {"or": []}}, 422, "filter"),
        (
            {"filter": {"field": "region", "op": "eq", "value": "x"}, "customer_ids": ["C0000001"]},
            422,
            "exactly one of",
        ),
        ({"name": "nothing"}, 422, "exactly one of"),
        ({"filter": {"field": "region", "op": "eq", "value": "atlantis"}}, 422, "empty"),
        ({"customer_ids": ["ghost-1", "ghost-2"]}, 422, "none of the 2 customer ids"),
        (
            {
                "filter": {"field": "spend_365d", "op": ">", "value": 0},
                "control_share": 0.1,
                "stratify_by": "nope",
            },
            422,
            "cannot stratify by 'nope'",
        ),
        ({"lookalike": {"seed_ids": ["ghost"], "size": 10}}, 422, "unknown_seed"),
        ({"lookalike": {"seed_ids": ["C0000001"], "size": 10, "preset": "broad"}}, 422, "exactly one of"),
    ],
)
def test_bad_requests_get_4xx_naming_the_problem(client, body, status, problem):
    r = client.post("/v1/audiences", json=body)
    assert r.status_code == status, r.text
    assert problem in r.json()["error"], r.text


@pytest.mark.parametrize("audience_id", ["aud_0000000000000000", "nope", "aud_..%5C..%5Cdata"])
def test_unknown_audience_ids_are_404_everywhere(client, audience_id):
    answers = [
        client.get(f"/v1/audiences/{audience_id}"),
        client.get(f"/v1/audiences/{audience_id}/export"),
        client.get(f"/v1/audiences/{audience_id}/insight"),
        client.get(f"/v1/audiences/{audience_id}/insight.html"),
        client.delete(f"/v1/audiences/{audience_id}"),
        client.post(f"/v1/audiences/{audience_id}/holdout", json={"control_share": 0.1}),
        client.post(f"/v1/audiences/{audience_id}/members", json={"customer_ids": ["C0000001"]}),
        client.post(f"/v1/audiences/{audience_id}/outcomes", json={"converted_ids": []}),
    ]
    for answer in answers:
        assert answer.status_code == 404, answer.text
        assert "unknown audience" in answer.json()["error"]


def test_export_refuses_bad_formats_and_groups(client):
    record = create(client, {"customer_ids": ["C0000001", "C0000002", "C0000003"]})
    bad = client.get(f"/v1/audiences/{record['id']}/export", params={"format": "xlsx"})
    assert bad.status_code == 422 and "format" in bad.json()["error"]
    no_holdout = client.get(f"/v1/audiences/{record['id']}/export", params={"group": "control"})
    assert no_holdout.status_code == 409 and "no holdout" in no_holdout.json()["error"]


def test_insight_shows_what_sets_the_audience_apart(client, live):
    record = create(
        client, {"filter": {"field": "churn_tier", "op": "eq", "value": "high"}, "name": "at risk"}
    )
    r = client.get(f"/v1/audiences/{record['id']}/insight")
    assert r.status_code == 200, r.text
    body = r.json()
    pop = population(live)
    assert body["audience_size"] == (pop.churn_tier == "high").sum() and body["population_size"] == len(pop)
    churn = next(x for x in body["numeric"] if x["field"] == "churn_probability")
    assert churn["significant"] and churn["lift"] > 1
    assert churn["audience_mean"] == pytest.approx(pop.churn_probability[pop.churn_tier == "high"].mean())
    high = next(x for x in body["categorical"] if x["field"] == "churn_tier" and x["value"] == "high")
    assert high["audience_share"] == 1.0 and high["significant"]
    assert body["top_traits"] and all(isinstance(t, str) and t for t in body["top_traits"])
    assert any("churn" in t for t in body["top_traits"])
    assert body["tests"] > 0 and all(
        x["q_value"] is None or x["q_value"] >= (x["p_value"] or 0) for x in body["numeric"]
    )


def test_holdout_members_and_outcomes_report_the_lift(client, live):
    pop = population(live)
    ids = pop.customer_id.iloc[:1200].tolist()
    record = create(client, {"customer_ids": ids[:1000], "control_share": 0.2})
    holdout = record["holdout"]
    assert holdout["stratify_by"] == "conversion_tier" and abs(holdout["control"] - 200) <= 3
    for counts in holdout["by_stratum"].values():
        total = counts["control"] + counts["treatment"]
        assert counts["control"] == round(0.2 * total)
    url = f"/v1/audiences/{record['id']}"
    first = pd.read_csv(io.StringIO(client.get(f"{url}/export").text))
    assert set(first.group) == {"treatment", "control"}
    again = pd.read_csv(io.StringIO(client.get(f"{url}/export").text))
    assert again.equals(first)
    grown = client.post(f"{url}/members", json={"customer_ids": ids[900:1200]})
    assert grown.status_code == 200 and grown.json()["size"] == 1200
    after = pd.read_csv(io.StringIO(client.get(f"{url}/export").text)).merge(
        first, on="customer_id", suffixes=("", "_0")
    )
    assert len(after) == 1000 and (after.group == after.group_0).all()
    control = pd.read_csv(io.StringIO(client.get(f"{url}/export", params={"group": "control"}).text))
    assert set(control.group) == {"control"} and len(control) == grown.json()["holdout"]["control"]
    everyone = pd.read_csv(io.StringIO(client.get(f"{url}/export").text))
    treated = everyone[everyone.group == "treatment"].customer_id.tolist()
    held = everyone[everyone.group == "control"].customer_id.tolist()
    converted = treated[: len(treated) // 4] + held[: len(held) // 10]
    r = client.post(f"{url}/outcomes", json={"converted_ids": converted, "confidence": 0.9})
    assert r.status_code == 200, r.text
    report = r.json()
    assert (
        report["treatment_converted"] == len(treated) // 4 and report["control_converted"] == len(held) // 10
    )
    low, high = report["lift_ci"]
    assert low < report["lift"] < high and report["confidence"] == 0.9
    assert client.get(url).json()["outcomes"] == report
    bad = client.post(f"{url}/holdout", json={"control_share": 1.5})
    assert bad.status_code == 422


def test_lookalike_plan_presets_and_creation(client, live):
    pop = population(live)
    rng = np.random.default_rng(0)
    seed = rng.choice(pop[pop.churn_tier == "high"].customer_id.to_numpy(), 150, replace=False).tolist()
    r = client.post("/v1/audiences/plan", json={"seed_ids": [*seed, "ghost-1"]})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["seed_known"] == 150 and plan["unknown_seed_ids"] == ["ghost-1"]
    assert any("not customers the model knows" in w for w in plan["warnings"])
    assert set(plan["presets"]) == {"narrow", "balanced", "broad"}
    n = plan["population"]
    for name, share in {"narrow": 0.025, "balanced": 0.05, "broad": 0.10}.items():
        assert plan["presets"][name]["size"] == round(share * n)
        point = plan["presets"][name]
        assert 0 <= point["precision_low"] <= point["expected_precision"] <= point["precision_high"] <= 1
    assert "overlapping segments" in plan["note"]
    recall = [p["expected_recall"] for p in plan["curve"]]
    assert recall == sorted(recall) and plan["method"] == "classifier"
    small = client.post("/v1/audiences/plan", json={"seed_ids": seed[:60]})
    assert (
        small.status_code == 422
        and "seed_too_small" in small.json()["error"]
        and "at least 100" in small.json()["error"]
    )
    most = client.post(
        "/v1/audiences/plan", json={"seed_ids": pop.customer_id.iloc[: int(0.6 * len(pop))].tolist()}
    )
    assert most.status_code == 422 and "seed_too_large" in most.json()["error"]
    unknown = client.post("/v1/audiences/plan", json={"seed_ids": ["ghost-1", "ghost-2"]})
    assert unknown.status_code == 422 and "unknown_seed" in unknown.json()["error"]

    base = create(client, {"customer_ids": seed, "name": "seed"})
    from_plan = client.post("/v1/audiences/plan", json={"seed_audience_id": base["id"]}).json()
    assert from_plan["presets"] == {k: v for k, v in plan["presets"].items()}
    made = create(
        client, {"lookalike": {"seed_audience_id": base["id"], "preset": "narrow", "method": "classifier"}}
    )
    assert made["kind"] == "lookalike" and made["size"] == plan["presets"]["narrow"]["size"]
    assert made["definition"]["preset"] == "narrow" and made["definition"]["method_used"] == "classifier"
    members = pd.read_parquet(
        io.BytesIO(client.get(f"/v1/audiences/{made['id']}/export?format=parquet").content)
    )
    assert list(members.columns) == ["customer_id", "score"] and not set(members.customer_id) & set(seed)


def test_every_audience_route_has_its_scope():
    from serving.audiences import ROUTES, route, router
    from serving.web import ROUTE_SCOPES

    declared = {route(m, r.path.removeprefix("/v1/audiences")) for r in router.routes for m in r.methods}
    assert declared == set(ROUTES)
    assert {ROUTE_SCOPES[r] for r in ROUTES} == {"audiences:read", "audiences:write"}
    assert all(ROUTE_SCOPES[r] == "audiences:read" for r in ROUTES if r.startswith("GET "))

"""Lookalike audiences on a small synthetic population (4,000 customers, six latent segments).

The synthetic workspace and the fitted model are built once per module; the MLflow test trains in the
``workspace`` fixture (its own PORTRAIT_HOME, so MLflow writes to the temporary store, never mlruns/).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.pipeline import compute_features
from features.synth import SynthConfig, generate
from features.validate import validate_workspace
from portrait.lookalike import (
    ExpansionRequest,
    LookalikeError,
    LookalikeModel,
    LookalikeParams,
    expand_csv,
    read_seed_csv,
)
from portrait.settings import Settings
from training.lookalike import (
    PopulationFrame,
    behavioural_segments,
    build_baseline,
    build_lookalike,
    evaluate_cases,
    load_population,
    make_cases,
    summarise,
    train_lookalike,
    truth_segments,
)

N_CUSTOMERS = 4_000
START, END = datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def synth_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A synthetic workspace: raw (with truth.parquet), validated inputs and one feature snapshot."""
    settings = Settings(home=tmp_path_factory.mktemp("lookalike"))
    settings.ensure_dirs()
    generate(SynthConfig(n_customers=N_CUSTOMERS, seed=3, start=START, end=END), settings.raw_dir)
    validate_workspace(settings, now=END)
    compute_features(settings.clean_dir, settings.features_dir, [END])
    return settings


@pytest.fixture(scope="module")
def population(synth_home: Settings) -> PopulationFrame:
    return load_population(synth_home)


@pytest.fixture(scope="module")
def model(population: PopulationFrame) -> LookalikeModel:
    return build_lookalike(population, LookalikeParams())


@pytest.fixture(scope="module")
def segments(synth_home: Settings, population: PopulationFrame) -> dict[str, np.ndarray]:
    found = truth_segments(synth_home.raw_dir, population.ids)
    assert found, "synthetic data must come with truth.parquet segments"
    return found


def _seed(
    segments: dict[str, np.ndarray], name: str | None = None, size: int = 150, seed: int = 0
) -> list[str]:
    name = name or sorted(segments)[0]
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(segments[name], size=size, replace=False).tolist())


# ---- audience rules ---------------------------------------------------------------------------------------


def test_population_comes_from_the_lookalike_feature_service(population: PopulationFrame) -> None:
    assert population.feature_service == "lookalike_v1"
    assert "tenure_days" in population.features and "region" not in population.features
    assert len(population.frame) == N_CUSTOMERS


@pytest.mark.parametrize("method", ["similarity", "classifier"])
def test_seed_never_in_audience_unless_asked(model: LookalikeModel, segments, method: str) -> None:
    seed = _seed(segments)
    result = model.expand(ExpansionRequest(seed_ids=seed, size=500, method=method))
    assert result.method == method
    assert result.returned == 500
    assert not set(seed) & set(result.customer_ids)
    kept = model.expand(ExpansionRequest(seed_ids=seed, size=500, method=method, exclude_seed=False))
    assert set(seed) & set(kept.customer_ids), (
        "seed members are alike to their seed and come back when allowed"
    )


@pytest.mark.parametrize("method", ["similarity", "classifier"])
def test_excluded_ids_never_appear(model: LookalikeModel, segments, method: str) -> None:
    seed = _seed(segments)
    first = model.expand(ExpansionRequest(seed_ids=seed, size=300, method=method))
    excluded = first.customer_ids[:200] + ["not-a-customer"]
    second = model.expand(ExpansionRequest(seed_ids=seed, size=300, exclude_ids=excluded, method=method))
    assert second.returned == 300
    assert not set(excluded) & set(second.customer_ids)
    assert not set(seed) & set(second.customer_ids)
    assert second.excluded == len(seed) + 200
    assert second.customer_ids[:100] == first.customer_ids[200:300], (
        "the ranking continues past the exclusions"
    )


def test_results_are_ranked_and_deterministic(model: LookalikeModel, segments, tmp_path: Path) -> None:
    seed = _seed(segments, size=200)
    for method in ("similarity", "classifier"):
        request = ExpansionRequest(seed_ids=seed, size=400, method=method)
        a, b = model.expand(request), model.expand(request)
        assert a == b
        shuffled = model.expand(replace(request, seed_ids=list(reversed(seed)) + seed[:5]))
        assert shuffled.audience == a.audience, "seed order and duplicates do not matter"
        scores = np.array(a.scores)
        assert np.all(np.diff(scores) <= 0)
        # Equal scores are ordered by customer_id.
        for (id1, s1), (id2, s2) in zip(a.audience, a.audience[1:], strict=False):
            if s1 == s2:
                assert id1 < id2
    reloaded = LookalikeModel.load(model.save(tmp_path / "artefact"))
    assert reloaded.has_index
    for method in ("similarity", "classifier"):
        request = ExpansionRequest(seed_ids=seed, size=400, method=method)
        assert reloaded.expand(request) == model.expand(request)


def test_a_segment_seed_returns_mostly_that_segment(model: LookalikeModel, segments) -> None:
    n = model.population_size
    precisions, base_rates = [], []
    for name, members in segments.items():
        seed = _seed(segments, name, size=100)
        rest = set(members) - set(seed)
        result = model.expand(ExpansionRequest(seed_ids=seed, size=len(rest)))
        precision = len(rest & set(result.customer_ids)) / len(rest)
        base_rate = len(rest) / (n - len(seed))
        assert precision > 1.5 * base_rate, (name, precision, base_rate)
        precisions.append(precision)
        base_rates.append(base_rate)
    assert np.mean(precisions) > 2.0 * np.mean(base_rates)


def test_unknown_seed_ids_are_reported_not_fatal(model: LookalikeModel, segments) -> None:
    seed = _seed(segments, size=120)
    unknown = ["ghost-1", "ghost-2", "ghost-1"]
    result = model.expand(ExpansionRequest(seed_ids=seed + unknown, size=50))
    assert result.unknown_seed_ids == ["ghost-1", "ghost-2"]
    assert result.seed_known == 120 and result.seed_size == 122
    assert result.counts["seed_unknown"] == 2
    assert any("not in the model's population" in w for w in result.warnings)
    assert result.audience == model.expand(ExpansionRequest(seed_ids=seed, size=50)).audience


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"seed_ids": [], "size": 10}, "empty_seed"),
        ({"seed_ids": None, "size": 10}, "empty_seed"),
        ({"seed_ids": ["  ", ""], "size": 10}, "empty_seed"),
        ({"seed_ids": ["ghost-1", "ghost-2"], "size": 10}, "unknown_seed"),
        ({"seed_ids": "KNOWN", "size": 0}, "bad_size"),
        ({"seed_ids": "KNOWN", "size": -3}, "bad_size"),
        ({"seed_ids": "KNOWN", "size": N_CUSTOMERS}, "size_too_large"),
        ({"seed_ids": "KNOWN", "size": 10**9}, "size_too_large"),
        ({"seed_ids": "KNOWN", "fraction": 0.0}, "bad_fraction"),
        ({"seed_ids": "KNOWN", "fraction": 1.5}, "bad_fraction"),
        ({"seed_ids": "KNOWN", "fraction": math.nan}, "bad_fraction"),
        ({"seed_ids": "KNOWN", "fraction": 1e-9}, "bad_fraction"),
        ({"seed_ids": "KNOWN", "size": 10, "fraction": 0.1}, "bad_size"),
        ({"seed_ids": "KNOWN"}, "bad_size"),
        ({"seed_ids": "KNOWN", "size": 10, "method": "magic"}, "bad_method"),
        ({"seed_ids": "KNOWN", "size": 10, "colour": "red"}, "bad_request"),
        ({"seed_ids": "KNOWN", "size": 10, "min_score": "high"}, "bad_min_score"),
        ({"seed_ids": "KNOWN", "size": 10, "min_score": math.inf}, "bad_min_score"),
        ({"seed_ids": "one-id", "size": 10}, "bad_seed"),
    ],
)
def test_bad_requests_raise_clear_errors(model: LookalikeModel, request_: dict, code: str) -> None:
    if isinstance(request_["seed_ids"], str) and request_["seed_ids"] == "KNOWN":
        request_ = request_ | {"seed_ids": model.customer_ids[:20].tolist()}
    with pytest.raises(LookalikeError) as info:
        model.expand(request_)
    assert info.value.code == code
    assert len(str(info.value)) > 15


def test_size_is_checked_against_the_population_left_after_exclusions(model: LookalikeModel) -> None:
    seed = model.customer_ids[:100].tolist()
    available = model.population_size - 100
    assert model.expand({"seed_ids": seed, "size": available, "method": "similarity"}).returned == available
    with pytest.raises(LookalikeError, match="only 3,899 are available") as info:
        model.expand({"seed_ids": seed, "size": available, "exclude_ids": model.customer_ids[-1:].tolist()})
    assert info.value.code == "size_too_large"


def test_fraction_and_min_score(model: LookalikeModel, segments) -> None:
    seed = _seed(segments)
    result = model.expand({"seed_ids": seed, "fraction": 0.05})
    assert result.requested == round(0.05 * N_CUSTOMERS) == result.returned
    cut = result.scores[49]
    filtered = model.expand({"seed_ids": seed, "fraction": 0.05, "min_score": cut})
    assert filtered.returned >= 50 and min(filtered.scores) >= cut
    assert filtered.below_min_score == result.returned - filtered.returned
    assert filtered.customer_ids == result.customer_ids[: filtered.returned]


def test_auto_picks_the_method_by_seed_size(population: PopulationFrame, segments) -> None:
    small = build_lookalike(population, LookalikeParams(classifier_min_seed=200), build_index=False)
    assert small.expand({"seed_ids": _seed(segments, size=199), "size": 50}).method == "similarity"
    assert small.expand({"seed_ids": _seed(segments, size=200), "size": 50}).method == "classifier"


def test_ann_candidates_agree_with_exact_scoring(model: LookalikeModel, segments) -> None:
    exact = LookalikeModel.from_vectors(
        model.representation, model.customer_ids, model.vectors, model.params, build_index=False
    )
    seed = _seed(segments, size=150)
    request = ExpansionRequest(seed_ids=seed, size=40, method="similarity")
    approx = model.expand(request)
    assert approx.used_index, "a small audience is taken from the hnswlib index"
    truth = exact.expand(request)
    assert not truth.used_index
    assert len(set(approx.customer_ids) & set(truth.customer_ids)) / 40 >= 0.95


def test_model_beats_the_baseline_on_synthetic_segments(population: PopulationFrame, model, segments) -> None:
    cases = make_cases(segments, (50, 100, 200), random_seed=11)
    assert {c.seed_size for c in cases} == {50, 100, 200}
    n = len(population.frame)
    ours = summarise(evaluate_cases(model, cases, n))
    base = summarise(evaluate_cases(build_baseline(population), cases, n))
    for size in (50, 100, 200):
        assert ours[f"recall_at_size_s{size}"] > base[f"recall_at_size_s{size}"], (size, ours, base)
        assert ours[f"lift_s{size}"] > 2.0


def test_behavioural_segments_for_data_without_ground_truth(synth_home: Settings, population, model) -> None:
    segments = behavioural_segments(population, synth_home.clean_dir)
    assert "top_decile_spend_365d" in segments
    assert len(segments["top_decile_spend_365d"]) == pytest.approx(0.1 * N_CUSTOMERS, rel=0.05)
    bought = [k for k in segments if k.startswith("bought_")]
    assert bought and all(0.02 * N_CUSTOMERS <= len(segments[k]) <= 0.4 * N_CUSTOMERS for k in bought)
    assert all(set(v) <= set(population.ids) for v in segments.values())
    cases = make_cases(segments, (100,), random_seed=5)
    table = evaluate_cases(model, cases, len(population.frame))
    assert (table.lift > 1.5).all(), table


# ---- CSV and pyfunc ---------------------------------------------------------------------------------------


def test_read_seed_csv_accepts_the_usual_shapes(tmp_path: Path) -> None:
    cases = {
        "with_header.csv": "customer_id\nC1\nC2\n",
        "no_header.csv": "C1\nC2\n",
        "other_columns.csv": "email,customer_id\na@b.c,C1\n,C2\n",
        "named_header.csv": "id\nC1\n\nC2\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        assert read_seed_csv(path) == ["C1", "C2"], name
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(LookalikeError, match="none is called customer_id"):
        read_seed_csv(bad)


def test_expand_csv_writes_the_ranked_audience(model: LookalikeModel, segments, tmp_path: Path) -> None:
    seed = _seed(segments)
    seed_csv = tmp_path / "seeds.csv"
    seed_csv.write_text("\n".join(seed + ["ghost-9"]) + "\n")
    out = tmp_path / "out" / "audience.csv"
    result = expand_csv(model, seed_csv, 250, out, exclude_ids=["ghost-0"])
    frame = pd.read_csv(out, dtype={"customer_id": str})
    assert list(frame.columns) == ["customer_id", "score", "rank"]
    assert frame.customer_id.tolist() == result.customer_ids and len(frame) == 250
    assert frame["rank"].tolist() == list(range(1, 251))
    assert result.unknown_seed_ids == ["ghost-9"]
    by_fraction = expand_csv(model, seed_csv, None, out, fraction=0.01)
    assert by_fraction.returned == 40


def test_pyfunc_predict(model: LookalikeModel, segments) -> None:
    seed = _seed(segments)
    frame = pd.DataFrame({"customer_id": seed + ["X1"], "exclude": [False] * len(seed) + [True]})
    out = model.predict(None, frame, {"size": 30, "method": "classifier", "min_score": -1.0})
    assert list(out.columns) == ["customer_id", "score", "rank", "method"]
    assert len(out) == 30 and (out.method == "classifier").all()
    expected = model.expand({"seed_ids": seed, "size": 30, "method": "classifier", "exclude_ids": ["X1"]})
    assert out.customer_id.tolist() == expected.customer_ids


# ---- MLflow -----------------------------------------------------------------------------------------------


def test_registration_and_champion_alias(synth_home: Settings, workspace: Settings) -> None:
    for sub in ("raw", "clean", "features"):
        shutil.copytree(synth_home.data_root / sub, workspace.data_root / sub, dirs_exist_ok=True)
    first = train_lookalike(workspace, trials=1, seed_sizes=(50, 100))
    assert mlflow.get_tracking_uri() == workspace.tracking_uri
    assert workspace.tracking_uri.startswith(f"sqlite:///{workspace.home}")
    assert (workspace.mlruns_dir / "mlflow.db").exists()
    assert first.version == "1" and first.decision.promoted
    assert first.metrics["test_recall_at_size"] > first.metrics["test_baseline_recall_at_size"]
    assert next(iter(first.metrics)) == "test_recall_at_size"
    for size in (50, 100):
        assert (
            first.metrics[f"test_recall_at_size_s{size}"]
            > first.metrics[f"test_baseline_recall_at_size_s{size}"]
        )

    client = mlflow.MlflowClient()
    run = client.get_run(first.run_id)
    assert run.data.params["feature_service"] == "lookalike_v1"
    assert "recall_at_size" in run.data.metrics and "test_lift_s100" in run.data.metrics
    artefacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"evaluation_test.csv", "lineage.json", "optuna_trials.csv"} <= artefacts

    served = mlflow.pyfunc.load_model("models:/lookalike@champion")
    champion = served.unwrap_python_model()
    assert champion.has_index and champion.population_size == N_CUSTOMERS
    seed = champion.customer_ids[:120].tolist()
    out = served.predict(pd.DataFrame({"customer_id": seed}), params={"size": 25})
    assert len(out) == 25 and not set(seed) & set(out.customer_id)

    # Same data, same knobs: not strictly better, so the new version is only a challenger.
    second = train_lookalike(workspace, trials=1, seed_sizes=(50, 100))
    assert second.version == "2" and not second.decision.promoted
    assert second.decision.champion == pytest.approx(first.metrics["recall_at_size"])
    assert str(client.get_model_version_by_alias("lookalike", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("lookalike", "challenger").version) == "2"

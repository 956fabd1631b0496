"""Lookalike taste and planning: the category mix (features.categories) and the reach curve's checks and accuracy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.categories import category_mix
from portrait.lookalike import (
    PRESETS,
    ExpansionRequest,
    LookalikeError,
    LookalikeModel,
    LookalikeParams,
    Representation,
    _similar_crossfit,
)
from tests.conftest import TINY_SNAPSHOT


def test_category_mix_is_point_in_time_shares_of_spend(tiny_clean):
    mix = category_mix(tiny_clean.clean_dir, TINY_SNAPSHOT, ["A", "B", "C", "D"], top_n=2)
    assert mix.categories == ["toys", "garden"] and mix.columns == ["cat_share_toys", "cat_share_garden"]
    frame = mix.frame.set_index("customer_id")
    # A spent 30 on toys, 30 on garden (the return is no purchase) and 5 on books before the snapshot.
    assert frame.loc["A"].tolist() == pytest.approx([30 / 65, 30 / 65])
    assert frame.loc["B"].tolist() == [1.0, 0.0]
    assert frame.loc[["C", "D"]].isna().all().all()  # no purchase (D's is after the snapshot): missing, not 0
    assert category_mix(tiny_clean.clean_dir, TINY_SNAPSHOT, ["A"], top_n=0).columns == []


def _clustered(n: int = 20_000, dim: int = 8, seed: int = 0) -> tuple[LookalikeModel, np.ndarray]:
    """Four well-separated clusters of embedding vectors (cluster 0 holds 16 % of the population)."""
    rng = np.random.default_rng(seed)
    label = rng.choice(4, size=n, p=[0.16, 0.24, 0.3, 0.3])
    centres = rng.normal(0, 4.0, size=(4, dim))
    vectors = (centres[label] + rng.normal(0, 1.0, size=(n, dim))).astype(np.float32)
    representation = Representation(
        features=[f"f{i}" for i in range(dim)], log_mask=np.zeros(dim, bool), center=np.zeros(dim),
        scale=np.ones(dim), clip=math.inf, indicator_columns=[], indicator_mean=np.zeros(0),
        indicator_scale=np.zeros(0), indicator_weight=0.0, pca_mean=np.zeros(dim), components=np.eye(dim),
        component_scale=np.ones(dim),
    )  # fmt: skip
    ids = np.array([f"U{i:06d}" for i in range(n)])
    model = LookalikeModel.from_vectors(representation, ids, vectors, LookalikeParams(), build_index=False)
    return model, label[np.argsort(ids)]


def test_reach_curve_follows_the_realised_precision_and_recall_of_each_preset():
    model, label = _clustered()
    ids = model.customer_ids
    members = ids[label == 0]
    seed = np.random.default_rng(1).choice(members, 1000, replace=False).tolist()
    curve = model.reach_curve(seed)
    n = model.population_size
    target = set(members) - set(seed)
    assert curve.seed_known == 1000 and curve.candidates == n - 1000
    assert abs(curve.estimated_similar - len(target)) / len(target) < 0.25
    for name, share in PRESETS.items():
        point = curve.presets[name]
        assert point.size == round(share * n)
        audience = model.expand(ExpansionRequest(seed_ids=seed, size=point.size, method="classifier"))
        hits = sum(c in target for c in audience.customer_ids)
        assert hits == point.size  # well-separated clusters: every preset is all cluster members
        # The held-out seed members' recall is an unbiased estimate of the audience's recall; the precision
        # leans conservative (see benchmarks/RESULTS.md, Audiences, for its error on overlapping segments).
        assert abs(point.expected_recall - hits / len(target)) <= 0.05, (name, point)
        assert 0.75 <= point.expected_precision <= 1.0, (name, point)
    recall = [p.expected_recall for p in curve.points]
    assert recall == sorted(recall) and recall[-1] > 0.9


def test_reach_curve_refuses_seeds_it_cannot_plan_for():
    model, label = _clustered(n=5_000)
    ids = model.customer_ids
    with pytest.raises(LookalikeError, match="at least 100") as small:
        model.reach_curve([*ids[label == 0][:60].tolist(), "ghost"])
    assert small.value.code == "seed_too_small" and "1 of its ids are unknown" in small.value.message
    with pytest.raises(LookalikeError, match="most of the population") as large:
        model.reach_curve(ids[: int(0.7 * len(ids))].tolist())
    assert large.value.code == "seed_too_large" and "70%" in large.value.message
    with pytest.raises(LookalikeError) as unknown:
        model.reach_curve(["ghost-1", "ghost-2"])
    assert unknown.value.code == "unknown_seed"
    with pytest.raises(LookalikeError) as empty:
        model.reach_curve([" ", ""])
    assert empty.value.code == "empty_seed"
    curve = model.reach_curve([*ids[label == 1][:200].tolist(), "ghost-1", "ghost-2"])
    assert curve.unknown_seed_ids == ["ghost-1", "ghost-2"]
    assert any("2 of 202 seed ids are not customers the model knows" in w for w in curve.warnings)


def test_the_reach_curve_leaves_the_model_unchanged():
    model, label = _clustered(n=5_000)
    seed = model.customer_ids[label == 2][:150].tolist()
    before = model.expand(ExpansionRequest(seed_ids=seed, size=100, method="classifier"))
    model.reach_curve(seed, exclude_ids=model.customer_ids[:10].tolist())
    after = model.expand(ExpansionRequest(seed_ids=seed, size=100, method="classifier"))
    assert (
        pd.Series(before.customer_ids).equals(pd.Series(after.customer_ids)) and before.scores == after.scores
    )


def test_the_crossfitted_class_prior_recovers_a_known_prior_where_the_top_is_pure():
    # PU problems built by hand: 5,000 seed-like customers among 50,000 candidates; the others never score
    # above 2.5, so the top of the ranking is pure (the assumption under which P is identified).
    relative = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        positives = rng.normal(3.0, 1.0, 5_000)
        negatives = rng.normal(0.0, 1.0, 60_000)
        scores = np.sort(np.concatenate([positives, negatives[negatives < 2.5][:45_000]]))
        held = rng.normal(3.0, 1.0, 1_000)  # held-out seed members: more draws of the seed-like kind
        ranks = len(scores) - np.searchsorted(scores, held, side="right")
        relative.append(_similar_crossfit(ranks, len(scores), np.random.default_rng(0)) / 5_000 - 1.0)
    assert abs(np.mean(relative)) < 0.06 and np.max(np.abs(relative)) < 0.15, relative
    # No pure top (the seed's kind overlaps the rest everywhere): P is overestimated, as documented.
    rng = np.random.default_rng(9)
    scores = np.sort(np.concatenate([rng.normal(1.0, 1.0, 5_000), rng.normal(0.0, 1.0, 45_000)]))
    ranks = len(scores) - np.searchsorted(scores, rng.normal(1.0, 1.0, 1_000), side="right")
    assert _similar_crossfit(ranks, len(scores), np.random.default_rng(0)) > 1.5 * 5_000


def test_each_preset_carries_an_interval_around_its_expected_precision():
    model, label = _clustered()
    seed = np.random.default_rng(2).choice(model.customer_ids[label == 0], 1000, replace=False).tolist()
    curve = model.reach_curve(seed)
    top = model.reach_curve(seed, prior="top")
    assert curve.prior == "crossfit" and top.prior == "top" and "overlapping segments" in curve.note
    assert curve.similar_low <= curve.estimated_similar <= curve.similar_high
    for point in [*curve.presets.values(), *curve.points]:
        assert 0.0 <= point.precision_low <= point.expected_precision <= point.precision_high <= 1.0
    # Well-separated clusters: every preset is all cluster members, and the interval says so.
    assert all(p.precision_high == 1.0 and p.precision_low > 0.7 for p in curve.presets.values())
    with pytest.raises(LookalikeError) as bad:
        model.reach_curve(seed, prior="guess")  # type: ignore[arg-type]
    assert bad.value.code == "bad_prior"

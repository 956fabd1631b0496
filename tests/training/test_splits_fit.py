"""Split and fitting mechanics: held-out validation customers, the snapshot plan, the value-total scaling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features import store as fs
from training import churn
from training.dataset import build_training_set, holdout_mask
from training.fit import fit, scale_log_link, total_factor
from training.splits import plan_snapshots
from training.train import plan_for

PLAN = {"n_train": 3, "step_days": 60}


def test_plan_trains_up_to_the_validation_snapshot():
    start, end = datetime(2022, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    plan = plan_snapshots(start, end, 90, step_days=30, n_train=12)
    assert plan.validation == max(plan.train) == plan.test - timedelta(days=90)
    assert len(plan.train) == 12
    assert all(t + timedelta(days=90) <= plan.test for t in plan.train)
    # Calibration in the test's season: the training snapshot closest to a year before the test.
    assert plan.calibration in plan.train
    assert abs(plan.test - timedelta(days=365) - plan.calibration) <= timedelta(days=15)
    assert plan.as_dict()["calibration"] == plan.calibration.isoformat()
    assert plan_snapshots(start, end, 90, season_days=None).calibration_snapshot == plan.validation
    short = plan_snapshots(start, datetime(2022, 9, 1, tzinfo=UTC), 90)
    assert short.train == [short.validation] and short.notes
    assert short.calibration is None and short.calibration_snapshot == short.validation  # < a year of labels
    with pytest.raises(ValueError, match="validation_share"):
        plan_snapshots(start, end, 90, validation_share=1.0)


def test_holdout_is_stable_and_close_to_its_share():
    ids = pd.Series([f"c{i}" for i in range(20_000)])
    mask = holdout_mask(ids, 0.2)
    assert abs(mask.mean() - 0.2) < 0.01
    shuffled = ids.sample(frac=1.0, random_state=0)
    assert (holdout_mask(shuffled, 0.2) == mask[shuffled.index]).all()


def test_validation_customers_never_train(synth_settings):
    spec = churn.spec()
    plan = plan_for(synth_settings, spec, **PLAN)
    ts = build_training_set(synth_settings, "churn", spec.label, plan)
    assert not set(ts.train.customer_id) & set(ts.validation.customer_id)
    snapshots = set(pd.to_datetime(plan.train, utc=True))
    assert set(ts.train.event_timestamp) <= snapshots and set(ts.validation.event_timestamp) <= snapshots
    assert (ts.calibration_validation.event_timestamp == pd.Timestamp(plan.calibration_snapshot)).all()
    assert 0.1 < len(ts.validation) / (len(ts.train) + len(ts.validation)) < 0.3


def test_the_same_rows_in_another_order_give_the_same_training_set_and_model(synth_settings, monkeypatch):
    """Feast's point-in-time join returns rows in an order that varies from run to run; LightGBM's bagging
    draws rows by position, so the training set must not keep that order."""
    spec = churn.spec()
    plan = plan_for(synth_settings, spec, **PLAN)
    joined = fs.historical_features  # the real join, its rows then shuffled as another run may order them
    seeds = iter([1, 2])
    monkeypatch.setattr(
        fs, "historical_features", lambda *a, **k: joined(*a, **k).sample(frac=1.0, random_state=next(seeds))
    )
    first, second = (build_training_set(synth_settings, "churn", spec.label, plan) for _ in range(2))
    for part in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(getattr(first, part), getattr(second, part))
    scores = [fit(ts, spec, trials=1).model.score(first.test) for ts in (first, second)]
    np.testing.assert_array_equal(scores[0], scores[1])


def test_scale_log_link_multiplies_predictions_and_keeps_contributions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3))
    y = rng.gamma(1.0, np.exp(x[:, 0])) * (rng.random(2000) < 0.4)
    booster = lgb.train(
        {"objective": "tweedie", "verbosity": -1, "num_leaves": 7}, lgb.Dataset(x, y), num_boost_round=20
    )
    scaled = scale_log_link(booster, 1.7)
    assert np.allclose(scaled.predict(x), 1.7 * booster.predict(x))
    before, after = booster.predict(x, pred_contrib=True), scaled.predict(x, pred_contrib=True)
    assert np.allclose(before[:, :-1], after[:, :-1])
    assert np.allclose(np.exp(after.sum(axis=1)), scaled.predict(x))
    assert total_factor(np.array([2.0, 4.0]), np.array([1.0, 2.0])) == 2.0
    assert total_factor(np.array([100.0]), np.array([1.0])) == 5.0  # clipped


def test_contributions_sum_to_the_raw_score_for_any_batch_size():
    from portrait.model import SMALL_BATCH, PlattCalibrator, TagModel, Tiers

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(size=3000) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 15}, lgb.Dataset(x, y), num_boost_round=40
    )
    model = TagModel(
        name="t", kind="classifier", booster_text=booster.model_to_string(), features=["a", "b", "c", "d"],
        categories={}, tiers=Tiers([0.5], ["high"], "low"), calibrator=PlattCalibrator(1.0, 0.0),
    )  # fmt: skip
    rows = x[:50]
    batch = model.contributions(rows)  # the sparse path
    assert np.allclose(batch.sum(axis=1), booster.predict(rows, raw_score=True), atol=1e-9)
    small = np.vstack([model.contributions(rows[i : i + SMALL_BATCH]) for i in range(0, 50, SMALL_BATCH)])
    np.testing.assert_allclose(small, batch, rtol=1e-12, atol=1e-12)  # the dense path, same numbers
    assert np.abs(batch[:, :4]).sum(axis=0)[0] > np.abs(batch[:, :4]).sum(axis=0)[3]  # x0 matters, x3 not
    frame = {name: rows[:, i] for i, name in enumerate(model.features)}
    for part in (slice(0, 50), slice(0, SMALL_BATCH)):  # the sparse and the dense path
        scores, _, reasons = model.explain_columns({k: v[part] for k, v in frame.items()})
        np.testing.assert_allclose(scores, model.score(pd.DataFrame(frame)[part]), rtol=1e-9)
        for row, items in zip(batch[part], reasons, strict=True):  # float32 effects, same reasons
            assert [it["feature"] for it in items][:1] == [model.features[int(np.argmax(np.abs(row[:4])))]]
            for it in items:
                assert it["effect"] == pytest.approx(row[model.features.index(it["feature"])], abs=2e-4)


def test_row_by_row_leaves_are_lightgbms_own():
    from portrait.model import SMALL_BATCH, RowLeaves

    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 5))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take each split's default direction
    y = (np.nan_to_num(x[:, 0]) + rng.normal(size=2000) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 31}, lgb.Dataset(x, y), num_boost_round=60
    )
    leaves = RowLeaves(booster, 5)
    rows = x[:SMALL_BATCH]
    expected = booster.predict(rows, pred_leaf=True)
    assert expected.max() > 10  # deep enough to tell leaves apart
    np.testing.assert_array_equal(leaves(rows), expected)
    np.testing.assert_array_equal(leaves(x[7:8]), expected[7:8])
    with pytest.raises(ValueError, match="5 features"):
        leaves(x[:1, :4])


def test_tiers_the_same_for_a_few_rows_and_many():
    from portrait.model import Tiers

    tiers = Tiers([0.2, 0.6, 0.6, 0.9], ["low-ish", "high", "higher", "top"], "low")
    scores = np.concatenate([np.random.default_rng(3).random(200), [np.nan, 0.2, 0.6, 0.9, 1.0, -1.0]])
    many = tiers.assign(scores)
    few = [tier for start in range(0, len(scores), 5) for tier in tiers.assign(scores[start : start + 5])]
    assert few == many
    assert many[-6:] == ["low", "low-ish", "higher", "top", "top", "low"]

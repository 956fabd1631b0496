"""Training: labels, time splits, promotion rules and behavioural checks on real fitted models."""

from __future__ import annotations

from datetime import timedelta

import mlflow
import numpy as np
import pytest

from portrait.model import TagModel
from training import churn, clv, conversion
from training.dataset import build_training_set
from training.labels import LabelSpec, build_labels, data_end, data_start
from training.splits import plan_snapshots
from training.tracking import CHAMPION, configure
from training.train import plan_for, train_model

PLAN = {"n_train": 3, "step_days": 60}


def _champion(settings, name: str) -> tuple[str, TagModel]:
    client = configure(settings)
    mv = client.get_model_version_by_alias(name, CHAMPION)
    return str(mv.version), mlflow.pyfunc.load_model(f"models:/{name}@champion").unwrap_python_model()


def test_time_split_keeps_labels_before_test(synth_settings):
    spec = churn.spec()
    plan = plan_for(synth_settings, spec, **PLAN)
    horizon = timedelta(days=spec.label.horizon_days)
    assert plan.validation + horizon <= plan.test
    assert all(t + horizon <= plan.test for t in plan.train)
    assert plan.test + horizon <= data_end(synth_settings.clean_dir) + timedelta(days=1)
    with pytest.raises(ValueError, match="not enough history"):
        plan_snapshots(data_start(synth_settings.clean_dir), data_end(synth_settings.clean_dir), 2000)


def test_labels_follow_their_definitions(synth_settings):
    snap = plan_for(synth_settings, churn.spec(), **PLAN).test
    churn_l = build_labels(synth_settings.clean_dir, [snap], LabelSpec("churn", 90, 365))
    conv_l = build_labels(synth_settings.clean_dir, [snap], LabelSpec("conversion", 90))
    value_l = build_labels(synth_settings.clean_dir, [snap], LabelSpec("clv", 90))
    # Churn is the complement of conversion on the same horizon for the active population.
    merged = churn_l.merge(conv_l, on=["customer_id", "event_timestamp"], suffixes=("_churn", "_conv"))
    assert len(merged) == len(churn_l) > 100
    assert ((merged.label_churn + merged.label_conv) == 1).all()
    # Spend is positive exactly when there was a purchase.
    both = value_l.merge(conv_l, on=["customer_id", "event_timestamp"], suffixes=("_value", "_conv"))
    assert ((both.label_value > 0) == (both.label_conv == 1)).all()
    browsers = build_labels(
        synth_settings.clean_dir, [snap], LabelSpec("conversion", 30, population="browsers")
    )
    assert 0 < len(browsers) < len(conv_l)


@pytest.fixture
def churn_champion(synth_settings):
    outcome = train_model(synth_settings, churn.spec(), trials=2, **PLAN)
    assert outcome.decision.promoted and outcome.version == "1"
    return outcome


def test_worse_candidate_does_not_take_the_alias(synth_settings, churn_champion):
    spec = churn.spec()
    ts = build_training_set(synth_settings, "churn", spec.label, plan_for(synth_settings, spec, **PLAN))
    rng = np.random.default_rng(0)
    for part in (ts.train, ts.validation):
        part["label"] = rng.permutation(part["label"].to_numpy())  # a model fitted to noise
    worse = train_model(synth_settings, spec, trials=1, training_set=ts)
    assert not worse.decision.promoted
    version, _ = _champion(synth_settings, "churn")
    assert version == churn_champion.version
    client = configure(synth_settings)
    assert str(client.get_model_version_by_alias("churn", "challenger").version) == worse.version
    assert worse.metrics["test_auc"] < churn_champion.metrics["test_auc"]


def test_better_candidate_takes_the_alias(synth_settings):
    spec = churn.spec()
    ts = build_training_set(synth_settings, "churn", spec.label, plan_for(synth_settings, spec, **PLAN))
    noisy = build_training_set(synth_settings, "churn", spec.label, ts.plan)
    rng = np.random.default_rng(1)
    for part in (noisy.train, noisy.validation):
        part["label"] = rng.permutation(part["label"].to_numpy())
    first = train_model(synth_settings, spec, trials=1, training_set=noisy)
    assert first.decision.promoted  # nothing to beat yet
    better = train_model(synth_settings, spec, trials=2, training_set=ts)
    assert better.decision.promoted
    assert _champion(synth_settings, "churn")[0] == better.version


def test_crash_mid_run_leaves_the_alias(synth_settings, churn_champion, monkeypatch):
    import training.train as train_module

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash after registration")

    monkeypatch.setattr(train_module, "_challenge", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_model(synth_settings, churn.spec(), trials=1, **PLAN)
    client = configure(synth_settings)
    assert str(client.get_model_version_by_alias("churn", CHAMPION).version) == churn_champion.version
    # The half-registered version was removed again; only the champion's version remains.
    assert [str(v.version) for v in client.search_model_versions("name = 'churn'")] == [
        churn_champion.version
    ]
    runs = client.search_runs([client.get_experiment_by_name("churn").experiment_id])
    assert any(r.info.status == "FAILED" for r in runs)


def _frame(settings, spec):
    ts = build_training_set(settings, spec.name, spec.label, plan_for(settings, spec, **PLAN))
    return ts.test.copy()


def test_behaviour_purchases_stop_raises_churn(synth_settings, churn_champion):
    _, model = _champion(synth_settings, "churn")
    before = _frame(synth_settings, churn.spec())
    after = before.copy()
    gap = 60.0
    after["recency_days"] = after["recency_days"] + gap
    after["days_since_last_event"] = after["days_since_last_event"].fillna(0) + gap
    # The same silence against the customer's own pace (null without events, as before).
    after["first_event_days"] = after["first_event_days"] + gap
    after["expected_events_missed"] = (
        after["events_lifetime"] * after["days_since_last_event"] / after["first_event_days"]
    )
    for col in ("orders_7d", "orders_30d", "spend_7d", "spend_30d"):
        after[col] = 0
    p0, p1 = model.score(before), model.score(after)
    assert p1.mean() > p0.mean()
    assert (p1 >= p0 - 1e-9).mean() >= 0.95


def test_behaviour_add_to_cart_raises_conversion(synth_settings):
    outcome = train_model(synth_settings, conversion.spec(), trials=2, **PLAN)
    assert outcome.metrics["test_auc"] > 0.6
    _, model = _champion(synth_settings, "conversion")
    before = _frame(synth_settings, conversion.spec())
    after = before.copy()
    after["add_to_cart_30d"] = after["add_to_cart_30d"] + 2
    after["add_to_cart_90d"] = after["add_to_cart_90d"] + 2
    # Recent cart for those with a cart history; missing values are not ordered, so never-carted
    # customers keep theirs and only gain the counts.
    after["days_since_last_cart"] = after["days_since_last_cart"].where(
        after["days_since_last_cart"].isna(), 0.5
    )
    p0, p1 = model.score(before), model.score(after)
    assert p1.mean() > p0.mean()
    assert (p1 >= p0 - 1e-9).mean() >= 0.95


def test_behaviour_more_spend_never_lowers_value(synth_settings):
    outcome = train_model(synth_settings, clv.spec(horizon_days=180), trials=2, **PLAN)
    assert outcome.metrics["test_normalized_gini"] > 0.3
    _, model = _champion(synth_settings, "clv")
    before = _frame(synth_settings, clv.spec(horizon_days=180))
    after = before.copy()
    for col in ("spend_365d", "spend_lifetime"):
        after[col] = after[col] * 1.5 + 50
    v0, v1 = model.score(before), model.score(after)
    assert (v1 >= v0 - 1e-9).all()
    assert v1.mean() > v0.mean()


def test_reasons_are_readable(synth_settings, churn_champion):
    _, model = _champion(synth_settings, "churn")
    frame = _frame(synth_settings, churn.spec()).head(20)
    explained = model.explain(frame)
    assert np.allclose(explained.score.to_numpy(), model.score(frame), atol=1e-9)
    assert set(explained.tier) <= {"high", "medium", "low"}
    first = explained.reasons.iloc[0]
    assert 1 <= len(first) <= 3
    assert all(r["text"] and "(" in r["text"] and r["feature"] in model.features for r in first)

"""Predicted value in parts (issue #21): the parts multiply to the value, the range holds it and covers
about 80 % of what customers then spend, the next order date lies after the snapshot, category scores are
probabilities, and the served formulas are PyMC-Marketing's."""

from __future__ import annotations

import warnings
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from portrait.btyd import BetaGeo, GammaGamma, summary
from portrait.value import Interval
from training import clv
from training.dataset import build_training_set
from training.train import plan_for, train_model

PLAN = {"n_train": 3, "step_days": 60}
HORIZON = 180


@pytest.fixture(scope="module")
def value_model(synth_home, tmp_path_factory):  # noqa: ANN001, ANN201 - fixtures
    """One CLV model with its parts, trained once for this module (private MLflow store)."""
    from portrait.settings import Settings

    tmp = tmp_path_factory.mktemp("clv_parts")
    settings = Settings(
        home=synth_home,
        mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        mlflow_artifact_root=(tmp / "artifacts").as_uri(),
    )
    spec = clv.spec(horizon_days=HORIZON)
    ts = build_training_set(settings, spec.name, spec.label, plan_for(settings, spec, **PLAN))
    outcome = train_model(settings, spec, trials=1, training_set=ts)
    import mlflow

    model = mlflow.pyfunc.load_model(f"runs:/{outcome.run_id}/model").unwrap_python_model()
    return settings, ts, outcome, model


def test_parts_multiply_to_the_value_and_the_range_holds_it(value_model) -> None:  # noqa: ANN001
    _, ts, outcome, model = value_model
    test = ts.test
    values = model.score(test)
    out = model.base.outputs(test, values)
    buyers = summary(test).buyer
    assert buyers.any() and (~buyers).any()
    product = out["p_active"] * out["expected_orders"] * out["expected_order_value"]
    np.testing.assert_allclose(product[buyers], values[buyers], rtol=1e-6, atol=1e-9)
    assert np.isnan(out["p_active"][~buyers]).all()  # no purchase: no purchase-model parts
    assert ((out["p_active"][buyers] >= 0) & (out["p_active"][buyers] <= 1)).all()
    assert (out["p10"] <= values + 1e-9).all() and (values <= out["p90"] + 1e-9).all()
    assert (out["p10"] >= 0).all()
    # Held out in time: the 80 % range covers roughly 80 % of what the customers then spent.
    y = test.label.to_numpy()
    coverage = np.mean((out["p10"] <= y) & (y <= out["p90"]))
    assert 0.6 <= coverage <= 0.95, coverage
    assert outcome.metrics["test_interval_coverage"] == pytest.approx(coverage)


def test_next_order_date_and_category_scores(value_model) -> None:  # noqa: ANN001
    _, ts, outcome, model = value_model
    test = ts.test.head(500)
    snapshot = ts.plan.test
    as_of = np.full(len(test), snapshot.timestamp())
    ids = test.customer_id.astype(str).tolist()
    out = model.base.outputs(test, model.score(test), as_of, ids)
    buyers = summary(test).buyer
    dates = [d for d, b in zip(out["next_order_date"], buyers, strict=True) if b]
    assert dates and all(snapshot.date() <= d <= (snapshot + timedelta(days=HORIZON)).date() for d in dates)
    assert ((out["next_order_probability"] >= 0) & (out["next_order_probability"] <= 1)).all()
    scores = out["category_scores"]
    assert (
        scores.shape == (len(test), len(model.base.taste.categories)) and len(model.base.taste.categories) > 1
    )
    assert ((scores >= 0) & (scores <= 1)).all()
    # Measured against the naive baselines and logged with the model.
    for key in ("test_next_order_mae_days", "test_category_auc", "test_category_share_auc", "test_btyd_rmse"):
        assert np.isfinite(outcome.metrics[key]), key
    assert outcome.metrics["test_category_auc"] > 0.5
    assert "purchase model" in outcome.decision.reason  # the gate compared it with the pure BTYD model


def test_interval_counts_ties_at_zero() -> None:
    """60 % of customers spend nothing: the range is [0, q80 of the rest], covering 80 %, not 90 %."""
    rng = np.random.default_rng(0)
    predicted = np.full(10_000, 10.0)
    y = np.where(rng.random(10_000) < 0.6, 0.0, rng.gamma(2.0, 12.0, 10_000))
    interval = Interval.fit(y, predicted, bins=1)
    lo, hi = interval.bounds(predicted)
    assert lo[0] == 0.0
    assert np.mean((lo <= y) & (y <= hi)) == pytest.approx(0.8, abs=0.01)


def test_interval_covers_80_percent_overall_when_a_bin_is_mostly_non_buyers() -> None:
    """Half the customers are unlikely buyers (90 % spend nothing): their bin's tightest range covers 90 %,
    so the other bins' ranges narrow until 80 % of everyone is covered, on new customers too."""
    rng = np.random.default_rng(1)

    def customers(n: int) -> tuple[np.ndarray, np.ndarray]:
        likely = rng.random(n) < 0.5
        predicted = np.where(likely, 40.0, 3.0) * rng.uniform(0.8, 1.2, n)
        buys = rng.random(n) < np.where(likely, 0.6, 0.1)
        return np.where(buys, rng.gamma(2.0, predicted / 1.2), 0.0), predicted

    y, predicted = customers(20_000)
    interval = Interval.fit(y, predicted, bins=4)
    lo, hi = interval.bounds(predicted)
    assert np.mean((lo <= y) & (y <= hi)) == pytest.approx(0.8, abs=0.01)
    assert (lo <= predicted + 1e-9).all() and (predicted <= hi + 1e-9).all()
    fresh_y, fresh_predicted = customers(20_000)
    lo, hi = interval.bounds(fresh_predicted)
    assert np.mean((lo <= fresh_y) & (fresh_y <= hi)) == pytest.approx(0.8, abs=0.015)


def test_served_formulas_match_pymc_marketing() -> None:
    """The closed forms the service evaluates give PyMC-Marketing's predictions on the same parameters."""
    import arviz as az
    import xarray as xr
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    rng = np.random.default_rng(1)
    n = 40
    frame = pd.DataFrame(
        {
            "orders_lifetime": rng.integers(1, 8, n).astype(float),
            "first_purchase_days": rng.uniform(30, 400, n),
            "avg_order_value": rng.uniform(5, 80, n),
        }
    )
    frame["recency_days"] = frame.first_purchase_days * rng.uniform(0, 1, n)
    s = summary(frame)
    bg, gg = BetaGeo(r=0.3, alpha=5.0, a=0.8, b=2.5), GammaGamma(p=6.0, q=4.0, v=15.0)
    data = pd.DataFrame(
        {"customer_id": np.arange(n), "frequency": s.x, "recency": s.t_x, "T": s.T, "monetary_value": s.m}
    )

    def posterior(**values: float) -> az.InferenceData:
        return az.InferenceData(
            posterior=xr.Dataset({k: (("chain", "draw"), [[v]]) for k, v in values.items()})
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BetaGeoModel(data=data[["customer_id", "frequency", "recency", "T"]])
        model.build_model()
        model.idata = posterior(r=bg.r, alpha=bg.alpha, a=bg.a, b=bg.b)
        alive = model.expected_probability_alive().values.ravel()
        purchases = model.expected_purchases(future_t=26.0).values.ravel()
        spend_model = GammaGammaModel(
            data=data.assign(frequency=data.frequency + 1)[["customer_id", "monetary_value", "frequency"]]
        )
        spend_model.build_model()
        spend_model.idata = posterior(p=gg.p, q=gg.q, v=gg.v)
        spend = spend_model.expected_customer_spend(
            data.assign(frequency=data.frequency + 1)[["customer_id", "monetary_value", "frequency"]]
        ).values.ravel()
    np.testing.assert_allclose(bg.p_alive(s), alive, rtol=1e-6)
    np.testing.assert_allclose(bg.expected_orders(s, 26.0 * 7), purchases, rtol=1e-5)
    np.testing.assert_allclose(gg.expected_order_value(s), spend, rtol=1e-6)

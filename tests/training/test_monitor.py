"""The prediction log, realised performance against hand computations, and the quality cards."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from portrait import predlog
from portrait.backends import drop_postgres_database
from portrait.registry import CHAMPION
from portrait.settings import Settings
from tests.conftest import write_table
from training.monitor import monitor, realised_metrics
from training.tracking import configure

T = datetime(2024, 3, 1, tzinfo=UTC)
LATER = datetime(2024, 4, 1, tzinfo=UTC)
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
OUTCOMES = [1, 1, 0, 1, 0, 0, 1, 0, 0, 0]
TIERS = ["high", "high", "medium", "medium", "medium", "low", "low", "low", "low", "low"]
IDS = [f"C{i:02d}" for i in range(1, 11)]
# By hand: 20 of the 24 (positive, negative) pairs are ordered right; Brier = 1.6525 / 10.
HAND = {
    "auc": 20 / 24,
    "brier": 0.16525,
    "positive_rate": 0.4,
    "mean_prediction": 0.455,
    "calibration_ratio": 0.455 / 0.4,
    "calibration_z": (4.55 - 4) / np.sqrt(1.6975),  # sum of p (1 - p) = 1.6975
    "lift_top_decile": 1 / 0.4,
    "n": 10.0,
}
HAND_TIERS = [("high", 2, 0.85, 1.0), ("medium", 3, 0.6, 1 / 3), ("low", 5, 0.21, 0.2)]


def _records(ids, scores, tiers, snapshot, *, version="1", source="batch", scored_at=None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ids,
            "model": "conversion",
            "model_version": version,
            "score": scores,
            "tier": tiers,
            "features_timestamp": pd.Timestamp(snapshot),
            "scored_at": pd.Timestamp(scored_at or snapshot + timedelta(hours=6)),
            "source": source,
        }
    )


# ---- the log -------------------------------------------------------------------------------------------


def test_the_log_appends_files_and_reads_them_all(workspace):
    first = _records(IDS[:4], SCORES[:4], TIERS[:4], T)
    second = _records(IDS[4:], SCORES[4:], TIERS[4:], LATER, source="served")
    assert predlog.append(workspace, first) == 4
    assert predlog.append(workspace, second) == 6
    files = sorted(predlog.predictions_dir(workspace).rglob("*"))
    parts = [f for f in files if f.is_file()]
    assert len(parts) == 2 and all(f.name.startswith("part-") for f in parts)  # no temporary left behind
    everything = predlog.read(workspace)
    assert len(everything) == 10 and list(everything.columns) == list(predlog.COLUMNS)
    assert str(everything["scored_at"].dt.tz) == "UTC"
    assert len(predlog.read(workspace, "conversion", source="served")) == 6
    assert len(predlog.read(workspace, start=LATER)) == 6
    assert len(predlog.read(workspace, end=LATER)) == 4
    assert predlog.read(workspace, "churn").empty


def test_malformed_records_are_refused(workspace):
    with pytest.raises(ValueError, match="scored_at"):
        predlog.append(workspace, _records(IDS, SCORES, TIERS, T).drop(columns="scored_at"))
    with pytest.raises(ValueError, match="source"):
        predlog.append(workspace, _records(IDS, SCORES, TIERS, T, source="nightly"))


def test_sampling_and_records_from_a_tags_frame(workspace):
    frame = pd.DataFrame({"customer_id": [f"X{i}" for i in range(1000)]})
    assert predlog.sample(frame, 0.0).empty and len(predlog.sample(frame, 1.0)) == 1000
    half = predlog.sample(frame, 0.5, seed=3)
    assert 400 < len(half) < 600 and half.equals(predlog.sample(frame, 0.5, seed=3))
    tags = pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "churn_probability": [0.2, 0.7],
            "churn_tier": ["low", "high"],
            "churn_model_version": ["3", "3"],
            "value_predicted": [10.0, 0.0],
            "value_tier": ["high", "low"],
            "value_model_version": ["2", "2"],
            "features_timestamp": pd.to_datetime([T, T], utc=True),
        }
    )
    records = predlog.tag_records(tags, source="served", scored_at=LATER)
    assert sorted(records["model"].unique()) == ["churn", "clv"]
    clv = records[records["model"] == "clv"]
    assert clv["score"].tolist() == [10.0, 0.0] and set(clv["model_version"]) == {"2"}
    # The served share comes from the settings: 0 (the default) logs nothing.
    assert predlog.log_tags(workspace, tags, source="served") == 0
    assert (
        predlog.log_tags(workspace.model_copy(update={"prediction_log_sample": 1.0}), tags, source="served")
        == 4
    )
    assert predlog.log_tags(workspace, tags) == 4  # batch: everything
    assert len(predlog.read(workspace)) == 8


def _postgres_url() -> str:
    url = make_url(Settings().postgres_url)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            pass
    except OSError:
        pytest.skip(f"PostgreSQL at {url.host}:{url.port or 5432} is unreachable")
    return url.set(database=f"portrait_test_{uuid.uuid4().hex[:10]}").render_as_string(hide_password=False)


def test_the_production_log_is_a_postgres_table(workspace):
    url = _postgres_url()
    settings = workspace.model_copy(update={"profile": "production", "postgres_url": url})
    try:
        predlog.append(settings, _records(IDS[:4], SCORES[:4], TIERS[:4], T))
        predlog.append(settings, _records(IDS[4:], SCORES[4:], TIERS[4:], LATER, source="served"))
        back = predlog.read(settings, "conversion").sort_values("customer_id").reset_index(drop=True)
        assert back["score"].tolist() == SCORES and back["customer_id"].tolist() == IDS
        assert back["features_timestamp"].iloc[-1] == pd.Timestamp(LATER)
        assert len(predlog.read(settings, source="served", start=LATER)) == 6
        assert not predlog.predictions_dir(settings).exists()
    finally:
        drop_postgres_database(url)


# ---- realised metrics ----------------------------------------------------------------------------------


def _check_classifier(metrics: dict[str, float], tiers, deciles) -> None:
    for key, value in HAND.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert [(t.group, t.customers) for t in tiers] == [(g, n) for g, n, _, _ in HAND_TIERS]
    for tier, (_, _, predicted, actual) in zip(tiers, HAND_TIERS, strict=True):
        assert tier.predicted == pytest.approx(predicted) and tier.actual == pytest.approx(actual)
    # Ten customers: each decile is one customer, best score first.
    assert [(d.group, d.predicted, d.actual) for d in deciles] == [
        (str(i + 1), s, float(o)) for i, (s, o) in enumerate(zip(SCORES, OUTCOMES, strict=True))
    ]


def test_classifier_figures_match_a_hand_computation():
    metrics, tiers, deciles = realised_metrics(
        "classifier", np.array(SCORES), np.array(OUTCOMES), TIERS, ["high", "medium", "low"]
    )
    _check_classifier(metrics, tiers, deciles)


def test_regressor_figures_match_a_hand_computation():
    # Ranked by prediction the actual values come 10, 0, 5, 0: Lorenz sum (2/3 + 2/3 + 1 + 1) / 4 - 5/8
    # = 5/24; the perfect order 10, 5, 0, 0 gives 7/24, so the normalised Gini is 5/7.
    metrics, tiers, _ = realised_metrics(
        "regressor",
        np.array([8.0, 1.0, 2.0, 3.0]),
        np.array([10.0, 0.0, 5.0, 0.0]),
        ["high", "low", "low", "low"],
    )
    assert metrics["normalized_gini"] == pytest.approx(5 / 7)
    assert metrics["rmse"] == pytest.approx(np.sqrt((4 + 1 + 9 + 9) / 4))
    assert metrics["mae"] == pytest.approx(9 / 4)
    assert (metrics["total_predicted"], metrics["total_actual"]) == (14.0, 15.0)
    assert metrics["calibration_ratio"] == pytest.approx(14 / 15)
    assert metrics["calibration_z"] == pytest.approx(-1 / np.sqrt(23))  # residuals -2, 1, -3, 3
    assert [(t.group, t.customers, t.actual) for t in tiers] == [("high", 1, 10.0), ("low", 3, 5 / 3)]


# ---- the monitor, end to end ---------------------------------------------------------------------------


@pytest.fixture
def scored_workspace(workspace: Settings) -> Settings:
    """Ten customers (C01..C10) signed up before T; those with outcome 1 buy within 30 days of T.

    C11 signs up after T (not in the population at T). Data runs to 2024-04-10: the 30-day horizon
    after T has passed, the one after LATER has not.
    """
    signup = datetime(2024, 1, 1, 12, tzinfo=UTC)
    customers = [{"customer_id": c, "signup_ts": signup} for c in IDS]
    customers.append({"customer_id": "C11", "signup_ts": datetime(2024, 3, 15, tzinfo=UTC)})
    tx = [
        {"order_id": f"O{c}", "customer_id": c, "ts": T + timedelta(days=3 + i), "amount": 20.0, "quantity": 1,
         "category": "toys", "is_return": False}
        for i, (c, y) in enumerate(zip(IDS, OUTCOMES, strict=True)) if y
    ]  # fmt: skip
    tx.append({"order_id": "Oold", "customer_id": "C03", "ts": datetime(2024, 2, 1, tzinfo=UTC), "amount": 5.0,
               "quantity": 1, "category": "toys", "is_return": False})  # fmt: skip
    events = [{"customer_id": "C11", "ts": datetime(2024, 4, 10, tzinfo=UTC), "event_type": "view",
               "category": "toys", "session_id": "s1"}]  # fmt: skip
    write_table(workspace.clean_dir / "customers.parquet", "customers", customers)
    write_table(workspace.clean_dir / "transactions.parquet", "transactions", tx)
    write_table(workspace.clean_dir / "events.parquet", "events", events)
    settings = workspace.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{workspace.home / 'mlflow.db'}",
            "mlflow_artifact_root": (workspace.home / "artifacts").as_uri(),
        }
    )
    predlog.append(settings, _records([*IDS, "C11"], [*SCORES, 0.5], [*TIERS, "medium"], T))
    predlog.append(settings, _records(IDS, SCORES, TIERS, LATER))  # horizon not passed yet
    return settings


def _register_champion(settings: Settings) -> str:
    """A registered ``conversion`` v1 whose run recorded a 30-day horizon and test figures."""
    client = configure(settings)
    exp = client.create_experiment("conversion", artifact_location=f"{settings.artifact_root}/conversion")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_params(
            {"horizon_days": 30, "lookback_days": 365, "population": "all", "test_snapshot": "2024-01-15"}
        )
        mlflow.log_metrics(
            {"test_auc": 0.9, "test_positive_rate": 0.3, "test_mean_prediction": 0.31, "test_n": 500}
        )
    client.create_registered_model("conversion")
    version = client.create_model_version(
        "conversion", f"{run.info.artifact_uri}/model", run.info.run_id
    ).version
    client.set_registered_model_alias("conversion", CHAMPION, version)
    return run.info.run_id


def test_realised_figures_of_logged_scores_match_the_hand_computation(scored_workspace):
    settings = scored_workspace
    _register_champion(settings)
    before = predlog.quality_cards(settings)["conversion"]
    assert (before.evidence, before.grade, before.headline) == ("test", "A", 0.9)
    assert before.evidence_date.isoformat() == "2024-01-15"

    report = monitor(settings, ["conversion"])
    [evaluation] = report.evaluations
    assert (evaluation.version, evaluation.scoring_date, evaluation.customers) == ("1", T.date(), 10)
    _check_classifier(evaluation.metrics, evaluation.tiers, evaluation.deciles)
    assert evaluation.test_metrics["auc"] == 0.9
    [pending] = report.pending
    assert (pending.scoring_date, pending.due) == (LATER.date(), (LATER + timedelta(days=30)).date())

    client = configure(settings)
    run = client.get_run(evaluation.run_id)
    assert run.data.tags["model"] == "conversion" and run.data.tags["version"] == "1"
    assert run.data.tags["scoring_date"] == "2024-03-01"
    assert run.data.metrics["realised_auc"] == pytest.approx(HAND["auc"])
    assert run.data.metrics["realised_calibration_ratio"] == pytest.approx(HAND["calibration_ratio"])
    artifacts = {a.path for a in client.list_artifacts(evaluation.run_id, "plots")}
    assert {"plots/predicted_vs_actual.png", "plots/roc_pr.png", "plots/calibration_lift.png"} <= artifacts

    saved = predlog.read_report(settings)
    assert saved.evaluations == report.evaluations
    card = saved.cards["conversion"]
    assert (card.evidence, card.grade, card.evidence_date) == ("realised", "B", T.date())  # AUC 0.83: B
    assert [(t.group, t.actual) for t in card.tiers] == [(g, pytest.approx(a)) for g, _, _, a in HAND_TIERS]

    # On a schedule: the same evaluation is not logged again.
    again = monitor(settings, ["conversion"])
    assert [e.run_id for e in again.evaluations] == [evaluation.run_id]
    runs = client.search_runs([run.info.experiment_id], "tags.`portrait.monitor` = 'realised'")
    assert len(runs) == 1


def test_grades_follow_the_documented_bands():
    assert predlog.grade("auc", 0.86) == "A" and predlog.grade("auc", 0.70) == "C"
    assert predlog.grade("auc", 0.59) == "E" and predlog.grade("auc", 0.86, 1.5) == "B"
    assert predlog.grade("auc", 0.5, 0.1) == "E" and predlog.grade("auc", 0.86, 1.5, calibration_z=1.2) == "A"
    assert predlog.grade("normalized_gini", 0.61) == "B" and predlog.grade("mae", 3.0) is None

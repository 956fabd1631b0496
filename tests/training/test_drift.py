"""Drift through Evidently: verdicts per column, the champion's reference and the logged report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.pipeline import compute_features
from features.synth import SynthConfig
from portrait import predlog
from portrait.settings import ModelWindows, Settings
from portrait.workflow import serving_snapshot, synthesize
from training.dataset import build_training_set
from training.drift import SCORE, check_drift, compare, log_reference, reference_snapshot
from training.monitor import champion_of
from training.tracking import configure
from training.train import plan_for, resolve, train_named

END = datetime(2025, 1, 1, tzinfo=UTC)


def test_evidently_flags_the_columns_that_moved(workspace):
    rng = np.random.default_rng(0)
    n = 2000

    def frame(shift: float, share_b: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "steady": rng.normal(0.0, 1.0, n),
                "moved": rng.normal(shift, 1.0, n),
                "region": np.where(rng.random(n) < share_b, "B", "A"),
                "empty": np.full(n, np.nan),
                SCORE: rng.beta(2, 5 + 10 * shift, n),
            }
        )

    features = ["steady", "moved", "region", "empty"]
    verdicts, score, snapshot = compare(frame(0.0, 0.2), frame(1.0, 0.7), features, workspace)
    by_name = {v.column: v for v in verdicts}
    assert set(by_name) == {"steady", "moved", "region"}  # an all-missing column is left out
    assert by_name["moved"].drifted and by_name["region"].drifted and not by_name["steady"].drifted
    assert (by_name["moved"].method, by_name["region"].method) == ("wasserstein", "jensenshannon")
    assert by_name["moved"].score > 0.5 > by_name["steady"].score
    assert score is not None and score.drifted
    assert "<html" in snapshot.get_html_str(as_iframe=False).lower()
    same, score, _ = compare(frame(0.0, 0.2), frame(0.0, 0.2), features, workspace)
    assert not any(v.drifted for v in same) and not score.drifted


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """1,500 synthetic customers, a conversion champion (1 trial) and the serving snapshot's features."""
    home = tmp_path_factory.mktemp("drift_ws")
    settings = Settings(
        home=home,
        models={"conversion": ModelWindows(n_train=2, step_days=60)},
        mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        mlflow_artifact_root=(home / "artifacts").as_uri(),
    )
    settings.ensure_dirs()
    synthesize(settings, SynthConfig(n_customers=1500, seed=4, start=END - timedelta(days=3 * 365), end=END))
    train_named(settings, "conversion", trials=1)
    compute_features(settings.clean_dir, settings.features_dir, [serving_snapshot(settings)])
    return settings


def test_drift_of_a_champion_is_logged_and_saved(trained):
    settings = trained
    client = configure(settings)
    champion = champion_of(client, "conversion")
    summary = check_drift(settings, ["conversion"])["conversion"]
    assert summary.version == champion.version
    test_day = datetime.fromisoformat(champion.params["test_snapshot"]).replace(tzinfo=UTC)
    assert summary.reference_snapshot == reference_snapshot(test_day, 30).date()
    assert summary.current_snapshot == serving_snapshot(settings).date()
    assert summary.n_features == len(champion.model.features) and summary.prediction is not None
    # The serving snapshot is a day or two after the reference: nothing much has moved.
    assert summary.drift_share < 0.1 and not summary.prediction.drifted
    run = client.get_run(summary.run_id)
    assert run.data.tags["portrait.monitor"] == "drift" and run.data.tags["model"] == "conversion"
    assert run.data.metrics["drift_share"] == pytest.approx(summary.drift_share)
    assert {a.path for a in client.list_artifacts(summary.run_id)} >= {"drift.html", "drift.json"}
    # The reference was built once and logged to the champion's run; the cards read its tier rates.
    logged = {a.path for a in client.list_artifacts(champion.run_id, "reference")}
    assert logged == {"reference/sample.parquet", "reference/tiers.json"}
    card = predlog.quality_cards(settings, client)["conversion"]
    assert card.evidence == "test" and [t.group for t in card.tiers] == ["high", "medium", "low"]
    assert predlog.read_report(settings).drift["conversion"] == summary
    # Drift of an older snapshot against the same reference (read back from the run, not rebuilt).
    earlier = check_drift(settings, ["conversion"], snapshot=test_day, log_to_mlflow=False, save=False)
    assert earlier["conversion"].reference_rows == summary.reference_rows
    assert earlier["conversion"].current_snapshot == test_day.date()


def test_the_training_hook_logs_the_reference(trained, tmp_path: Path):
    settings = trained
    spec, options = resolve(settings, "conversion")
    plan = plan_for(settings, spec, **options)
    ts = build_training_set(settings, "conversion", spec.label, plan)
    model = champion_of(configure(settings), "conversion").model
    with mlflow.start_run() as run:
        log_reference(settings, ts, model, spec.label)
    sample = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="reference/sample.parquet", dst_path=str(tmp_path)
        )  # fmt: skip
    )
    assert set(model.features) < set(sample.columns) and SCORE in sample.columns
    assert sample["__snapshot__"].iloc[0] == pd.Timestamp(reference_snapshot(plan.test, 30))
    assert len(sample) <= settings.drift_reference_rows

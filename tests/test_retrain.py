"""Retraining on evidence, replayed month by month on synthetic data with and without a regime shift.

Both worlds share the customers and everything before the shift, so one champion is trained on the
data validated as of ``NOW0`` and each world continues from a copy of that workspace (its MLflow database
is copied; the artefacts of that first champion stay where it logged them). Time passes by validating the
full raw history "as of" a later date (later rows are quarantined as future ones), building that day's
feature snapshot, scoring it into the prediction log and running ``retrain --if-needed``.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from features.pipeline import compute_features
from features.synth import SynthConfig, generate
from portrait import predlog
from portrait.cli import app
from portrait.settings import ModelWindows, Settings
from portrait.workflow import serving_snapshot, validate
from training.monitor import score_snapshot
from training.retrain import RetrainResult, retrain
from training.tracking import configure
from training.train import train_named

MODEL = "conversion"
START, END = datetime(2022, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
NOW0 = datetime(2024, 3, 1, tzinfo=UTC)
SHIFT = datetime(2024, 3, 2, tzinfo=UTC)
STEP = timedelta(days=35)  # a month and a bit: the previous scoring's 30-day outcome is known each time
CONFIG = SynthConfig(n_customers=2000, seed=11, start=START, end=END)
SHIFTED = SynthConfig(**{**vars(CONFIG), "shift_at": SHIFT, "shift_share": 0.6, "shift_factor": 0.1})


def _settings(home: Path) -> Settings:
    return Settings(home=home, models={MODEL: ModelWindows(n_train=3, step_days=30)}, train_threads=1)


def _advance(settings: Settings, now: datetime) -> datetime:
    """Validate the raw history as of ``now`` and build the serving snapshot's features."""
    validate(settings, now=now)
    snapshot = serving_snapshot(settings)
    compute_features(settings.clean_dir, settings.features_dir, [snapshot])
    return snapshot


@pytest.fixture(scope="module")
def before_shift(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The workspace with a champion trained as of NOW0, and both worlds' raw data."""
    root = tmp_path_factory.mktemp("worlds")
    generate(CONFIG, root / "raw_plain")
    generate(SHIFTED, root / "raw_shift")
    home = root / "base"
    settings = _settings(home)
    settings.ensure_dirs()
    for name in ("customers", "transactions", "events", "truth"):
        shutil.copy(root / "raw_plain" / f"{name}.parquet", settings.raw_dir)
    _advance(settings, NOW0)
    assert train_named(settings, MODEL, trials=1).decision.promoted
    return home, root / "raw_plain", root / "raw_shift"


def _world(before_shift: tuple[Path, Path, Path], tmp_path: Path, shifted: bool) -> Settings:
    home, plain, shift = before_shift
    copy = tmp_path / "ws"
    shutil.copytree(home, copy)
    settings = _settings(copy)
    for f in (shift if shifted else plain).glob("*.parquet"):
        shutil.copy(f, settings.raw_dir / f.name)
    return settings


def _period(settings: Settings, now: datetime, check: Callable[[Settings], RetrainResult] | None = None):
    snapshot = _advance(settings, now)
    score_snapshot(settings, [MODEL], snapshot)
    if check is None:
        return None
    return check(settings)


def _if_needed(settings: Settings) -> RetrainResult:
    [result] = retrain(settings, [MODEL], if_needed=True, trials=1)
    return result


def test_without_a_shift_nothing_is_retrained(before_shift, tmp_path, monkeypatch):
    settings = _world(before_shift, tmp_path, shifted=False)
    verdicts = [_period(settings, NOW0 + k * STEP, _if_needed) for k in range(2)]
    # The third period through the command line, as a scheduler would run it.
    _period(settings, NOW0 + 2 * STEP)
    monkeypatch.setenv("PORTRAIT_HOME", str(settings.home))
    monkeypatch.setenv("PORTRAIT_MODELS", '{"conversion": {"n_train": 3, "step_days": 30}}')
    result = CliRunner().invoke(app, ["retrain", MODEL, "--if-needed", "--trials", "1"])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and "retrained" not in result.output, result.output
    for verdict in verdicts:
        assert not verdict.needed and not verdict.retrained, verdict.summary()
    assert [str(v.version) for v in configure(settings).search_model_versions(f"name = '{MODEL}'")] == ["1"]
    report = predlog.read_report(settings)
    evaluations = [e for e in report.evaluations if e.model == MODEL]
    assert len(evaluations) == 2  # the scorings of NOW0 and NOW0 + STEP have their outcomes
    assert all(0.8 <= e.metrics["calibration_ratio"] <= 1.25 for e in evaluations)
    assert report.drift[MODEL].drift_share < settings.retrain_drift_share


def test_a_shift_is_flagged_and_retrained_into_a_better_champion(before_shift, tmp_path):
    settings = _world(before_shift, tmp_path, shifted=True)
    _period(settings, NOW0)  # scored before the shift hits: its outcome window has it
    first = _period(settings, NOW0 + STEP, _if_needed)
    assert first.needed and first.retrained, first.summary()
    drift = predlog.read_report(settings).drift[MODEL]
    assert drift.drift_share >= settings.retrain_drift_share, first.summary()
    # Both the inputs and the realised outcomes say so: the old champion now over-predicts.
    assert {"feature_drift", "realised_calibration"} <= set(first.signals), first.summary()
    results = [first]
    now = NOW0 + STEP
    while not results[-1].promoted and len(results) < 3:
        now += STEP
        results.append(_period(settings, now, _if_needed))
    promoted = results[-1]
    assert promoted.promoted, [r.summary() for r in results]
    decision = promoted.outcome.decision
    # The gate scored both on the newest out-of-time split, which lies after the shift.
    assert decision.candidate > decision.champion and str(decision.champion_version) == "1"
    run = configure(settings).get_run(promoted.outcome.run_id)
    assert datetime.fromisoformat(run.data.params["test_snapshot"]).replace(tzinfo=UTC) >= SHIFT


# ---- the commands' answers to bad input ----------------------------------------------------------------


def _one_line_error(result, code: int, needle: str) -> None:
    assert result.exit_code == code, result.output
    assert needle in " ".join(result.output.split()) and "Traceback" not in result.output
    assert result.output.count("error:") == 1 and result.output.startswith("error:"), result.output


def test_commands_answer_bad_input_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTRAIT_HOME", str(tmp_path))
    runner = CliRunner()
    _one_line_error(runner.invoke(app, ["retrain", "nope"]), 2, "unknown model 'nope'")
    _one_line_error(runner.invoke(app, ["monitor", "lookalike"]), 2, "unknown tag model 'lookalike'")
    _one_line_error(runner.invoke(app, ["retrain", "--trials", "0"]), 2, "--trials must be at least 1")
    _one_line_error(runner.invoke(app, ["monitor"]), 2, "no validated data")
    _one_line_error(runner.invoke(app, ["retrain", "--if-needed"]), 2, "no validated data")
    monkeypatch.setenv("PORTRAIT_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    nothing = runner.invoke(app, ["cards"])  # nothing trained: a hint, not a table of dashes
    assert nothing.exit_code == 0 and "no champions yet" in nothing.output and "grade" not in nothing.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PORTRAIT_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    _one_line_error(runner.invoke(app, ["cards"]), 3, "unavailable")

"""Retraining on evidence: `portrait retrain [--if-needed]`.

Without ``--if-needed`` every asked model is retrained. With it, a tag model is retrained when its
evidence crosses a threshold of the settings, and each model's verdict says why (or why not):

* **no champion** yet;
* **feature drift**: at least :attr:`Settings.retrain_drift_share` of the champion's features drifted
  between its reference and the newest feature snapshot (:mod:`training.drift`);
* **score drift**: the champion's score distribution drifted (:attr:`Settings.retrain_on_score_drift`);
* **realised decay** (:mod:`training.monitor`, the latest evaluation of the *current* champion version):
  the headline metric (AUC, normalised Gini) is below the champion's test figure by more than
  :attr:`Settings.retrain_decay`, or the calibration ratio (predicted / actual level) is outside
  ``[1 / (1 + c), 1 + c]`` with ``c =`` :attr:`Settings.retrain_calibration` *and* the gap is not noise
  (at least :data:`CALIBRATION_MIN_Z` standard deviations).

The evidence is refreshed first (`portrait monitor`'s realised figures and a drift check). Retraining
goes through :func:`training.train.train_named`, so the champion gate decides as always: the new version
becomes champion only when it beats the current one on the same, newest out-of-time test split.
Lookalike models have no monitored evidence: ``--if-needed`` leaves them alone (retrain them by name).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient

from portrait import catalogue
from portrait.predlog import DriftSummary, MonitorReport, read_report
from portrait.settings import Settings
from training.check import check_model
from training.drift import check_drift
from training.monitor import champion_of, monitor
from training.tracking import configure, reap_dead_runs
from training.train import train_named

logger = logging.getLogger(__name__)

CALIBRATION_MIN_Z = 3.0
"""A calibration gap counts only when the predicted total is this many standard deviations off
(``calibration_z`` of :func:`training.monitor.realised_metrics`): on a small base the ratio is noisy."""
SIGNALS = ("no_champion", "feature_drift", "score_drift", "realised_decay", "realised_calibration", "asked")


@dataclass
class RetrainResult:
    """What `portrait retrain` decided and did for one model."""

    model: str
    needed: bool
    reasons: list[str] = field(default_factory=list)
    """Why it was retrained, or (when not needed) the evidence that stayed inside the thresholds."""
    signals: list[str] = field(default_factory=list)
    """Which thresholds were crossed: among :data:`SIGNALS`."""
    evidence: dict[str, Any] = field(default_factory=dict)
    outcome: Any = None
    """The training outcome (``version``, ``decision``, ``metrics``) when it was retrained."""
    error: str | None = None
    """Why it could not be retrained (e.g. the data check failed)."""

    @property
    def retrained(self) -> bool:
        return self.outcome is not None

    @property
    def promoted(self) -> bool:
        return bool(self.outcome is not None and self.outcome.decision.promoted)

    def summary(self) -> str:
        why = "; ".join(self.reasons)
        if self.error:
            return f"not retrained: {self.error}" + (f" (wanted: {why})" if self.needed else "")
        if not self.needed:
            return f"not needed: {why}" if why else "not needed"
        if self.outcome is None:
            return f"retraining needed ({why})"
        return f"retrained ({why}) -> v{self.outcome.version}: {self.outcome.decision.reason}"


def assess(
    settings: Settings,
    name: str,
    client: MlflowClient,
    drift: DriftSummary | None,
    report: MonitorReport,
) -> RetrainResult:
    """Whether tag model ``name`` needs retraining on the evidence (see the module docstring)."""
    entry = catalogue.get(name)
    current = champion_of(client, name)
    if current is None:
        return RetrainResult(name, True, ["no champion yet"], ["no_champion"])
    result = RetrainResult(name, False, evidence={"champion": current.version})
    fine: list[str] = []
    if drift is not None and drift.version == current.version:
        result.evidence |= {
            "drift_share": drift.drift_share,
            "score_drift": drift.prediction.score if drift.prediction else None,
        }
        share = f"{drift.drifted_features} of {drift.n_features} features drifted ({drift.drift_share:.0%})"
        if drift.drift_share >= settings.retrain_drift_share:
            result.reasons.append(f"{share} >= {settings.retrain_drift_share:.0%}")
            result.signals.append("feature_drift")
        else:
            fine.append(share)
        if drift.prediction is not None:
            score = f"score drift {drift.prediction.score:.3f} ({drift.prediction.method})"
            if drift.prediction.drifted and settings.retrain_on_score_drift:
                result.reasons.append(f"{score} >= {drift.prediction.threshold:g}")
                result.signals.append("score_drift")
            else:
                fine.append(score)
    else:
        fine.append("no drift check of this champion")
    realised = report.latest(name, current.version)
    metric = entry.headline_metric
    if realised is not None and metric in realised.metrics:
        value, test = realised.metrics[metric], realised.test_metrics.get(metric)
        result.evidence |= {"realised": value, "test": test, "scoring_date": str(realised.scoring_date)}
        if test is not None:
            drop = test - value if entry.higher_is_better else value - test
            text = f"realised {metric} {value:.3f} vs test {test:.3f} ({realised.scoring_date})"
            if drop > settings.retrain_decay:
                result.reasons.append(f"{text}: worse by {drop:.3f} > {settings.retrain_decay:g}")
                result.signals.append("realised_decay")
            else:
                fine.append(text)
        ratio = realised.metrics.get("calibration_ratio")
        if ratio is not None:
            result.evidence["calibration_ratio"] = ratio
            high = 1.0 + settings.retrain_calibration
            z = realised.metrics.get("calibration_z", float("inf"))
            text = f"realised calibration ratio {ratio:.2f}"
            if not 1.0 / high <= ratio <= high and abs(z) >= CALIBRATION_MIN_Z:
                result.reasons.append(f"{text} outside [{1 / high:.2f}, {high:.2f}]")
                result.signals.append("realised_calibration")
            else:
                fine.append(text if 1.0 / high <= ratio <= high else f"{text} (within noise, z {z:.1f})")
    else:
        fine.append("no realised figures for this champion yet")
    if result.reasons:
        result.needed = True
    else:
        result.reasons = fine
    return result


def retrain(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    if_needed: bool = False,
    trials: int = 20,
    timeout_s: float | None = None,
    refresh: bool = True,
    **overrides: Any,
) -> list[RetrainResult]:
    """Retrain ``names`` (default: every catalogue model), or with ``if_needed`` only those whose evidence
    says so; returns one result per model, in order. ``overrides`` go to :func:`train_named`
    (windows, plan options). ``refresh`` re-runs the realised monitor and the drift check first."""
    wanted = list(names) if names is not None else catalogue.names()
    client = configure(settings)
    reap_dead_runs(client, catalogue.names())  # runs of killed trainings: FAILED, their versions deleted
    tag_names = [n for n in wanted if catalogue.get(n).is_tag_model]
    drift: dict[str, DriftSummary] = {}
    failed: dict[str, str] = {}
    report = MonitorReport(generated_at=datetime.now(UTC))
    if if_needed and tag_names:
        if refresh:
            report = monitor(settings, tag_names)
            for name in tag_names:
                try:
                    drift |= check_drift(settings, [name])
                except ValueError as exc:  # e.g. no features at the newest snapshot for this model
                    failed[name] = f"drift check failed: {exc}"
                    logger.warning("%s: %s", name, failed[name])
        else:
            report = read_report(settings)
            drift = dict(report.drift)
    results: list[RetrainResult] = []
    for name in wanted:
        entry = catalogue.get(name)
        if not if_needed:
            result = RetrainResult(name, True, ["asked for"], ["asked"])
        elif not entry.is_tag_model:
            result = RetrainResult(name, False, ["no monitored evidence for this kind of model"])
        else:
            result = assess(settings, name, client, drift.get(name), report)
            if name in failed and not result.needed:
                result.reasons.insert(0, failed[name])
        if result.needed:
            check = check_model(settings, name, **(overrides if entry.is_tag_model else {}))
            if not check.ok:
                result.error = check.summary()
            else:
                try:
                    result.outcome = train_named(
                        settings,
                        name,
                        trials=trials,
                        timeout_s=timeout_s,
                        **(overrides if entry.is_tag_model else {}),
                    )
                except ValueError as exc:  # the data cannot train this model after all
                    result.error = str(exc)
        logger.info("%s: %s", name, result.summary())
        results.append(result)
    return results


__all__ = ["SIGNALS", "RetrainResult", "assess", "retrain"]

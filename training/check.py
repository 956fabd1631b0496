"""The data check before training: does the history fit each model's windows, are there enough labels?

``portrait data check`` prints it and ``portrait train`` runs it first, so a model whose data cannot work
is reported with what to change instead of failing with a traceback halfway through training.

Per tag model: the snapshot plan must fit the history (horizon and lookback, see :mod:`training.splits`),
and the labels at the planned snapshots must give at least ``settings.min_positives`` positives *and*
negatives for fitting and for the out-of-time test (classifiers), or that many customers with a non-zero
value (regressors). The lookalike model needs feature snapshots with customers in them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from features.history import data_end, data_start
from features.tables import snapshots
from portrait import catalogue
from portrait.settings import Settings
from training.labels import build_labels
from training.splits import DEFAULT_MIN_HISTORY_DAYS, plan_snapshots
from training.train import resolve

logger = logging.getLogger(__name__)


@dataclass
class ModelCheck:
    """The verdict for one model: ``ok`` or the problems, each with what to change."""

    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        if self.ok:
            return "ok"
        return "; ".join(f"{p} -> {f}" if f else p for p, f in zip(self.problems, self.fixes, strict=True))


class NoData(Exception):
    """There is no validated data to check."""


def _env_name(name: str, option: str) -> str:
    return f"PORTRAIT_MODELS__{name.upper()}__{option.upper()}"


def _feasible_horizon(history_days: int, min_history_days: int) -> int:
    """The longest horizon whose validation and test windows fit the history (rounded down to a week)."""
    longest = (history_days - min_history_days) // 2
    return max(0, longest - longest % 7) if longest >= 7 else max(0, longest)


def check_model(settings: Settings, name: str, **overrides: Any) -> ModelCheck:
    """Check one catalogue model against the validated data (``overrides`` as for ``portrait train``)."""
    entry = catalogue.get(name)
    if not (settings.clean_dir / "transactions.parquet").exists():
        raise NoData("no validated data in data/clean: run `portrait data validate` (or `data import`) first")
    if entry.kind == "lookalike":
        snaps = snapshots(settings.features_dir)
        latest = snaps[-1].date().isoformat() if snaps else "built by `portrait features build` or training"
        return ModelCheck(name, True, details={"population snapshot": latest})
    spec, plan_options = resolve(settings, name, **overrides)
    start, end = data_start(settings.clean_dir), data_end(settings.clean_dir)
    history = (end - start).days
    details: dict[str, Any] = {
        "history": f"{start:%Y-%m-%d}..{end:%Y-%m-%d} ({history} days)",
        "horizon_days": spec.label.horizon_days,
    }
    min_history = int(plan_options.get("min_history_days", DEFAULT_MIN_HISTORY_DAYS))
    try:
        plan = plan_snapshots(start, end, spec.label.horizon_days, **plan_options)
    except ValueError as exc:
        feasible = _feasible_horizon(history, min_history)
        fix = (
            f"use a horizon of at most {feasible} days: `portrait train {name} --horizon-days {feasible}` "
            f"or {_env_name(name, 'horizon_days')}={feasible}"
            if feasible >= 1 and "test_at" not in plan_options
            else "import more history, or choose an earlier --test-date"
        )
        return ModelCheck(name, False, [str(exc)], [fix], details)
    labels = build_labels(settings.clean_dir, plan.all, spec.label)
    fitting = labels[labels.event_timestamp.isin(pd.to_datetime([*plan.train, plan.validation], utc=True))]
    test = labels[labels.event_timestamp == pd.Timestamp(plan.test)]
    problems, fixes = [], []
    floor = settings.min_positives
    for split, rows in (("training", fitting), ("test", test)):
        if entry.kind == "classifier":
            positives = int((rows.label > 0).sum())
            negatives = int(len(rows) - positives)
            details[f"{split}_positives"], details[f"{split}_negatives"] = positives, negatives
            if min(positives, negatives) < floor:
                problems.append(
                    f"{split} snapshots give {positives:,} positives and {negatives:,} negatives "
                    f"(at least {floor:,} of each needed)"
                )
                fixes.append(_label_fix(name, positives, negatives, spec.label.horizon_days))
        else:
            nonzero = int((rows.label > 0).sum())
            details[f"{split}_nonzero"] = nonzero
            if nonzero < floor:
                problems.append(
                    f"{split} snapshots give {nonzero:,} customers with a value (at least {floor:,})"
                )
                fixes.append(
                    f"lengthen the horizon ({_env_name(name, 'horizon_days')}) or import more customers"
                )
    details["snapshots"] = f"{len(plan.train)} training, test {plan.test:%Y-%m-%d}"
    return ModelCheck(name, not problems, problems, fixes, details)


def _label_fix(name: str, positives: int, negatives: int, horizon: int) -> str:
    if positives < negatives:
        hint = (
            "a longer horizon gives more positives"
            if name != "churn"
            else "a shorter horizon gives more churners"
        )
    else:
        hint = (
            "a shorter horizon gives more negatives"
            if name != "churn"
            else "a longer horizon gives fewer churners"
        )
    return (
        f"{hint} (now {horizon} days: {_env_name(name, 'horizon_days')}); more training snapshots "
        f"({_env_name(name, 'n_train')}) or more customers also help; or lower PORTRAIT_MIN_POSITIVES"
    )


def check_models(settings: Settings, names: list[str] | None = None, **overrides: Any) -> list[ModelCheck]:
    """Check ``names`` (default: every catalogue model)."""
    return [check_model(settings, n, **overrides) for n in (names or catalogue.names())]

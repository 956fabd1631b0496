"""The one workflow that builds a workspace: data -> validate -> features -> apply -> train -> materialize.

``portrait demo``, the test fixtures and the benchmarks call these steps instead of spelling them out.
Each step is a plain function of the settings; :func:`build_workspace` runs them in order. This module is
the application layer: it wires ``features`` and ``training`` together (``serving`` never imports it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from portrait import catalogue
from portrait.settings import Settings

logger = logging.getLogger(__name__)

Step = Callable[[str], None]
"""Called with a step's title before it runs (the CLI prints a rule, tests pass nothing)."""


@dataclass
class WorkspaceBuild:
    """What :func:`build_workspace` did."""

    snapshot: datetime
    counts: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, Any] = field(default_factory=dict)
    materialized: dict[str, Any] | None = None


def synthesize(settings: Settings, config: Any) -> Any:
    """Generate synthetic raw inputs (``features.synth.SynthConfig``) and validate them as of its end."""
    from features.synth import generate

    settings.ensure_dirs()
    result = generate(config, settings.raw_dir)
    validate(settings, now=config.end)
    return result


def validate(settings: Settings, now: datetime | None = None) -> Any:
    """Validate the raw inputs into ``data/clean`` (invalid rows quarantined with a reason)."""
    from features.validate import validate_workspace

    return validate_workspace(settings, now=now)


def serving_snapshot(settings: Settings) -> datetime:
    """The snapshot that describes customers 'now': the day after the last recorded activity."""
    from features.history import data_end

    end = data_end(settings.clean_dir)
    return end.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def build_features(settings: Settings, snapshots: Sequence[datetime] | None = None) -> datetime:
    """Compute the feature tables (default: the serving snapshot) and apply the Feast repo; returns the
    latest snapshot built."""
    from features import repo
    from features.build import build_tables

    snaps = list(snapshots) if snapshots else [serving_snapshot(settings)]
    build = build_tables(settings, snaps)
    logger.info("%d customer rows for %d snapshot(s) in %.1fs", build.rows, len(snaps), build.seconds)
    repo.apply(settings)
    return max(snaps)


def train(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    trials: int = 3,
    timeout_s: float | None = None,
    **plan_options: Any,
) -> dict[str, Any]:
    """Train, register and (maybe) promote catalogue models (default: all), in catalogue order."""
    from training.train import train_named

    outcomes = {}
    for name in names if names is not None else catalogue.names():
        entry = catalogue.get(name)
        options = plan_options if entry.is_tag_model else {}
        outcomes[name] = train_named(settings, name, trials=trials, timeout_s=timeout_s, **options)
    return outcomes


def publish(settings: Settings, snapshot: datetime) -> dict[str, Any]:
    """Load the online store up to the day after ``snapshot`` (and rebuild the serving vectors)."""
    from features import store as fs

    return fs.materialize(settings, end=snapshot + timedelta(days=1))


def build_workspace(
    settings: Settings,
    *,
    synth: Any = None,
    models: Sequence[str] | None = None,
    trials: int = 3,
    timeout_s: float | None = None,
    materialize: bool = True,
    snapshot: datetime | None = None,
    step: Step | None = None,
    **plan_options: Any,
) -> WorkspaceBuild:
    """The whole workflow: (synthetic data ->) validate -> features -> apply -> train -> materialize.

    ``synth`` is a ``features.synth.SynthConfig``; without it the raw inputs already in the workspace are
    validated. ``snapshot`` is the serving snapshot (default: the day after the last activity).
    ``models`` defaults to every catalogue model; ``plan_options`` (e.g. ``n_train``,
    ``step_days``) go to the tag models' snapshot plans.
    """
    say = step or (lambda title: logger.info("== %s", title))
    settings.ensure_dirs()
    counts: dict[str, int] = {}
    say("data")
    if synth is not None:
        counts = dict(synthesize(settings, synth).counts)
    else:
        validate(settings, now=datetime.now(UTC))
    say("features")
    snapshot = build_features(settings, [snapshot] if snapshot else None)
    say("training")
    outcomes = train(settings, models, trials=trials, timeout_s=timeout_s, **plan_options)
    result = WorkspaceBuild(snapshot=snapshot, counts=counts, outcomes=outcomes)
    if materialize:
        say("online store")
        result.materialized = publish(settings, snapshot)
    return result


__all__ = [
    "WorkspaceBuild",
    "build_features",
    "build_workspace",
    "publish",
    "serving_snapshot",
    "synthesize",
    "train",
    "validate",
]

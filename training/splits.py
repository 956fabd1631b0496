"""Time-based splits: train on earlier snapshots, test out of time, validate on held-out customers.

With horizon ``h`` and step ``s``:

* the **test** snapshot ``T_test`` (default: the latest day whose label window fits in the data) is only
  ever scored: no label used for fitting, tuning or calibration ends after ``T_test``;
* the **training** snapshots are ``T_test - h - k * s`` for ``k = 0 .. n_train - 1``, so every training
  label window ends at or before ``T_test``; the latest of them, ``T_test - h``, is the **validation**
  snapshot ``T_val``;
* **validation** rows are a fixed share of *customers* (chosen by a hash of the customer id, see
  :func:`training.dataset.holdout_mask`) held out of fitting at every training snapshot. Because the label
  windows of snapshots less than ``h`` apart overlap, validating on other snapshots of the *same*
  customers would leak their future purchases from the training labels into the validation labels (early
  stopping and model selection then favour over-fitted models); disjoint customers cannot leak. Tier
  thresholds come from the scores at ``T_val``, the snapshot closest to the time of scoring.
* **calibration** (probabilities and value totals) is fitted on the held-out customers of the training
  snapshot one year before ``T_test`` (the closest within half a step), when there is one: label windows
  in the same season as the test window, so annual seasonality in base rates (a churn window that ends
  before Christmas against one that ends in October) does not shift the probabilities. Without a year of
  labelled history it falls back to ``T_val``. The season matched is the test snapshot's, the time every
  reported metric is measured at; the registered model then serves from ``T_test + h`` on.

Defaults: monthly snapshots over a year (``n_train=12``, ``step_days=30``), so the training rows cover
every season once when the history allows; snapshots with less than ``min_history_days`` of history
behind them are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

DEFAULT_STEP_DAYS = 30
DEFAULT_N_TRAIN = 12
DEFAULT_MIN_HISTORY_DAYS = 60
VALIDATION_SHARE = 0.2
SEASON_DAYS = 365
"""Calibrate on the snapshot this many days before the test snapshot (the same time of year), if any."""


@dataclass(frozen=True)
class SnapshotPlan:
    """Which snapshots train, validate and test a model (see the module docstring)."""

    train: list[datetime]
    validation: datetime
    test: datetime
    horizon_days: int
    notes: list[str] = field(default_factory=list)
    validation_share: float = VALIDATION_SHARE
    calibration: datetime | None = None  # None: the validation snapshot

    @property
    def all(self) -> list[datetime]:
        return sorted({*self.train, self.validation, self.test})

    def as_dict(self) -> dict[str, object]:
        return {
            "train": [t.isoformat() for t in self.train],
            "validation": self.validation.isoformat(),
            "test": self.test.isoformat(),
            "horizon_days": self.horizon_days,
            "validation_share": self.validation_share,
            "calibration": self.calibration_snapshot.isoformat(),
        }

    @property
    def calibration_snapshot(self) -> datetime:
        """Where probabilities and value totals are calibrated (see the module docstring)."""
        return self.calibration or self.validation


def floor_day(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


def plan_snapshots(
    start: datetime,
    end: datetime,
    horizon_days: int,
    *,
    step_days: int = DEFAULT_STEP_DAYS,
    n_train: int = DEFAULT_N_TRAIN,
    min_history_days: int = DEFAULT_MIN_HISTORY_DAYS,
    test_at: datetime | None = None,
    validation_share: float = VALIDATION_SHARE,
    season_days: int | None = SEASON_DAYS,
) -> SnapshotPlan:
    """Choose training / validation / test snapshots inside ``[start + min_history, end - horizon]``.

    Raises ``ValueError`` when the test window runs past ``end`` or when not even the validation
    snapshot has ``min_history_days`` of history.
    """
    if step_days < 1 or n_train < 1:
        raise ValueError("step_days and n_train must be >= 1")
    if not 0.0 < validation_share < 1.0:
        raise ValueError("validation_share must be between 0 and 1")
    horizon = timedelta(days=horizon_days)
    test = floor_day(test_at) if test_at else floor_day(end - horizon)
    if test + horizon > end + timedelta(days=1):
        raise ValueError(
            f"the test snapshot {test:%Y-%m-%d} + {horizon_days} days runs past the data ({end:%Y-%m-%d})"
        )
    validation = test - horizon
    earliest = start + timedelta(days=min_history_days)
    if validation < earliest:
        raise ValueError(
            f"not enough history for a {horizon_days}-day horizon: data covers {start:%Y-%m-%d}..{end:%Y-%m-%d}, "
            f"validation snapshot would be {validation:%Y-%m-%d}"
        )
    train = [validation - timedelta(days=step_days * k) for k in range(n_train)]
    train = [t for t in train if t >= earliest]
    notes = []
    if len(train) == 1:
        notes.append(
            "history too short for more than one training snapshot: training and validation customers "
            f"come from {validation:%Y-%m-%d} only"
        )
    calibration = None
    if season_days:
        same_season = test - timedelta(days=season_days)
        near = [t for t in train if abs(t - same_season) <= timedelta(days=step_days / 2)]
        calibration = min(near, key=lambda t: abs(t - same_season)) if near else None
    return SnapshotPlan(
        train=sorted(train),
        validation=validation,
        test=test,
        horizon_days=horizon_days,
        notes=notes,
        validation_share=validation_share,
        calibration=calibration,
    )

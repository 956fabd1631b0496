"""Time-based splits: train on earlier snapshots, validate on a later one, test out of time.

With horizon ``h``, the test snapshot is ``T_test`` (default: the latest time whose label window fits in
the data); validation is ``T_val = T_test - h`` so validation labels end where the test window starts;
training snapshots are ``T_val - k * step`` (k = 1..n), so every training label ends before ``T_test``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class SnapshotPlan:
    train: list[datetime]
    validation: datetime
    test: datetime
    horizon_days: int
    notes: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[datetime]:
        return sorted({*self.train, self.validation, self.test})

    def as_dict(self) -> dict[str, object]:
        return {
            "train": [t.isoformat() for t in self.train],
            "validation": self.validation.isoformat(),
            "test": self.test.isoformat(),
            "horizon_days": self.horizon_days,
        }


def floor_day(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


def plan_snapshots(
    start: datetime,
    end: datetime,
    horizon_days: int,
    *,
    step_days: int = 30,
    n_train: int = 6,
    min_history_days: int = 60,
    test_at: datetime | None = None,
) -> SnapshotPlan:
    """Choose train / validation / test snapshots inside ``[start + min_history, end - horizon]``."""
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
    train = [validation - timedelta(days=step_days * k) for k in range(1, n_train + 1)]
    train = [t for t in train if t >= earliest]
    notes = []
    if not train:
        # Too short for strictly earlier snapshots: train on the validation snapshot's predecessor window.
        train = [validation]
        notes.append("history too short for separate training snapshots: training and validation share one")
    return SnapshotPlan(
        train=sorted(train), validation=validation, test=test, horizon_days=horizon_days, notes=notes
    )

"""Where feature tables live: ``<features_dir>/<view>/snapshot=<YYYYmmddTHHMMSS>.parquet``.

The one place that knows the layout; the pipeline writes it, the Feast file sources glob it, training and
scoring list the snapshots through it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

PROFILE_VIEW = "customer_profile"
"""The view every customer of a snapshot has a row in (used to list customers and snapshots)."""
_FORMAT = "%Y%m%dT%H%M%S"


def snapshot_label(snapshot: datetime) -> str:
    return snapshot.astimezone(UTC).strftime(_FORMAT)


def snapshot_path(features_dir: Path, view: str, snapshot: datetime) -> Path:
    return features_dir / view / f"snapshot={snapshot_label(snapshot)}.parquet"


def view_glob(features_dir: Path, view: str) -> str:
    """Every snapshot of one view, as a glob (what the Feast file source reads)."""
    return str(features_dir / view / "*.parquet")


def snapshot_files(features_dir: Path, view: str = PROFILE_VIEW) -> list[Path]:
    return sorted((features_dir / view).glob("snapshot=*.parquet"))


def snapshot_of(path: Path) -> datetime:
    return datetime.strptime(path.stem.split("=", 1)[1], _FORMAT).replace(tzinfo=UTC)


def snapshots(features_dir: Path, view: str = PROFILE_VIEW) -> list[datetime]:
    """The snapshots on disk, oldest first."""
    return [snapshot_of(f) for f in snapshot_files(features_dir, view)]

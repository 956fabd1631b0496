"""Build the workspace's feature tables where the profile says: DuckDB on one machine, Spark on ``cluster``.

Both run the same Ibis definitions (:mod:`features.pipeline`) and write the same files
(:mod:`features.tables`), so every caller -- ``portrait features build``, the workflow, training's missing
snapshots -- goes through :func:`build_tables` and never chooses an engine itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from portrait.settings import Settings

if TYPE_CHECKING:
    from features.pipeline import FeatureBuild


def engine(settings: Settings) -> str:
    """The engine that computes feature tables on this profile: ``spark`` (cluster) or ``duckdb``."""
    return "spark" if settings.profile == "cluster" else "duckdb"


def build_tables(settings: Settings, snapshots: Sequence[datetime]) -> FeatureBuild:
    """Compute the feature tables for ``snapshots`` from ``data/clean`` on the profile's engine."""
    if engine(settings) == "spark":
        from features.spark import build_features

        return build_features(settings, snapshots)
    from features.pipeline import compute_features

    return compute_features(settings.clean_dir, settings.features_dir, snapshots)

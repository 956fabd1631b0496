"""Feast data sources: the Parquet feature tables written by ``features.pipeline``."""

from __future__ import annotations

from feast import FileSource
from feast.data_format import ParquetFormat

from portrait.settings import Settings


def feature_table_source(settings: Settings, view: str) -> FileSource:
    """All snapshots of one feature table (``<features_dir>/<view>/snapshot=*.parquet``)."""
    return FileSource(
        name=f"{view}_source",
        path=str(settings.features_dir / view / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        description=f"Point-in-time snapshots of {view}, computed by `portrait features build`.",
        owner="portrait-ml@users.noreply.github.com",
    )

"""The prediction log, and what monitoring learns from it: the report's schema and the quality cards.

**The log** is append-only. Each record is one score of one model for one customer: ``customer_id``,
``model``, ``model_version``, ``score``, ``tier``, ``features_timestamp`` (the snapshot the features
describe: the outcome window starts there), ``scored_at`` and ``source`` (``batch``: `portrait score`;
``served``: a share :attr:`Settings.prediction_log_sample` of the ``/v1/tags`` answers, see
:func:`sample`). Where it lives:

* local profile: Parquet files under ``<home>/data/predictions/model=<name>/scored=<YYYY-MM-DD>/``; every
  :func:`append` writes one new file per (model, day) atomically (:mod:`portrait.files`), never touching
  older ones, and :func:`read` reads them all;
* production profile: the PostgreSQL table :attr:`Settings.prediction_log_table` in
  :attr:`Settings.postgres_url` (database and table created if missing).

**The monitoring report** (``data/reports/monitor.json``, :class:`MonitorReport`) is written by
``training.monitor`` (realised performance), ``training.drift`` (drift) and read here, so the service can
show it without importing training.

**Quality cards** (:func:`quality_cards`) grade each champion from its evidence. Realised figures (the
latest scoring date of the *current champion version* whose horizon has passed) win over the test
figures of the champion's training run. The grade comes from the headline metric:

======================  =======  =======  =======  =======  =====
headline                A        B        C        D        E
======================  =======  =======  =======  =======  =====
AUC (classifiers)       >= 0.85  >= 0.78  >= 0.70  >= 0.60  below
normalised Gini (value) >= 0.75  >= 0.60  >= 0.45  >= 0.30  below
======================  =======  =======  =======  =======  =====

and drops one letter (E stays E) when the scores are off in level: the calibration ratio (mean predicted
probability / actual rate, or total predicted / total actual value) outside ``[0.8, 1.25]`` (for realised
figures, only when the gap is at least 3 standard deviations: ``calibration_z``). Models with another
headline metric get no grade. The card also carries the actual rate (mean value) per tier and the
date and kind (``realised`` / ``test``) of its evidence.

This module is core: it imports nothing above ``portrait``'s own core modules.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from portrait import catalogue
from portrait.backends import (
    BackendUnavailable,
    ensure_postgres_database,
    is_postgres,
    redact,
    with_connect_timeout,
)
from portrait.files import atomic_path, write_text_atomic
from portrait.settings import Settings

logger = logging.getLogger(__name__)

Source = Literal["batch", "served"]
SOURCES: tuple[str, ...] = ("batch", "served")
COLUMNS: tuple[str, ...] = (
    "customer_id",
    "model",
    "model_version",
    "score",
    "tier",
    "features_timestamp",
    "scored_at",
    "source",
)
ARROW_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("score", pa.float64()),
        ("tier", pa.string()),
        ("features_timestamp", pa.timestamp("us", tz="UTC")),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
    ]
)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class PredictionRecord(BaseModel):
    """One logged score (the columns of the log, in order)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str
    model: str
    model_version: str
    score: float
    tier: str | None = None
    features_timestamp: datetime | None = None
    scored_at: datetime
    source: Source


# ---- the log -------------------------------------------------------------------------------------------


def predictions_dir(settings: Settings) -> Path:
    """Where the local profile keeps the log."""
    return settings.data_root / "predictions"


def location(settings: Settings) -> str:
    """Where the log is, for messages (credentials removed)."""
    if settings.servers:
        return f"table {settings.prediction_log_table} at {redact(settings.postgres_url)}"
    return str(predictions_dir(settings))


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """The log's columns in order and types; ``ValueError`` naming what is missing or wrong."""
    missing = [c for c in COLUMNS if c not in frame.columns and c != "tier"]
    if missing:
        raise ValueError(f"prediction records lack column(s) {', '.join(missing)}")
    out = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].astype(str),
            "model": frame["model"].astype(str),
            "model_version": frame["model_version"].astype(str),
            "score": pd.to_numeric(frame["score"], errors="raise").astype("float64"),
            "tier": frame["tier"].astype(object) if "tier" in frame.columns else None,
            "features_timestamp": pd.to_datetime(frame["features_timestamp"], utc=True),
            "scored_at": pd.to_datetime(frame["scored_at"], utc=True),
            "source": frame["source"].astype(str),
        }
    ).reset_index(drop=True)
    out["tier"] = out["tier"].where(out["tier"].notna(), None)
    bad = sorted(set(out["source"]) - set(SOURCES))
    if bad:
        raise ValueError(f"unknown prediction source(s) {bad}; expected one of {', '.join(SOURCES)}")
    names = sorted({m for m in out["model"].unique() if not _NAME.match(m)})
    if names:
        raise ValueError(f"model names {names} cannot name a log partition (letters, digits, _ . - only)")
    if out["scored_at"].isna().any():
        raise ValueError("every prediction record needs scored_at")
    return out


def append(settings: Settings, frame: pd.DataFrame) -> int:
    """Append prediction records (the :data:`COLUMNS`); returns how many were written.

    Local: one new Parquet file per (model, scoring day), each written atomically. Production: one
    transaction into the PostgreSQL table. Raises ``ValueError`` for malformed records and
    :class:`~portrait.backends.BackendUnavailable` when the database cannot be reached.
    """
    records = normalize(frame)
    if records.empty:
        return 0
    if settings.servers:
        return _SqlLog.of(settings).append(records)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    days = records["scored_at"].dt.strftime("%Y-%m-%d")
    for (model, day), part in records.groupby([records["model"], days], sort=True):
        target = (
            predictions_dir(settings)
            / f"model={model}"
            / f"scored={day}"
            / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        )
        table = pa.Table.from_pandas(part, schema=ARROW_SCHEMA, preserve_index=False)
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    return len(records)


def read(
    settings: Settings,
    model: str | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    source: Source | None = None,
) -> pd.DataFrame:
    """Every logged record (optionally of one ``model``, ``source``, with ``start <= scored_at < end``)."""
    if settings.servers:
        frame = _SqlLog.of(settings).read(model, start, end, source)
    else:
        frame = _read_files(settings, model, start, end)
    if model is not None:
        frame = frame[frame["model"] == model]
    if source is not None:
        frame = frame[frame["source"] == source]
    if start is not None:
        frame = frame[frame["scored_at"] >= pd.Timestamp(start).tz_convert("UTC")]
    if end is not None:
        frame = frame[frame["scored_at"] < pd.Timestamp(end).tz_convert("UTC")]
    return frame.reset_index(drop=True)


def _read_files(
    settings: Settings, model: str | None, start: datetime | None, end: datetime | None
) -> pd.DataFrame:
    root = predictions_dir(settings)
    pattern = f"model={model}/scored=*/part-*.parquet" if model else "model=*/scored=*/part-*.parquet"
    first = start.astimezone(UTC).date().isoformat() if start else None
    last = end.astimezone(UTC).date().isoformat() if end else None
    files = [
        f
        for f in sorted(root.glob(pattern))
        if (first is None or f.parent.name.split("=", 1)[1] >= first)
        and (last is None or f.parent.name.split("=", 1)[1] <= last)
    ]
    if not files:
        return ARROW_SCHEMA.empty_table().to_pandas()
    table = pa.concat_tables([pq.read_table(f, schema=ARROW_SCHEMA) for f in files])
    return table.to_pandas()


def sample(frame: pd.DataFrame, share: float, seed: int | None = None) -> pd.DataFrame:
    """Each row kept with probability ``share`` (0: none, 1: all); ``seed`` makes the draw repeatable."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1 (got {share})")
    if share >= 1.0:
        return frame
    if share <= 0.0:
        return frame.iloc[0:0]
    keep = np.random.default_rng(seed).random(len(frame)) < share
    return frame[keep]


def tag_records(
    tags: pd.DataFrame, *, source: Source = "batch", scored_at: datetime | None = None
) -> pd.DataFrame:
    """Prediction records from a tags frame (``serving.tagger.Tagger.tags_frame`` / `portrait score`).

    Per tag model of the catalogue whose columns are present (``<field>_probability`` or
    ``<field>_predicted``, ``<field>_tier``, ``<field>_model_version``), one record per customer.
    """
    when = pd.Timestamp(scored_at or datetime.now(UTC)).tz_convert("UTC")
    parts = []
    for entry in catalogue.tag_models():
        prefix = entry.response_field
        score = f"{prefix}_{'predicted' if entry.kind == 'regressor' else 'probability'}"
        if score not in tags.columns:
            continue
        n = len(tags)
        parts.append(
            pd.DataFrame(
                {
                    "customer_id": tags["customer_id"].astype(str).to_numpy(),
                    "model": [entry.name] * n,
                    "model_version": tags[f"{prefix}_model_version"].astype(str).to_numpy(),
                    "score": tags[score].to_numpy(dtype="float64"),
                    "tier": tags[f"{prefix}_tier"].to_numpy(dtype=object)
                    if f"{prefix}_tier" in tags.columns
                    else [None] * n,
                    "features_timestamp": pd.to_datetime(tags["features_timestamp"], utc=True).to_numpy()
                    if "features_timestamp" in tags.columns
                    else [pd.NaT] * n,
                    "scored_at": [when] * n,
                    "source": [source] * n,
                }
            )
        )
    if not parts:
        return normalize(pd.DataFrame(columns=list(COLUMNS)))
    return normalize(pd.concat(parts, ignore_index=True))


def log_tags(
    settings: Settings,
    tags: pd.DataFrame,
    *,
    source: Source = "batch",
    scored_at: datetime | None = None,
    share: float | None = None,
) -> int:
    """Log a tags frame (every row for ``batch``; for ``served`` a ``share`` sample, default
    :attr:`Settings.prediction_log_sample`). Returns the records written."""
    if source == "served":
        tags = sample(tags, settings.prediction_log_sample if share is None else share)
    elif share is not None:
        tags = sample(tags, share)
    if tags.empty:
        return 0
    return append(settings, tag_records(tags, source=source, scored_at=scored_at))


class _SqlLog:
    """The log as a SQL table (production: PostgreSQL); one engine per URL and table per process."""

    _cache: dict[tuple[str, str], _SqlLog] = {}
    _lock = threading.Lock()

    def __init__(self, url: str, table: str, timeout_s: int) -> None:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        self.url = url
        if is_postgres(url):
            ensure_postgres_database(url, timeout_s=timeout_s)
        self.engine = sa.create_engine(with_connect_timeout(url, timeout_s), poolclass=NullPool)
        meta = sa.MetaData()
        self.table = sa.Table(
            table,
            meta,
            sa.Column("customer_id", sa.String, nullable=False),
            sa.Column("model", sa.String, nullable=False),
            sa.Column("model_version", sa.String, nullable=False),
            sa.Column("score", sa.Float(precision=53), nullable=False),
            sa.Column("tier", sa.String),
            sa.Column("features_timestamp", sa.DateTime(timezone=True)),
            sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("source", sa.String, nullable=False),
            sa.Index(f"ix_{table}_model_scored_at", "model", "scored_at"),
        )
        self._guard(lambda: meta.create_all(self.engine, checkfirst=True))

    @classmethod
    def of(cls, settings: Settings) -> _SqlLog:
        key = (settings.postgres_url, settings.prediction_log_table)
        with cls._lock:
            if key not in cls._cache:
                cls._cache[key] = cls(
                    settings.postgres_url, settings.prediction_log_table, settings.postgres_connect_timeout_s
                )
            return cls._cache[key]

    def _guard(self, work: Any) -> Any:
        from sqlalchemy.exc import DBAPIError, OperationalError

        try:
            return work()
        except (OperationalError, DBAPIError) as exc:
            first = str(getattr(exc, "orig", exc)).strip().splitlines()
            raise BackendUnavailable(
                f"prediction log at {redact(self.url)} unavailable: {first[0] if first else exc}"
            ) from exc

    def append(self, records: pd.DataFrame) -> int:
        rows = [
            {
                **row,
                "features_timestamp": None
                if pd.isna(row["features_timestamp"])
                else row["features_timestamp"].to_pydatetime(),
                "scored_at": row["scored_at"].to_pydatetime(),
            }
            for row in records.to_dict("records")
        ]

        def work() -> None:
            with self.engine.begin() as conn:
                for lo in range(0, len(rows), 10_000):
                    conn.execute(self.table.insert(), rows[lo : lo + 10_000])

        self._guard(work)
        return len(rows)

    def read(
        self, model: str | None, start: datetime | None, end: datetime | None, source: str | None
    ) -> pd.DataFrame:
        import sqlalchemy as sa

        t = self.table
        query = sa.select(*(t.c[c] for c in COLUMNS))
        if model is not None:
            query = query.where(t.c.model == model)
        if source is not None:
            query = query.where(t.c.source == source)
        if start is not None:
            query = query.where(t.c.scored_at >= start)
        if end is not None:
            query = query.where(t.c.scored_at < end)

        def work() -> pd.DataFrame:
            with self.engine.connect() as conn:
                return pd.DataFrame(conn.execute(query).all(), columns=list(COLUMNS))

        frame = self._guard(work)
        if frame.empty:
            return ARROW_SCHEMA.empty_table().to_pandas()
        frame["score"] = frame["score"].astype("float64")
        for column in ("features_timestamp", "scored_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame


# ---- the monitoring report -----------------------------------------------------------------------------

Grade = Literal["A", "B", "C", "D", "E"]
Evidence = Literal["realised", "test", "none"]
GRADE_BANDS: dict[str, tuple[float, float, float, float]] = {
    "auc": (0.85, 0.78, 0.70, 0.60),
    "normalized_gini": (0.75, 0.60, 0.45, 0.30),
}
"""Lowest headline value of grades A, B, C and D (below the last: E)."""
CALIBRATION_BAND = (0.8, 1.25)
"""Calibration ratios (predicted / actual level) inside this band keep the grade; outside: one lower."""


class GroupRate(BaseModel):
    """Predicted vs actual in one group of customers (a tier, or a score decile: 1 = highest scores)."""

    group: str
    customers: int
    predicted: float | None
    """Mean score (probability or predicted value); None when not known."""
    actual: float | None
    """Actual rate (classifiers) or mean value (regressors); None when not known."""


class Evaluation(BaseModel):
    """Realised performance of one model version's scores at one snapshot, once its horizon passed."""

    model: str
    version: str
    kind: str
    snapshot: datetime
    """The snapshot the scored features describe (``features_timestamp``): outcomes are counted from it."""
    scoring_date: date
    horizon_days: int
    customers: int
    """Scored customers in the label population (the others have no outcome to compare with)."""
    metrics: dict[str, float]
    test_metrics: dict[str, float] = Field(default_factory=dict)
    """The version's out-of-time test figures (without the ``test_`` prefix), for comparison."""
    tiers: list[GroupRate] = Field(default_factory=list)
    deciles: list[GroupRate] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    evaluated_at: datetime
    run_id: str | None = None


class Pending(BaseModel):
    """Logged scores whose outcome window has not passed yet (relative to the end of validated data)."""

    model: str
    version: str
    scoring_date: date
    customers: int
    due: date


class FeatureDrift(BaseModel):
    """Evidently's verdict on one column (a feature, or the model's score)."""

    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


class DriftSummary(BaseModel):
    """Drift between a champion's reference (its test frame) and the latest feature snapshot."""

    model: str
    version: str
    reference_snapshot: date | None
    current_snapshot: date
    reference_rows: int
    current_rows: int
    n_features: int
    drifted_features: int
    drift_share: float
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    checked_at: datetime
    run_id: str | None = None


class Card(BaseModel):
    """A model's quality card (see the module docstring for the grade)."""

    model: str
    version: str | None
    grade: Grade | None
    evidence: Evidence
    evidence_date: date | None
    """Scoring date of the realised figures, or the test snapshot of the champion's run."""
    headline_metric: str
    headline: float | None
    test_headline: float | None = None
    calibration_ratio: float | None = None
    customers: int | None = None
    tiers: list[GroupRate] = Field(default_factory=list)
    note: str = ""


class MonitorReport(BaseModel):
    """``data/reports/monitor.json``: what `portrait monitor` found (and what serving can return)."""

    generated_at: datetime
    data_end: datetime | None = None
    evaluations: list[Evaluation] = Field(default_factory=list)
    pending: list[Pending] = Field(default_factory=list)
    drift: dict[str, DriftSummary] = Field(default_factory=dict)
    cards: dict[str, Card] = Field(default_factory=dict)

    def latest(self, model: str, version: str | None = None) -> Evaluation | None:
        """The evaluation of ``model`` (of ``version`` when given) at the latest snapshot."""
        found = [
            e for e in self.evaluations if e.model == model and (version is None or e.version == version)
        ]
        return max(found, key=lambda e: (e.snapshot, e.evaluated_at)) if found else None


def report_path(settings: Settings) -> Path:
    return settings.reports_dir / "monitor.json"


def read_report(settings: Settings) -> MonitorReport:
    """The saved report; an empty one when none was written yet or it cannot be read (it is derived
    data: the next `portrait monitor` writes it again)."""
    path = report_path(settings)
    if path.exists():
        try:
            return MonitorReport.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            logger.warning("ignoring unreadable %s: %s", path, str(exc).splitlines()[0])
    return MonitorReport(generated_at=datetime.now(UTC))


def write_report(settings: Settings, report: MonitorReport) -> Path:
    return write_text_atomic(report_path(settings), report.model_dump_json(indent=2))


# ---- quality cards -------------------------------------------------------------------------------------


def grade(
    metric: str,
    value: float | None,
    calibration_ratio: float | None = None,
    calibration_z: float | None = None,
) -> Grade | None:
    """The letter for a headline value (see the module docstring); None when it cannot be graded.

    A calibration ratio outside :data:`CALIBRATION_BAND` costs a letter unless ``calibration_z`` (the
    gap in standard deviations, realised figures only) says it is within noise (below 3).
    """
    bands = GRADE_BANDS.get(metric)
    if bands is None or value is None or not np.isfinite(value):
        return None
    letters: tuple[Grade, ...] = ("A", "B", "C", "D", "E")
    index = next((i for i, low in enumerate(bands) if value >= low), len(bands))
    low, high = CALIBRATION_BAND
    noise = calibration_z is not None and abs(calibration_z) < 3.0
    if calibration_ratio is not None and not (low <= calibration_ratio <= high) and not noise:
        index = min(index + 1, len(letters) - 1)
    return letters[index]


def card_from_evaluation(entry: catalogue.ModelEntry, evaluation: Evaluation) -> Card:
    metric = entry.headline_metric
    value = evaluation.metrics.get(metric)
    ratio = evaluation.metrics.get("calibration_ratio")
    return Card(
        model=entry.name,
        version=evaluation.version,
        grade=grade(metric, value, ratio, evaluation.metrics.get("calibration_z")),
        evidence="realised",
        evidence_date=evaluation.scoring_date,
        headline_metric=metric,
        headline=value,
        test_headline=evaluation.test_metrics.get(metric),
        calibration_ratio=ratio,
        customers=evaluation.customers,
        tiers=evaluation.tiers,
        note=f"realised over {evaluation.horizon_days} days after {evaluation.scoring_date}",
    )


def card_from_test(
    entry: catalogue.ModelEntry,
    version: str,
    metrics: dict[str, float],
    params: dict[str, str],
    tiers: list[GroupRate],
) -> Card:
    """The card of a champion before any horizon has passed: its training run's test figures."""
    metric = entry.headline_metric
    value = metrics.get(f"test_{metric}")
    if entry.kind == "regressor":
        ratio = metrics.get("test_total_ratio")
    else:
        rate, mean = metrics.get("test_positive_rate"), metrics.get("test_mean_prediction")
        ratio = mean / rate if rate and mean is not None else None
    test_day = params.get("test_snapshot")
    return Card(
        model=entry.name,
        version=version,
        grade=grade(metric, value, ratio),
        evidence="test",
        evidence_date=date.fromisoformat(test_day) if test_day else None,
        headline_metric=metric,
        headline=value,
        test_headline=value,
        calibration_ratio=ratio,
        customers=int(metrics["test_n"]) if "test_n" in metrics else None,
        tiers=tiers,
        note="out-of-time test split of the training run; no realised outcomes yet",
    )


def _test_tiers(client: Any, run_id: str, entry: catalogue.ModelEntry, metrics: dict[str, float]) -> list:
    """Tier rates of the test split: ``reference/tiers.json`` when logged, else the regressors' metrics."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, "reference/tiers.json", tmp)
            return [GroupRate.model_validate(t) for t in json.loads(Path(path).read_text())]
    except Exception:  # noqa: BLE001 - no reference logged for this run (older runs)
        pass
    prefix, suffix = "test_tier_", "_actual_mean"
    return [
        GroupRate(group=k[len(prefix) : -len(suffix)], customers=0, predicted=None, actual=v)
        for k, v in metrics.items()
        if k.startswith(prefix) and k.endswith(suffix)
    ]


def quality_cards(
    settings: Settings, client: Any = None, report: MonitorReport | None = None
) -> dict[str, Card]:
    """Model name -> the quality card of its champion, for every tag model of the catalogue.

    ``client`` is an ``MlflowClient`` (default: :func:`portrait.registry.connect`, which raises
    ``TrackingUnavailable`` when the tracking store does not answer); ``report`` defaults to the saved
    monitoring report.
    """
    from mlflow.exceptions import MlflowException

    from portrait.registry import CHAMPION, connect

    client = client or connect(settings)
    report = report if report is not None else read_report(settings)
    cards: dict[str, Card] = {}
    for entry in catalogue.tag_models():
        try:
            champion = client.get_model_version_by_alias(entry.name, CHAMPION)
        except MlflowException:
            cards[entry.name] = Card(
                model=entry.name,
                version=None,
                grade=None,
                evidence="none",
                evidence_date=None,
                headline_metric=entry.headline_metric,
                headline=None,
                note="no champion: run `portrait train`",
            )
            continue
        version = str(champion.version)
        realised = report.latest(entry.name, version)
        if realised is not None and entry.headline_metric in realised.metrics:
            cards[entry.name] = card_from_evaluation(entry, realised)
            continue
        run = client.get_run(champion.run_id)
        metrics = dict(run.data.metrics)
        tiers = _test_tiers(client, champion.run_id, entry, metrics)
        cards[entry.name] = card_from_test(entry, version, metrics, dict(run.data.params), tiers)
    return cards


def summarize(cards: Iterable[Card]) -> list[str]:
    """One line per card, e.g. ``churn v3: B (realised 2024-10-01, auc 0.791)``."""
    lines = []
    for card in cards:
        if card.evidence == "none":
            lines.append(f"{card.model}: no grade ({card.note})")
            continue
        value = f"{card.headline_metric} {card.headline:.3f}" if card.headline is not None else "no headline"
        when = card.evidence_date.isoformat() if card.evidence_date else "?"
        lines.append(f"{card.model} v{card.version}: {card.grade or '-'} ({card.evidence} {when}, {value})")
    return lines


__all__ = [
    "ARROW_SCHEMA",
    "COLUMNS",
    "GRADE_BANDS",
    "SOURCES",
    "Card",
    "DriftSummary",
    "Evaluation",
    "FeatureDrift",
    "GroupRate",
    "MonitorReport",
    "Pending",
    "PredictionRecord",
    "append",
    "grade",
    "location",
    "log_tags",
    "normalize",
    "predictions_dir",
    "quality_cards",
    "read",
    "read_report",
    "report_path",
    "sample",
    "summarize",
    "tag_records",
    "write_report",
]

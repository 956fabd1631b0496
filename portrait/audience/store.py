"""Stored audiences: ``<workspace>/data/audiences/<id>/`` with ``definition.json`` and ``members.parquet``.

An audience folder is built beside its final place and renamed into it in one step, so a reader sees a whole
audience or none. ``definition.json`` is the :class:`AudienceRecord` (id, name, how it was defined, creator,
created time, model versions, snapshot, size and tier split, holdout and outcomes); ``members.parquet`` holds
``customer_id`` (and ``score`` for lookalikes); ``holdout.parquet`` (``customer_id``, ``stratum``, ``group``) once a
holdout was made; ``outcomes.parquet`` (``customer_id``) once outcomes were recorded. Later changes replace files
atomically (``portrait.files``).

Every create, export, delete (and holdout, addition, outcome) is one record of the workspace's audit trail
(:mod:`portrait.audit`, ``data/audit/audit.jsonl``): time, caller (a keyed API-key fingerprint), client
address, request id and action (over HTTP), outcome, ``operation``, audience id and details. A record that
cannot be written raises :class:`portrait.audit.AuditUnavailable`.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from portrait import audit
from portrait.audience.holdout import LiftReport
from portrait.files import atomic_path, temp_beside, write_text_atomic
from portrait.settings import Settings

logger = logging.getLogger(__name__)

ID = "customer_id"
ID_PATTERN = re.compile(r"^aud_[0-9a-f]{16}$")
DEFINITION, MEMBERS, HOLDOUT, OUTCOMES = (
    "definition.json",
    "members.parquet",
    "holdout.parquet",
    "outcomes.parquet",
)
Kind = Literal["filter", "ids", "lookalike"]
ExportFormat = Literal["csv", "parquet"]


class AudienceNotFound(LookupError):
    """No audience of that id (or not a valid id at all)."""

    def __init__(self, audience_id: str) -> None:
        super().__init__(f"unknown audience {audience_id!r}")
        self.audience_id = audience_id


class HoldoutInfo(BaseModel):
    """How an audience is split into treatment and control."""

    control_share: float = Field(description="Target share of control in every stratum.")
    stratify_by: str = Field(description="The column whose values are the strata (a tier).")
    created_at: datetime
    treatment: int
    control: int
    by_stratum: dict[str, dict[str, int]] = Field(description="Stratum -> {treatment, control}.")


class AudienceRecord(BaseModel):
    """A stored audience: what it is, who made it, from which models and snapshot, how large."""

    id: str
    name: str
    kind: Kind
    definition: dict[str, Any] = Field(
        description="The filter, the id list's summary or the lookalike request."
    )
    creator: str = Field(description="Fingerprint of the API key that created it.")
    created_at: datetime
    model_versions: dict[str, str]
    snapshot: str = Field(description="Feature snapshot of the population it was selected from.")
    population_key: str
    size: int
    by_tier: dict[str, dict[str, int]] = Field(description="Tier column -> tier -> members.")
    holdout: HoldoutInfo | None = None
    outcomes: LiftReport | None = None
    additions: list[dict[str, Any]] = Field(default_factory=list, description="Members added after creation.")
    warnings: list[str] = Field(default_factory=list)


def new_id() -> str:
    return f"aud_{uuid.uuid4().hex[:16]}"


class AudienceStore:
    """The audiences of one workspace."""

    def __init__(self, root: Path, audit_log: Path) -> None:
        self.root = Path(root)
        self.audit_log = Path(audit_log)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def of(cls, settings: Settings) -> AudienceStore:
        return cls(settings.data_root / "audiences", settings.audit_log)

    # -- paths and locks ----------------------------------------------------------------------------------
    def folder(self, audience_id: str) -> Path:
        if not ID_PATTERN.match(audience_id or ""):
            raise AudienceNotFound(audience_id)
        return self.root / audience_id

    def lock(self, audience_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(audience_id, threading.Lock())

    def exists(self, audience_id: str) -> bool:
        try:
            return (self.folder(audience_id) / DEFINITION).exists()
        except AudienceNotFound:
            return False

    # -- create, read, delete -----------------------------------------------------------------------------
    def create(self, record: AudienceRecord, members: pd.DataFrame) -> AudienceRecord:
        """Write a new audience folder in one step (built aside, then renamed into place)."""
        final = self.folder(record.id)
        if final.exists():
            raise FileExistsError(f"audience {record.id} exists")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = temp_beside(final, directory=True)
        try:
            pq.write_table(
                pa.Table.from_pandas(members.reset_index(drop=True), preserve_index=False), staging / MEMBERS
            )
            (staging / DEFINITION).write_text(record.model_dump_json(indent=2), encoding="utf-8")
            os.replace(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return record

    def get(self, audience_id: str) -> AudienceRecord:
        path = self.folder(audience_id) / DEFINITION
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AudienceNotFound(audience_id) from None
        return AudienceRecord.model_validate_json(text)

    def save(self, record: AudienceRecord) -> None:
        """Replace an audience's definition (atomically)."""
        write_text_atomic(self.folder(record.id) / DEFINITION, record.model_dump_json(indent=2))

    def list(self) -> list[AudienceRecord]:
        """Every audience, newest first (unreadable folders are logged and skipped)."""
        out = []
        if not self.root.exists():
            return out
        for path in self.root.glob("aud_*/" + DEFINITION):
            try:
                out.append(AudienceRecord.model_validate_json(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                logger.warning("skipping unreadable audience %s: %s", path.parent.name, exc)
        return sorted(out, key=lambda r: (r.created_at, r.id), reverse=True)

    def delete(self, audience_id: str) -> AudienceRecord:
        """Remove an audience (renamed away first, so it disappears in one step)."""
        record = self.get(audience_id)
        folder = self.folder(audience_id)
        trash = temp_beside(folder, directory=True)
        os.replace(folder, trash)  # onto the new, empty folder
        shutil.rmtree(trash, ignore_errors=True)
        return record

    # -- members ------------------------------------------------------------------------------------------
    def members_path(self, audience_id: str) -> Path:
        return self.folder(audience_id) / MEMBERS

    def members(self, audience_id: str) -> pd.DataFrame:
        self.get(audience_id)
        return pq.read_table(self.members_path(audience_id)).to_pandas()

    def write_members(self, audience_id: str, members: pd.DataFrame) -> None:
        with atomic_path(self.members_path(audience_id)) as tmp:
            pq.write_table(pa.Table.from_pandas(members.reset_index(drop=True), preserve_index=False), tmp)

    def holdout(self, audience_id: str) -> pd.DataFrame | None:
        path = self.folder(audience_id) / HOLDOUT
        return pq.read_table(path).to_pandas() if path.exists() else None

    def write_holdout(self, audience_id: str, groups: pd.DataFrame) -> None:
        with atomic_path(self.folder(audience_id) / HOLDOUT) as tmp:
            pq.write_table(pa.Table.from_pandas(groups.reset_index(drop=True), preserve_index=False), tmp)

    def write_outcomes(self, audience_id: str, converted: list[str]) -> None:
        with atomic_path(self.folder(audience_id) / OUTCOMES) as tmp:
            pq.write_table(pa.table({ID: pa.array(sorted(set(converted)), pa.string())}), tmp)

    def export(
        self, audience_id: str, fmt: ExportFormat = "csv", group: str | None = None
    ) -> tuple[bytes, int]:
        """The members as CSV or Parquet bytes (with ``group`` when a holdout exists; only that group when
        ``group`` is given) and the number of rows."""
        members = self.members(audience_id)
        groups = self.holdout(audience_id)
        if groups is not None:
            members = members.merge(groups[[ID, "group"]], on=ID, how="left")
        if group is not None:
            if groups is None:
                raise ValueError(f"audience {audience_id} has no holdout: export it without a group")
            members = members[members["group"] == group]
        table = pa.Table.from_pandas(members.reset_index(drop=True), preserve_index=False)
        buffer = io.BytesIO()
        if fmt == "parquet":
            pq.write_table(table, buffer)
        else:
            pacsv.write_csv(table, buffer)
        return buffer.getvalue(), table.num_rows

    # -- audit --------------------------------------------------------------------------------------------
    def audit(self, operation: str, audience_id: str, caller: str, **details: Any) -> None:
        """Record ``operation`` of ``audience_id`` in the audit trail (durably; raises
        :class:`~portrait.audit.AuditUnavailable` when it cannot). Over HTTP the request's action, client and
        request id come with it; elsewhere the action is ``audience <operation>``."""
        entry: dict[str, Any] = {} if audit.CURRENT.get() else {"action": f"audience {operation}"}
        entry |= {"caller": caller, "operation": operation, "audience_id": audience_id, **details}
        audit.record(self.audit_log, entry)

    def audit_trail(self, audience_id: str | None = None) -> list[dict[str, Any]]:
        """The audit records of audience operations (of one audience, when given), oldest first."""
        return [
            x
            for x in audit.read(self.audit_log)
            if "audience_id" in x and (audience_id is None or x["audience_id"] == audience_id)
        ]


__all__ = [
    "ID_PATTERN",
    "AudienceNotFound",
    "AudienceRecord",
    "AudienceStore",
    "ExportFormat",
    "HoldoutInfo",
    "new_id",
]

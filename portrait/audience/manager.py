"""Audience operations over one population and one store: what the HTTP routes and the CLI both call.

:class:`AudienceBook` creates audiences (from a filter, an id list or ranked members such as a lookalike),
sizes a filter without storing anything (dry run), computes insight, splits holdouts, adds members, records
outcomes, exports and deletes, auditing every change and export. The population comes from a callable, so
whoever can score customers (the service, the CLI) builds it once and this module stays in the core.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from portrait.audience import holdout as holdouts
from portrait.audience.filters import FilterError, compile_filter
from portrait.audience.insight import Insight, aggregate, insight
from portrait.audience.population import ID, Population
from portrait.audience.store import AudienceRecord, AudienceStore, ExportFormat, HoldoutInfo, Kind, new_id

logger = logging.getLogger(__name__)

DEFAULT_STRATUM = "conversion_tier"


class AudienceError(ValueError):
    """A request about audiences that cannot be served; ``code`` names the problem (HTTP 4xx)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class AudienceBook:
    """Audiences of one workspace over its current population."""

    def __init__(self, store: AudienceStore, population: Callable[[], Population]) -> None:
        self.store = store
        self._population = population

    @property
    def population(self) -> Population:
        return self._population()

    # -- create ---------------------------------------------------------------------------------------
    def dry_run(self, filter_: Any) -> tuple[int, dict[str, dict[str, int]]]:
        """Size of a filter's audience and its split by tier; nothing is stored."""
        try:
            return self.population.breakdown(filter_)
        except FilterError as exc:
            raise AudienceError("bad_filter", str(exc), 422) from None

    def create_filter(self, filter_: Any, *, name: str, creator: str, control_share: float | None = None,
                      stratify_by: str | None = None) -> AudienceRecord:  # fmt: skip
        """Store the audience of a filter (its JSON is the definition)."""
        pop = self.population
        try:
            compile_filter(filter_, pop.columns)
            members = pop.select(filter_)
        except FilterError as exc:
            raise AudienceError("bad_filter", str(exc), 422) from None
        definition = {"filter": _as_json(filter_)}
        return self._create("filter", members, definition, name=name, creator=creator, control_share=control_share,
                            stratify_by=stratify_by)  # fmt: skip

    def create_ids(self, customer_ids: Sequence[str], *, name: str, creator: str, control_share: float | None = None,
                   stratify_by: str | None = None) -> AudienceRecord:  # fmt: skip
        """Store an audience of given customer ids; ids not in the population are reported and left out."""
        known, unknown = self.population.known(customer_ids)
        if not known:
            raise AudienceError(
                "unknown_ids", f"none of the {len(unknown):,} customer ids is in the population", 422
            )
        warnings = []
        if unknown:
            sample = ", ".join(unknown[:5])
            warnings.append(
                f"{len(unknown):,} ids are not in the population and were left out (e.g. {sample})"
            )
        members = pd.DataFrame({ID: sorted(known)})
        definition = {"customer_ids": len(known) + len(unknown), "known": len(known), "unknown": len(unknown)}
        return self._create("ids", members, definition, name=name, creator=creator, control_share=control_share,
                            stratify_by=stratify_by, warnings=warnings)  # fmt: skip

    def create_ranked(self, members: pd.DataFrame, definition: dict[str, Any], *, kind: Kind, name: str,
                      creator: str, control_share: float | None = None, stratify_by: str | None = None,
                      warnings: Sequence[str] = ()) -> AudienceRecord:  # fmt: skip
        """Store ranked members (``customer_id``, ``score``), e.g. a lookalike expansion."""
        return self._create(kind, members, definition, name=name, creator=creator, control_share=control_share,
                            stratify_by=stratify_by, warnings=list(warnings))  # fmt: skip

    def _create(self, kind: Kind, members: pd.DataFrame, definition: dict[str, Any], *, name: str, creator: str,
                control_share: float | None, stratify_by: str | None,
                warnings: list[str] | None = None) -> AudienceRecord:  # fmt: skip
        pop = self.population
        if members.empty:
            raise AudienceError("empty_audience", "the audience would be empty: nothing to store", 422)
        if control_share is not None:
            self._stratum(pop, stratify_by)  # a bad stratum column fails before anything is written
        size, by_tier = pop.members_breakdown(members)
        record = AudienceRecord(
            id=new_id(),
            name=name or f"{kind} audience",
            kind=kind,
            definition=definition,
            creator=creator,
            created_at=datetime.now(UTC),
            model_versions=dict(pop.versions),
            snapshot=pop.snapshot,
            population_key=pop.key,
            size=int(len(members)),
            by_tier=by_tier,
            warnings=list(warnings or []),
        )
        if size != len(members):
            record.warnings.append(f"{len(members) - size:,} members are not in the current population")
        self.store.create(record, members)
        self.store.audit("create", record.id, creator, kind=kind, size=record.size, name=record.name,
                         model_versions=record.model_versions, snapshot=record.snapshot)  # fmt: skip
        if control_share is not None:
            record = self.make_holdout(record.id, control_share, stratify_by, creator)
        logger.info("audience %s (%s, %d members) created by %s", record.id, kind, record.size, creator)
        return record

    # -- read -----------------------------------------------------------------------------------------
    def get(self, audience_id: str) -> AudienceRecord:
        return self.store.get(audience_id)

    def list(self) -> list[AudienceRecord]:
        return self.store.list()

    def insight(self, audience_id: str) -> Insight:
        """How the audience differs from the population (members no longer in it are left out)."""
        self.store.get(audience_id)
        return self.insight_of(self.store.members_path(audience_id))

    def insight_of(self, members: Any) -> Insight:
        """Insight of a member list (a Parquet path or a frame with ``customer_id``)."""
        started = time.perf_counter()
        pop = self.population
        reference = pop.stats()
        con = pop.connect()
        try:
            if isinstance(members, pd.DataFrame):
                con.register("members", pa.Table.from_pandas(members[[ID]], preserve_index=False))
            else:
                con.execute(
                    f"CREATE VIEW members AS SELECT {ID} FROM read_parquet('{str(members).replace(chr(39), chr(39) * 2)}')"
                )
            con.execute(
                f"CREATE TEMP TABLE audience AS SELECT * FROM population SEMI JOIN members USING ({ID})"
            )
            agg = aggregate(con, "audience", list(reference.numeric), list(reference.categorical))
        finally:
            con.close()
        if agg.n == 0:
            raise AudienceError(
                "empty_audience", "no member of the audience is in the current population", 422
            )
        out = insight(agg, reference)
        logger.info(
            "insight of %d of %d customers in %.0f ms",
            agg.n,
            reference.n,
            1000 * (time.perf_counter() - started),
        )
        return out

    # -- holdout, additions, outcomes -------------------------------------------------------------------
    def _stratum(self, pop: Population, stratify_by: str | None) -> str | None:
        if stratify_by is None:
            if DEFAULT_STRATUM in pop.columns:
                return DEFAULT_STRATUM
            return pop.tiers[0] if pop.tiers else None
        if stratify_by not in pop.attributes:
            raise AudienceError(
                "bad_stratum",
                f"cannot stratify by {stratify_by!r}: choose a categorical column "
                f"({', '.join(pop.tiers) or 'none'} are the tiers)",
                422,
            )
        return stratify_by

    def _strata(self, pop: Population, members: pd.DataFrame, column: str | None) -> pd.DataFrame:
        if column is None:
            return pd.DataFrame({ID: members[ID].astype(str), "stratum": holdouts.NO_STRATUM})
        values = pop.column_values([column], members[[ID]].astype({ID: str}))
        return values.rename(columns={column: "stratum"})[[ID, "stratum"]]

    def make_holdout(
        self, audience_id: str, control_share: float, stratify_by: str | None, caller: str
    ) -> AudienceRecord:
        """Split the audience into treatment and control (replaces an earlier split of another share)."""
        if not 0.0 < control_share < 1.0:
            raise AudienceError(
                "bad_control_share", f"control_share must be in (0, 1), not {control_share}", 422
            )
        with self.store.lock(audience_id):
            record = self.store.get(audience_id)
            pop = self.population
            column = self._stratum(pop, stratify_by)
            members = self.store.members(audience_id)
            previous = None
            current = record.holdout
            if current and current.control_share == control_share and current.stratify_by == (column or ""):
                previous = self.store.holdout(audience_id)
            groups = holdouts.assign(audience_id, self._strata(pop, members, column), control_share, previous)
            self.store.write_holdout(audience_id, groups)
            record.holdout = _holdout_info(groups, control_share, column or "")
            record.outcomes = None
            self.store.save(record)
        self.store.audit("holdout", audience_id, caller, control_share=control_share, stratify_by=column,
                         treatment=record.holdout.treatment, control=record.holdout.control)  # fmt: skip
        return record

    def add_members(self, audience_id: str, customer_ids: Sequence[str], caller: str) -> AudienceRecord:
        """Add customers (known to the population) to an audience; a holdout assigns them too, and members
        already assigned keep their group."""
        with self.store.lock(audience_id):
            record = self.store.get(audience_id)
            pop = self.population
            known, unknown = pop.known(customer_ids)
            members = self.store.members(audience_id)
            new = [c for c in known if c not in set(members[ID].astype(str))]
            if new:
                extra = pd.DataFrame({ID: new})
                for column in members.columns:
                    if column != ID:
                        extra[column] = pd.Series([None] * len(new), dtype=members[column].dtype)
                members = pd.concat([members, extra], ignore_index=True)
                self.store.write_members(audience_id, members)
                if record.holdout is not None:
                    column = record.holdout.stratify_by or None
                    previous = self.store.holdout(audience_id)
                    groups = holdouts.assign(audience_id, self._strata(pop, members, column),
                                             record.holdout.control_share, previous)  # fmt: skip
                    self.store.write_holdout(audience_id, groups)
                    record.holdout = _holdout_info(groups, record.holdout.control_share, record.holdout.stratify_by,
                                                   record.holdout.created_at)  # fmt: skip
            record.size = int(len(members))
            record.by_tier = pop.members_breakdown(members)[1]
            record.additions.append({"at": datetime.now(UTC).isoformat(), "by": caller, "added": len(new),
                                     "already_members": len(known) - len(new), "unknown": len(unknown)})  # fmt: skip
            self.store.save(record)
        self.store.audit(
            "add_members", audience_id, caller, added=len(new), unknown=len(unknown), size=record.size
        )
        return record

    def record_outcomes(self, audience_id: str, converted: Sequence[str], caller: str,
                        confidence: float = 0.95) -> holdouts.LiftReport:  # fmt: skip
        """Who converted: the audience's incremental lift (treatment against control) with its interval."""
        with self.store.lock(audience_id):
            record = self.store.get(audience_id)
            groups = self.store.holdout(audience_id)
            if groups is None or record.holdout is None:
                raise AudienceError(
                    "no_holdout",
                    f"audience {audience_id} has no holdout: split it first (control_share)",
                    409,
                )
            try:
                report = holdouts.lift(groups, converted, confidence=confidence)
            except ValueError as exc:
                raise AudienceError("bad_confidence", str(exc), 422) from None
            self.store.write_outcomes(audience_id, [str(c) for c in converted])
            record.outcomes = report
            self.store.save(record)
        self.store.audit("outcomes", audience_id, caller, converted=len(set(converted)), lift=report.lift,
                         lift_ci=report.lift_ci)  # fmt: skip
        return report

    # -- export, delete -----------------------------------------------------------------------------------
    def export(self, audience_id: str, fmt: ExportFormat, caller: str, group: str | None = None) -> bytes:
        if group is not None and group not in holdouts.GROUPS:
            raise AudienceError("bad_group", f"group must be treatment or control, not {group!r}", 422)
        try:
            data, rows = self.store.export(audience_id, fmt, group)
        except ValueError as exc:
            raise AudienceError("no_holdout", str(exc), 409) from None
        self.store.audit("export", audience_id, caller, format=fmt, rows=rows, group=group)
        return data

    def delete(self, audience_id: str, caller: str) -> AudienceRecord:
        with self.store.lock(audience_id):
            record = self.store.delete(audience_id)
        self.store.audit("delete", audience_id, caller, size=record.size, name=record.name)
        return record


def _holdout_info(
    groups: pd.DataFrame, share: float, column: str, created: datetime | None = None
) -> HoldoutInfo:
    by = groups.groupby(["stratum", "group"]).size().unstack(fill_value=0)
    by_stratum = {str(s): {g: int(row.get(g, 0)) for g in holdouts.GROUPS} for s, row in by.iterrows()}
    return HoldoutInfo(
        control_share=share,
        stratify_by=column,
        created_at=created or datetime.now(UTC),
        treatment=int((groups.group == holdouts.TREATMENT).sum()),
        control=int((groups.group == holdouts.CONTROL).sum()),
        by_stratum=by_stratum,
    )


def _as_json(filter_: Any) -> Any:
    dump = getattr(filter_, "model_dump", None)
    return dump(by_alias=True, exclude_none=True) if dump else filter_


__all__ = ["DEFAULT_STRATUM", "AudienceBook", "AudienceError"]

"""OneID: one customer from many identifiers, before any feature is computed.

The step sits between validation and the feature pipeline::

    data/raw/identities.parquet ──validate──► data/clean/identities.parquet (normalised, maybe hashed)
                                                     │            + data/quarantine/identities.parquet
    data/clean/{customers,transactions,events}       ▼
    (customer_id = record id) ────────────────► stitch (strong links, guards, Splink) ──► data/identity/
                                                     │   oneid_map, merges, identifiers, lookup, model
                                                     ▼
                              data/clean/{customers,transactions,events} keyed by OneID ──► features

How the inputs refer to people: ``customer_id`` in customers, transactions and events is the
``record_id`` of an identity record (each source system's own customer id, e.g. ``web-00012``). A
customer id without an identity record is a record without identifiers (a person of its own, unless a
later identity record with that id links it). Stitching gives every record a **OneID**
(``OID0000000042``), stable across runs; :func:`stitch_workspace` then rewrites the three tables with the
OneID as ``customer_id`` (:mod:`features.identity.apply`).

Stitching (:mod:`features.identity.stitch`): records sharing a **strong** identifier value are one person,
except that a value seen on more than ``identity_max_people_per_value`` people never links (a shop
tablet, a placeholder phone), and a strong value whose records carry clearly different birth dates (a
recycled phone number, a family e-mail) is only evidence (the conflict guard). Strong components are
then joined by a **Splink** model (names, birth date, postcode, every identifier as evidence) when the
match probability reaches ``identity_match_probability``, unless the person would exceed
``identity_max_cluster_records`` records: such a cluster is reported and kept split by its strong links.

Serving resolves identifiers with :class:`features.identity.lookup.IdentityIndex` (or
:func:`resolve_identifier` one-off) and follows merged ids with ``follow``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from features.identity.apply import apply_oneids, source_tables, stitched_run
from features.identity.config import IdentityConfig, IdentityConfigError, identity_dir
from features.identity.lookup import IdentityIndex, UnknownKind, follow, resolve_identifier
from features.identity.metrics import PairwiseScores, pairwise_scores
from features.identity.normalise import (
    CLEARED_REASONS,
    REASONS,
    IdentityRow,
    IdentityValidation,
    normalise_value,
    raw_identities_path,
    validate_identities,
)
from features.identity.stitch import StitchError, StitchInputs, StitchReport, oneid_number, oneid_text, stitch

if TYPE_CHECKING:
    from portrait.settings import Settings

logger = logging.getLogger(__name__)


def stitch_workspace(
    settings: Settings,
    *,
    full: bool = False,
    retrain: bool = False,
    now: datetime | None = None,
) -> StitchReport:
    """Validate ``data/raw/identities``, stitch, and key ``data/clean`` by OneID (see the module doc).

    Incremental unless ``full`` (or the records changed); ``retrain`` trains the Splink model again.
    Validation normalises only the raw rows that changed since the previous run (see
    :func:`validate_identities`); ``full`` or ``retrain`` normalise every row again.
    Raises :class:`StitchError`, :class:`IdentityConfigError` or ``features.validate.ContractError``
    (one sentence each) for inputs or settings that cannot be used.
    """
    config = IdentityConfig.from_settings(settings)
    sources = source_tables(settings)
    raw = raw_identities_path(settings)
    clean = settings.clean_dir / "identities.parquet"
    validation = None
    if raw is not None:
        validation = validate_identities(
            raw,
            config,
            clean_path=clean,
            quarantine_path=settings.quarantine_dir / "identities.parquet",
            now=now,
            reuse=not (full or retrain),
        )
        from portrait.files import write_text_atomic

        write_text_atomic(
            settings.reports_dir / "identity_validation.json", validation.model_dump_json(indent=2)
        )
    else:
        logger.warning(
            "no identities input in %s: every customer id is a person of its own", settings.raw_dir
        )
    inputs = StitchInputs(
        clean_identities=clean if raw is not None else None,
        customers=sources["customers"],
        identity_dir=identity_dir(settings),
        report_path=None,
    )
    report = stitch(inputs, config, full=full, retrain=retrain, now=now, validation=validation)
    report.rewritten = apply_oneids(settings, sources, report.run_id)
    from portrait.files import write_text_atomic

    write_text_atomic(settings.reports_dir / "identity.json", report.model_dump_json(indent=2))
    return report


__all__ = [
    "CLEARED_REASONS",
    "REASONS",
    "IdentityConfig",
    "IdentityConfigError",
    "IdentityIndex",
    "IdentityRow",
    "IdentityValidation",
    "PairwiseScores",
    "StitchError",
    "StitchInputs",
    "StitchReport",
    "UnknownKind",
    "apply_oneids",
    "follow",
    "identity_dir",
    "normalise_value",
    "oneid_number",
    "oneid_text",
    "pairwise_scores",
    "raw_identities_path",
    "resolve_identifier",
    "source_tables",
    "stitch",
    "stitch_workspace",
    "stitched_run",
    "validate_identities",
]

"""The probabilistic part of stitching: a Splink model on DuckDB.

The model compares two records that no strong identifier joined (they sit in different strong
components, ``sc``): first and last name (exact, Jaro-Winkler >= 0.92, >= 0.80), birth date (exact, one
typo or day/month swapped), postcode (exact, same first two characters) and every identifier kind
(exact match; for a strong kind that is only possible when the conflict guard kept the value from
linking). Blocked (shared) identifier values are cleared before the model sees them.

Candidate pairs come from blocking rules that all require ``l.sc <> r.sc``: last name + birth date,
first name + birth date, birth date + postcode, first + last name + postcode, last name + postcode, and
each identifier kind. Training (first full run, or ``--retrain``): ``u`` by random sampling, then EM
sessions blocked on birth date and on full name (or, with ``identity_model = "priors"``, the built-in
``m`` values of :data:`PRIORS` and the match rate from exact full name + birth date at an assumed
recall of 0.5). The trained model is saved as JSON in the workspace and reused by later runs.
"""

from __future__ import annotations

import logging
from typing import Any

import duckdb

from features.identity.config import IdentityConfig
from features.identity.normalise import run

logger = logging.getLogger(__name__)

SPLINK_LOG_LEVEL = logging.ERROR
PRIORS: dict[str, list[float]] = {
    # m probabilities of the non-null levels, in order (the last is "else")
    "first_name": [0.86, 0.06, 0.04, 0.04],
    "last_name": [0.86, 0.06, 0.04, 0.04],
    "birth_date": [0.95, 0.03, 0.02],
    "postcode": [0.80, 0.08, 0.12],
    "strong": [0.05, 0.95],
    "weak": [0.45, 0.55],
}
M_FLOOR = 0.01
"""Smallest ``m`` of a comparison level (see :func:`regularise`)."""
TRAINING_SAMPLE_RECORDS = 400_000
"""At most this many records (a seeded random sample) train the model."""


def _comparisons(config: IdentityConfig, *, priors: bool) -> list[Any]:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    def name(column: str) -> Any:
        return cl.CustomComparison(
            output_column_name=column,
            comparison_levels=[
                cll.NullLevel(column),
                cll.ExactMatchLevel(column).configure(tf_adjustment_column=column),
                cll.JaroWinklerLevel(column, 0.92),
                cll.JaroWinklerLevel(column, 0.80),
                cll.ElseLevel(),
            ],
        )

    birth = cl.CustomComparison(
        output_column_name="birth_date",
        comparison_levels=[
            cll.NullLevel("birth_date"),
            cll.ExactMatchLevel("birth_date"),
            cll.CustomLevel(
                "levenshtein(strftime(birth_date_l, '%Y-%m-%d'), strftime(birth_date_r, '%Y-%m-%d')) <= 1 "
                "OR (day(birth_date_l) = month(birth_date_r) AND month(birth_date_l) = day(birth_date_r) "
                "AND year(birth_date_l) = year(birth_date_r))",
                label_for_charts="one typo or day/month swapped",
            ),
            cll.ElseLevel(),
        ],
    )
    postcode = cl.CustomComparison(
        output_column_name="postcode",
        comparison_levels=[
            cll.NullLevel("postcode"),
            cll.ExactMatchLevel("postcode"),
            cll.CustomLevel("left(postcode_l, 2) = left(postcode_r, 2)", label_for_charts="same area"),
            cll.ElseLevel(),
        ],
    )

    comparisons = [name("first_name"), name("last_name"), birth, postcode]
    comparisons += [cl.ExactMatch(kind) for kind in config.kinds]
    if priors:
        keys = ["first_name", "last_name", "birth_date", "postcode"] + [config.kinds[k] for k in config.kinds]
        comparisons = [
            c.configure(m_probabilities=PRIORS[key]) for c, key in zip(comparisons, keys, strict=True)
        ]
    return comparisons


def blocking_rules(config: IdentityConfig) -> list[str]:
    """Candidate-pair rules: every pair of records in different strong components sharing one of these."""
    return [f"{rule} AND l.sc <> r.sc" for rule in candidate_keys(config)]


def candidate_keys(config: IdentityConfig) -> list[str]:
    """The equalities of :func:`blocking_rules` (``l`` and ``r`` the two records)."""
    rules = [
        "l.last_name = r.last_name AND l.birth_date = r.birth_date",
        "l.first_name = r.first_name AND l.birth_date = r.birth_date",
        "l.birth_date = r.birth_date AND l.postcode = r.postcode",
        "l.first_name = r.first_name AND l.last_name = r.last_name AND l.postcode = r.postcode",
        "l.last_name = r.last_name AND l.postcode = r.postcode",
    ]
    rules += [f'l."{kind}" = r."{kind}"' for kind in config.kinds]
    return rules


def settings_dict(config: IdentityConfig, *, priors: bool, match_rate: float = 1e-4) -> Any:
    from splink import SettingsCreator
    from splink.blocking_rule_library import CustomRule

    return SettingsCreator(
        link_type="dedupe_only",
        probability_two_random_records_match=match_rate,
        unique_id_column_name="rid",
        comparisons=_comparisons(config, priors=priors),
        blocking_rules_to_generate_predictions=[CustomRule(rule) for rule in blocking_rules(config)],
        additional_columns_to_retain=["sc"],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
        max_iterations=20,
    )


TERM_FREQUENCY_TABLES = {"first_name": "tf_first_name", "last_name": "tf_last_name"}
"""Temp tables (``<column>``, ``tf_<column>``) the caller fills with each name's share of all records."""


def _db_api(con: duckdb.DuckDBPyConnection) -> Any:
    from splink import DuckDBAPI

    return DuckDBAPI(con)


def _linker(db_api: Any, frame: Any, settings: Any) -> Any:
    """A Linker with the name frequencies of :data:`TERM_FREQUENCY_TABLES` registered (so predictions on
    any subset of the records use the frequencies over all of them)."""
    from splink import Linker

    linker = Linker(frame, settings, log_level=SPLINK_LOG_LEVEL)
    for column, table in TERM_FREQUENCY_TABLES.items():
        linker.table_management.register_term_frequency_lookup(db_api.register(table), column)
    return linker


def train(
    con: duckdb.DuckDBPyConnection, table: str, config: IdentityConfig, *, seed: int = 7
) -> dict[str, Any]:
    """Train the model on (a sample of) ``table`` (columns: rid, sc, the fuzzy columns and the kinds).

    Returns the Splink model as a dict (JSON-serialisable). When EM cannot run (too few records: no
    pair shares a birth date, say), the built-in priors are used instead, with a warning.
    """
    from splink.internals.exceptions import SplinkException

    n = run(con, f"SELECT count(*) FROM {table}").fetchone()[0]
    sample = f"{table}__training"
    share = min(1.0, TRAINING_SAMPLE_RECORDS / max(n, 1))
    # A uniform record sample keeps the share of matching pairs (and the m and u values).
    run(
        con,
        f"CREATE OR REPLACE TEMP TABLE {sample} AS SELECT * FROM {table} "
        f"WHERE hash(rid + {seed}) % 1000000 < {int(share * 1_000_000)}",
    )
    try:
        try:
            model = _train(con, sample, config, priors=config.model == "priors", seed=seed)
        except SplinkException as exc:
            if config.model == "priors":
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning("EM cannot train on these records (%s): using the built-in priors", first)
            model = _train(con, sample, config, priors=True, seed=seed)
    finally:
        run(con, f"DROP TABLE IF EXISTS {sample}")
    return model


def _train(
    con: duckdb.DuckDBPyConnection, sample: str, config: IdentityConfig, *, priors: bool, seed: int
) -> dict[str, Any]:

    n = max(int(run(con, f"SELECT count(*) FROM {sample}")[0][0]), 2)
    db_api = _db_api(con)
    # default match rate: each record matches about one other (used when the estimate below cannot run)
    linker = _linker(
        db_api, db_api.register(sample), settings_dict(config, priors=priors, match_rate=1.0 / n)
    )
    full_name_and_birth = (
        "l.first_name = r.first_name AND l.last_name = r.last_name AND l.birth_date = r.birth_date"
    )
    rule = f"{full_name_and_birth} AND l.sc <> r.sc"
    found = run(con, f"SELECT count(*) FROM {sample} l JOIN {sample} r ON {rule} AND l.rid < r.rid")[0][0]
    if found:
        linker.training.estimate_probability_two_random_records_match([rule], recall=0.5)
    else:
        logger.warning("no record pair to estimate the match rate from: 1 / records")
    linker.training.estimate_u_using_random_sampling(max_pairs=1.5e6, seed=seed)
    if not priors:
        for rule in (
            "l.birth_date = r.birth_date AND l.sc <> r.sc",
            "l.first_name = r.first_name AND l.last_name = r.last_name AND l.postcode = r.postcode AND l.sc <> r.sc",
        ):
            # The last session also sets the match rate from all sessions' estimates.
            linker.training.estimate_parameters_using_expectation_maximisation(
                rule, max_pairs=2e6, populate_probability_two_random_records_match_from_trained_values=True
            )
    return regularise(linker.misc.save_model_to_json(None))


def regularise(model: dict[str, Any], floor: float = M_FLOOR) -> dict[str, Any]:
    """Every non-null level's ``m`` at least ``floor`` (then renormalised per comparison).

    EM on identity data drives some ``m`` to 0 (e.g. "first names differ" among cross-component matches),
    which would make a single typo or a moved postcode veto a match with a weight of -25 or worse.
    """
    for comparison in model["comparisons"]:
        levels = [level for level in comparison["comparison_levels"] if not level.get("is_null_level")]
        values = [max(float(level.get("m_probability") or 0.0), floor) for level in levels]
        total = sum(values)
        for level, value in zip(levels, values, strict=True):
            level["m_probability"] = value / total
    return model


CONTRADICTION_SQL = (
    "(a.first_name IS NOT NULL AND b.first_name IS NOT NULL "
    "AND jaro_winkler_similarity(a.first_name, b.first_name) < 0.8 "
    "AND NOT (a.first_name = b.last_name AND a.last_name = b.first_name)) "
    "OR (a.birth_date IS NOT NULL AND b.birth_date IS NOT NULL AND a.birth_date <> b.birth_date "
    "AND levenshtein(strftime(a.birth_date, '%Y-%m-%d'), strftime(b.birth_date, '%Y-%m-%d')) > 1 "
    "AND NOT (day(a.birth_date) = month(b.birth_date) AND month(a.birth_date) = day(b.birth_date) "
    "AND year(a.birth_date) = year(b.birth_date)))"
)
"""Two records that are clearly not one person, whatever the score: different first names (not a typo,
not written surname first) or different birth dates (not a typo, not day and month swapped). The model
alone would link, e.g., two members of a household: same surname, postcode and shared device."""


def predict(
    con: duckdb.DuckDBPyConnection,
    model: dict[str, Any],
    threshold: float,
    *,
    table: str | None = None,
    new: str | None = None,
    existing: str | None = None,
    out: str = "prob_pairs",
) -> int:
    """Score candidate pairs with ``model``; keep those at or above ``threshold`` in temp table ``out``
    (``rid_l``, ``rid_r``, ``match_probability``). Returns how many were kept.

    Either ``table`` (all pairs within it), or ``new`` and ``existing`` (pairs within ``new`` and between
    ``new`` and ``existing``, never within ``existing``: the incremental run).
    """

    db_api = _db_api(con)
    frames = {}
    if table is not None:
        frames["all"] = db_api.register(table)
    else:
        frames["new"] = db_api.register(new)
        frames["existing"] = db_api.register(existing)
    linker = _linker(db_api, next(iter(frames.values())), model)
    kept = []
    if table is not None:
        results = [linker.inference.predict(threshold_match_probability=threshold, warning_mode="never")]
    else:
        results = [
            linker.inference.predict_within(
                frames["new"], threshold_match_probability=threshold, warning_mode="never"
            ),
            linker.inference.predict_between(
                frames["new"], frames["existing"], threshold_match_probability=threshold, warning_mode="never"
            ),
        ]
    for result in results:
        kept.append(
            f"SELECT rid_l, rid_r, match_probability FROM {result.physical_name} "
            f"WHERE match_probability >= {float(threshold)!r}"
        )
    run(con, f"CREATE OR REPLACE TEMP TABLE {out} AS " + " UNION ALL ".join(kept))
    for result in results:
        result.drop_table_from_database_and_remove_from_cache()
    db_api.delete_tables_created_by_splink_from_db()
    return run(con, f"SELECT count(*) FROM {out}").fetchone()[0]

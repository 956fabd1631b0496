"""Against a known truth (synthetic identities): pairwise precision and recall of a stitching, and the
scores of a workspace's customers mapped back to the true persons (what identity resolution is worth to
the models)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd
import pyarrow as pa

from features.identity.normalise import lit, run


@dataclass(frozen=True)
class PairwiseScores:
    """Over all pairs of records: predicted = same OneID, true = same person."""

    precision: float
    recall: float
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    records: int

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def _relation(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table | Path) -> str:
    if isinstance(data, pa.Table):
        con.register(name, data)
        return name
    return f"read_parquet({lit(str(data))})"


def pairwise_scores(
    predicted: pa.Table | Path, truth: pa.Table | Path, *, key: str = "oneid"
) -> PairwiseScores:
    """Scores of ``predicted`` (``record_id``, ``key``) against ``truth`` (``record_id``, ``person_id``),
    over the records in both. Counts pairs per group as n (n - 1) / 2, never enumerating them."""
    with duckdb.connect() as con:
        p = _relation(con, "predicted_arrow", predicted)
        t = _relation(con, "truth_arrow", truth)
        run(
            con,
            f"CREATE TEMP TABLE j AS SELECT p.{key} AS g, t.person_id AS h FROM {p} p JOIN {t} t USING (record_id)",
        )
        pairs = "sum(n * (n - 1) / 2)::HUGEINT"
        predicted_pairs, true_pairs, correct, records = run(
            con,
            f"SELECT (SELECT coalesce({pairs}, 0) FROM (SELECT count(*) AS n FROM j GROUP BY g)), "
            f"(SELECT coalesce({pairs}, 0) FROM (SELECT count(*) AS n FROM j GROUP BY h)), "
            f"(SELECT coalesce({pairs}, 0) FROM (SELECT count(*) AS n FROM j GROUP BY g, h)), "
            "(SELECT count(*) FROM j)",
        ).fetchone()
    predicted_pairs, true_pairs, correct = int(predicted_pairs), int(true_pairs), int(correct)
    return PairwiseScores(
        precision=correct / predicted_pairs if predicted_pairs else 1.0,
        recall=correct / true_pairs if true_pairs else 1.0,
        true_pairs=true_pairs,
        predicted_pairs=predicted_pairs,
        correct_pairs=correct,
        records=int(records),
    )


PersonScoring = Literal["most_active", "aggregate"]


def person_scores(
    records: pd.DataFrame,
    scores: pd.Series,
    *,
    how: PersonScoring = "most_active",
    combine: Literal["sum", "all_churn"] = "sum",
) -> pd.Series:
    """One score per true person from the scores of the customers a workspace split her into.

    ``records``: one row per identity record with ``person_id`` (the truth), ``customer_id`` (the
    customer that holds the record in the workspace: the person herself, her OneID, or the record itself
    when nothing is stitched) and ``activity`` (what the record did, e.g. orders before the snapshot).
    ``scores``: indexed by ``customer_id``.

    * ``most_active``: the score of the customer holding most of the person's activity (ties: the
      smallest customer id), i.e. the profile a team would act on for her when it cannot tell that
      several customers are one person.
    * ``aggregate``: every distinct customer holding one of her records, combined: ``sum`` (a value:
      each fragment's predicted spend adds up) or ``all_churn`` (she churns only if every fragment does:
      the product of the fragments' churn probabilities, as if they were independent).

    A customer without a score counts as missing: ``most_active`` skips it for the next one, ``aggregate``
    leaves it out. Persons with no scored customer are absent from the result.
    """
    held = (
        records.groupby(["person_id", "customer_id"], as_index=False, sort=False)["activity"]
        .sum()
        .merge(scores.rename("score"), left_on="customer_id", right_index=True, how="inner")
    )
    if how == "most_active":
        best = held.sort_values(
            ["person_id", "activity", "customer_id"], ascending=[True, False, True], kind="stable"
        ).drop_duplicates("person_id")
        return best.set_index("person_id")["score"].rename("score")
    if combine == "sum":
        return held.groupby("person_id")["score"].sum().rename("score")
    return held.groupby("person_id")["score"].prod().rename("score")

"""Pairwise precision and recall of a stitching against a known truth (synthetic identities)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
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

"""Mapping a workspace's scores back to the true persons (benchmarks/bench_identity_models.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from features.identity.metrics import person_scores

# person A: three records, most of her activity on r1; person B: two records with the same activity
RECORDS = pd.DataFrame(
    {
        "record_id": ["r1", "r2", "r3", "r4", "r5"],
        "person_id": ["A", "A", "A", "B", "B"],
        "activity": [5, 1, 0, 2, 2],
    }
)


def test_unstitched_fragments_most_active_and_aggregate() -> None:
    records = RECORDS.assign(customer_id=RECORDS.record_id)
    scores = pd.Series({"r1": 0.2, "r2": 0.9, "r3": 0.5, "r4": 0.7, "r5": 0.4})
    most = person_scores(records, scores, how="most_active")
    assert most.to_dict() == {"A": 0.2, "B": 0.7}  # B: a tie goes to the smallest customer id
    total = person_scores(records, scores, how="aggregate", combine="sum")
    assert total.to_dict() == pytest.approx({"A": 1.6, "B": 1.1})
    churn = person_scores(records, scores, how="aggregate", combine="all_churn")
    assert churn.to_dict() == pytest.approx({"A": 0.2 * 0.9 * 0.5, "B": 0.7 * 0.4})


def test_stitched_customers_count_once_and_follow_activity() -> None:
    # OID1 holds r1, r2 (A) and r4 (B: a wrong link); OID2 holds r3 (A, left split), OID3 holds r5
    records = RECORDS.assign(customer_id=["OID1", "OID1", "OID2", "OID1", "OID3"])
    scores = pd.Series({"OID1": 0.3, "OID2": 0.6, "OID3": 0.1})
    most = person_scores(records, scores, how="most_active")
    assert most.to_dict() == {"A": 0.3, "B": 0.3}  # B's activity ties 2-2: OID1 < OID3
    total = person_scores(records, scores, how="aggregate", combine="sum")
    assert total.to_dict() == pytest.approx({"A": 0.9, "B": 0.4})  # OID1 once for A


def test_customers_without_a_score_are_skipped() -> None:
    records = RECORDS.assign(customer_id=RECORDS.record_id)
    scores = pd.Series({"r2": 0.9, "r3": 0.5})  # r1 (A's most active) and all of B's unscored
    assert person_scores(records, scores, how="most_active").to_dict() == {"A": 0.9}

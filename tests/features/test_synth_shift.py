"""The regime-shift option of the synthetic generator (``SynthConfig.shift_at``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.synth import SynthConfig, generate

BASE = SynthConfig(
    n_customers=400, seed=5, start=datetime(2023, 1, 1, tzinfo=UTC), end=datetime(2024, 7, 1, tzinfo=UTC)
)
BASE_DIGEST = "015d2bc581112a178c710be06dfccb8e0a323192738d70b5f3c4c4f52615b691"
"""Digest of BASE's four tables (contents and schema metadata) written by the generator before the shift
option existed (commit 7981873)."""
SHIFT = datetime(2024, 1, 1, tzinfo=UTC)
SHIFTED = replace(BASE, n_customers=1000, shift_at=SHIFT, shift_share=0.5, shift_factor=0.2)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("customers", "transactions", "events", "truth"):
        table = pq.read_table(folder / f"{name}.parquet")
        h.update(pd.util.hash_pandas_object(table.to_pandas(), index=False).to_numpy().tobytes())
        h.update(repr(table.schema.metadata).encode())
    return h.hexdigest()


def _read(folder: Path, name: str) -> pd.DataFrame:
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same customers without and with the shift."""
    plain, shifted = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("shifted")
    generate(replace(SHIFTED, shift_at=None), plain)
    generate(SHIFTED, shifted)
    return plain, shifted


def test_without_a_shift_the_output_is_what_it_was(tmp_path):
    generate(BASE, tmp_path)
    assert _digest(tmp_path) == BASE_DIGEST


def test_shifted_customers_buy_less_after_the_date_and_nobody_else_changes(worlds):
    plain, shifted = worlds
    truth = _read(shifted, "truth")
    hit = set(truth.loc[truth["shifted"], "customer_id"])
    assert 0.4 < len(hit) / len(truth) < 0.6
    before, after = _read(plain, "transactions"), _read(shifted, "transactions")

    def purchases(frame: pd.DataFrame, who: set[str], post: bool) -> int:
        rows = frame[~frame["is_return"] & frame["customer_id"].isin(who)]
        return int(((rows["ts"] >= pd.Timestamp(SHIFT)) == post).sum())

    others = set(truth["customer_id"]) - hit
    # Shifted customers: purchase lines after the date fall to about the factor; before it, unchanged.
    ratio = purchases(after, hit, True) / purchases(before, hit, True)
    assert 0.12 < ratio < 0.3
    assert purchases(after, hit, False) == purchases(before, hit, False)
    # Everybody else: exactly the same rows. Events (browsing, abandoned carts) are untouched.
    same = after[after["customer_id"].isin(others)].reset_index(drop=True)
    assert same.equals(before[before["customer_id"].isin(others)].reset_index(drop=True))
    assert _read(shifted, "events").equals(_read(plain, "events"))
    # No return line of an order that was never placed.
    placed = set(after.loc[~after["is_return"], "order_id"].str[1:])
    assert set(after.loc[after["is_return"], "order_id"].str[1:]) <= placed


def test_the_truth_records_the_shift(worlds):
    plain, shifted = worlds
    truth = _read(shifted, "truth")
    rate = truth["purchase_rate_after_shift"] / truth["purchase_rate"]
    assert (rate[truth["shifted"]] - 0.2).abs().max() < 1e-12
    assert (rate[~truth["shifted"]] == 1.0).all()
    recorded = json.loads(pq.read_schema(shifted / "truth.parquet").metadata[b"synth_config"])
    assert recorded["shift_at"] == str(SHIFT) and recorded["shift_factor"] == 0.2
    assert "shifted" not in _read(plain, "truth").columns


def test_bad_shift_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="shift_share"):
        generate(replace(SHIFTED, shift_share=1.5), tmp_path)
    with pytest.raises(ValueError, match="naive"):
        generate(replace(SHIFTED, shift_at=datetime(2024, 1, 1)), tmp_path)

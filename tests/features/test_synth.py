"""Tests of the synthetic generator and its ground truth (features/synth.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from features.contract import ARROW_SCHEMAS, EVENT_TYPES
from features.synth import (
    CATEGORIES,
    SynthConfig,
    SynthResult,
    generate,
    history_before,
    realised_labels,
    true_scores,
)

N_CUSTOMERS = 20_000
SNAPSHOT = datetime(2024, 10, 1, tzinfo=UTC)  # horizons up to 90 days stay inside the history
CHI2_999_DF10 = 29.59  # 0.999 quantile of chi-square with 10 degrees of freedom


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return generate(SynthConfig(n_customers=N_CUSTOMERS, seed=7), tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def sql(dataset: SynthResult) -> duckdb.DuckDBPyConnection:
    """DuckDB with views ``customers``, ``transactions``, ``events`` and ``truth`` over the files."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    for name, path in dataset.paths.items():
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    return connection


@pytest.fixture(scope="module")
def scored(dataset: SynthResult) -> pd.DataFrame:
    """True scores at SNAPSHOT joined with realised labels (90-day value) and realised survival."""
    data_dir = dataset.paths["truth"].parent
    truth = pq.read_table(dataset.paths["truth"]).to_pandas()
    scores = true_scores(truth, history_before(data_dir, SNAPSHOT), SNAPSHOT, clv_horizon_days=90)
    labels = realised_labels(data_dir, SNAPSHOT, clv_horizon_days=90)
    merged = scores.merge(labels, on="customer_id", validate="one_to_one")
    death = truth.set_index("customer_id")["death_ts"].reindex(merged["customer_id"])
    merged["alive"] = (death > pd.Timestamp(SNAPSHOT)).to_numpy()
    assert len(merged) == len(scores) == len(labels)
    return merged


def _read(result: SynthResult, name: str) -> pd.DataFrame:
    return pq.read_table(result.paths[name]).to_pandas()


def _assert_calibrated(p: np.ndarray, y: np.ndarray, bins: int = 10) -> None:
    """Deciles of ``p``: mean prediction vs realised rate, each and jointly (chi-square) within noise."""
    order = np.argsort(p, kind="stable")
    z2 = []
    for part in np.array_split(order, bins):
        predicted, realised = p[part].mean(), y[part].mean()
        se = np.sqrt(np.sum(p[part] * (1 - p[part]))) / len(part)
        se = np.hypot(se, 0.002)  # allowance for the day-grid quadrature of the truth
        z2.append(((realised - predicted) / se) ** 2)
        assert abs(realised - predicted) < 4 * se + 0.005, (predicted, realised, len(part))
    assert sum(z2) < CHI2_999_DF10, z2


# ---- contract and structure ----------------------------------------------------------------------------


def test_files_match_the_contract_schemas(dataset: SynthResult) -> None:
    for name, schema in ARROW_SCHEMAS.items():
        written = pq.read_schema(dataset.paths[name]).remove_metadata()
        assert written.equals(schema), (name, written, schema)
        assert pq.read_metadata(dataset.paths[name]).num_rows == dataset.counts[name]
    assert dataset.counts["customers"] == dataset.counts["truth"] == N_CUSTOMERS
    assert sorted(p.name for p in dataset.paths["truth"].parent.iterdir()) == sorted(
        f"{name}.parquet" for name in ("customers", "transactions", "events", "truth")
    )  # no temporary files left behind


def test_scale_is_about_ten_lines_and_fifty_events_per_customer(dataset: SynthResult) -> None:
    assert 7 < dataset.counts["transactions"] / N_CUSTOMERS < 13
    assert 35 < dataset.counts["events"] / N_CUSTOMERS < 65


def test_ids_and_values(sql: duckdb.DuckDBPyConnection) -> None:
    ids = sql.execute("SELECT customer_id FROM customers").df()["customer_id"]
    assert ids.is_unique and ids.is_monotonic_increasing and ids.str.fullmatch(r"C\d{7}").all()
    assert set(sql.execute("SELECT DISTINCT event_type FROM events").df()["event_type"]) == set(EVENT_TYPES)
    categories = sql.execute("SELECT DISTINCT category FROM transactions").df()["category"]
    assert set(categories) == set(CATEGORIES)
    # Optional profile attributes are sometimes missing, like in real CDP exports.
    nulls = sql.execute("SELECT count(*) - count(gender), count(*) - count(region) FROM customers").fetchone()
    assert nulls[0] > 0 and nulls[1] > 0


def test_no_duplicate_rows(sql: duckdb.DuckDBPyConnection) -> None:
    """Validation quarantines exact duplicates, which would silently change the data behind the truth."""
    for table in ("customers", "transactions", "events"):
        rows, distinct = sql.execute(
            f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT * FROM {table})) FROM {table}"
        ).fetchone()
        assert rows == distinct, table


def test_same_seed_same_tables_other_seed_other_tables(tmp_path: Path) -> None:
    config = SynthConfig(n_customers=1_500, seed=3)
    first, again = generate(config, tmp_path / "a"), generate(config, tmp_path / "b")
    other = generate(SynthConfig(n_customers=1_500, seed=4), tmp_path / "c")
    for name in first.paths:
        assert pq.read_table(first.paths[name]).equals(pq.read_table(again.paths[name])), name
    for name in ("customers", "transactions", "events", "truth"):
        assert not pq.read_table(first.paths[name]).equals(pq.read_table(other.paths[name])), name


def test_more_segments_than_archetypes(tmp_path: Path) -> None:
    result = generate(SynthConfig(n_customers=3_000, n_segments=10), tmp_path)
    truth = _read(result, "truth")
    assert truth["segment"].nunique() == 10 and truth["segment_name"].nunique() == 10


def test_rejects_bad_configs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(SynthConfig(n_customers=10, start=datetime(2024, 1, 1)), tmp_path)  # naive datetime
    with pytest.raises(ValueError):
        generate(SynthConfig(n_customers=10, end=datetime(2022, 1, 1, tzinfo=UTC)), tmp_path)


# ---- the process ---------------------------------------------------------------------------------------


def test_activity_only_while_alive_inside_the_history(sql: duckdb.DuckDBPyConnection) -> None:
    for table in ("transactions", "events"):
        violations, rows = sql.execute(
            f"""
            SELECT count(*) FILTER (WHERE a.ts < t.signup_ts OR a.ts < t.observed_from
                                       OR a.ts > t.death_ts OR a.ts >= t.observed_until),
                   count(*)
            FROM {table} a JOIN truth t USING (customer_id)
            """
        ).fetchone()
        assert rows > 0 and violations == 0, table
    # Not vacuous: many customers die inside the window, and the window is [2023-01-01, 2025-01-01).
    died, first, last = sql.execute(
        """
        SELECT (SELECT count(*) FROM truth WHERE death_ts < observed_until AND death_ts > observed_from),
               min(ts), max(ts) FROM events
        """
    ).fetchone()
    assert died > N_CUSTOMERS / 5
    assert first >= datetime(2023, 1, 1, tzinfo=UTC) and last < datetime(2025, 1, 1, tzinfo=UTC)


def test_returns_follow_the_sign_convention_and_refund_an_earlier_line(
    sql: duckdb.DuckDBPyConnection,
) -> None:
    bad_sign = sql.execute(
        """
        SELECT count(*) FROM transactions
        WHERE (is_return AND (amount > 0 OR quantity > 0)) OR (NOT is_return AND (amount < 0 OR quantity <= 0))
        """
    ).fetchone()[0]
    assert bad_sign == 0
    returns, share, unmatched = sql.execute(
        """
        WITH r AS (SELECT * FROM transactions WHERE is_return)
        SELECT count(*),
               count(*) / (SELECT count(*) FROM transactions),
               count(*) FILTER (WHERE NOT EXISTS (
                   SELECT 1 FROM transactions p
                   WHERE NOT p.is_return AND p.order_id = 'O' || substr(r.order_id, 2)
                     AND p.customer_id = r.customer_id AND p.category = r.category
                     AND p.quantity = -r.quantity AND p.amount = -r.amount
                     AND p.ts < r.ts AND r.ts <= p.ts + INTERVAL 30 DAY))
        FROM r
        """
    ).fetchone()
    assert returns > 0 and 0.02 < share < 0.2 and unmatched == 0


def test_every_purchase_follows_a_view_of_its_category_in_its_session(sql: duckdb.DuckDBPyConnection) -> None:
    purchases, unviewed = sql.execute(
        """
        SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (
            SELECT 1 FROM events e
            WHERE e.session_id = 'S' || substr(p.order_id, 2) AND e.customer_id = p.customer_id
              AND e.event_type = 'view' AND e.category = p.category AND e.ts < p.ts
              AND e.ts > p.ts - INTERVAL 1 DAY))
        FROM transactions p WHERE NOT p.is_return
        """
    ).fetchone()
    assert purchases > 0 and unviewed == 0


def test_sessions_belong_to_one_customer_and_never_cross_midnight(sql: duckdb.DuckDBPyConnection) -> None:
    sessions, crossing = sql.execute(
        """
        SELECT count(*), count(*) FILTER (WHERE n_customers > 1 OR first_day <> last_day)
        FROM (SELECT session_id, count(DISTINCT customer_id) AS n_customers,
                     min(ts)::DATE AS first_day, max(ts)::DATE AS last_day
              FROM events GROUP BY session_id)
        """
    ).fetchone()
    assert sessions > 0 and crossing == 0


def test_purchases_peak_before_christmas(sql: duckdb.DuckDBPyConnection) -> None:
    peak, rest = sql.execute(
        """
        SELECT avg(n) FILTER (WHERE month(day) = 12 AND day(day) <= 20),
               avg(n) FILTER (WHERE month(day) IN (3, 4, 5))
        FROM (SELECT ts::DATE AS day, count(*) AS n FROM transactions
              WHERE NOT is_return AND year(ts) = 2024 GROUP BY ALL)
        """
    ).fetchone()
    assert peak > 1.3 * rest


def test_segments_are_distinguishable_from_behaviour(sql: duckdb.DuckDBPyConnection) -> None:
    shares = sql.execute(
        """
        SELECT t.segment, p.category, count(*) / sum(count(*)) OVER (PARTITION BY t.segment) AS share
        FROM transactions p JOIN truth t USING (customer_id) WHERE NOT p.is_return
        GROUP BY t.segment, p.category
        """
    ).df()
    matrix = shares.pivot(index="segment", columns="category", values="share").fillna(0.0).to_numpy()
    gaps = np.abs(matrix[:, None, :] - matrix[None, :, :]).max(axis=2)
    assert gaps[np.triu_indices(len(matrix), 1)].min() > 0.05  # every pair differs in some category

    # A lookalike-style check: behaviour alone recovers the latent segment far above chance.
    type_columns = ", ".join(f"avg((e.event_type = '{t}')::INT) AS t_{t}" for t in EVENT_TYPES)
    category_columns = ", ".join(f"avg((e.category = '{c}')::INT) AS c_{c}" for c in CATEGORIES)
    features = sql.execute(
        f"""
        WITH behaviour AS (
            SELECT e.customer_id, ln(count(*)) AS log_events, {type_columns}, {category_columns},
                   avg(hour(e.ts)) AS mean_hour
            FROM events e GROUP BY e.customer_id HAVING count(*) >= 10),
        spend AS (
            SELECT customer_id, ln(1 + count(*)) AS log_lines, ln(1 + avg(amount)) AS log_amount
            FROM transactions WHERE NOT is_return GROUP BY customer_id)
        SELECT t.segment, b.*, coalesce(s.log_lines, 0) AS log_lines, coalesce(s.log_amount, 0) AS log_amount
        FROM behaviour b JOIN truth t USING (customer_id) LEFT JOIN spend s USING (customer_id)
        """
    ).df()
    x = StandardScaler().fit_transform(features.drop(columns=["segment", "customer_id"]).to_numpy())
    y = features["segment"].to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    accuracy = LogisticRegression(max_iter=500).fit(x_train, y_train).score(x_test, y_test)
    majority = np.bincount(y_test).max() / len(y_test)
    assert accuracy > max(0.7, 2.5 * majority), (accuracy, majority)


# ---- ground truth --------------------------------------------------------------------------------------


def test_history_before_sees_only_the_past(dataset: SynthResult) -> None:
    history = history_before(dataset.paths["truth"].parent, SNAPSHOT)
    assert (history["last_activity"] < pd.Timestamp(SNAPSHOT)).all()
    assert (
        history["last_purchase"].dropna() <= history["last_activity"].loc[history["last_purchase"].notna()]
    ).all()
    assert (history["n_orders"] >= 0).all() and (history["n_events"] > 0).all()


def test_p_alive_is_calibrated_against_the_true_death_times(scored: pd.DataFrame) -> None:
    _assert_calibrated(scored["p_alive"].to_numpy(), scored["alive"].to_numpy(float))
    assert roc_auc_score(scored["alive"], scored["p_alive"]) > 0.9


def test_p_churn_and_p_convert_are_calibrated(scored: pd.DataFrame) -> None:
    _assert_calibrated(scored["p_churn"].to_numpy(), scored["churned"].to_numpy(float))
    _assert_calibrated(scored["p_convert"].to_numpy(), scored["converted"].to_numpy(float))


def test_scores_rank_the_realised_labels(scored: pd.DataFrame) -> None:
    assert roc_auc_score(scored["churned"], scored["p_churn"]) > 0.8
    assert roc_auc_score(scored["converted"], scored["p_convert"]) > 0.8
    # Among customers alive at the snapshot (the hard part), the ranking is still informative.
    alive = scored[scored["alive"]]
    assert roc_auc_score(alive["churned"], alive["p_churn"]) > 0.65


def test_expected_value_matches_realised_value(scored: pd.DataFrame) -> None:
    expected, realised = scored["expected_value"].mean(), scored["value"].mean()
    assert abs(realised - expected) < 0.1 * expected, (expected, realised)
    top = scored["expected_value"] > scored["expected_value"].quantile(0.9)
    assert scored.loc[top, "value"].mean() > 4 * realised  # the top decile really spends more
    assert np.corrcoef(scored["expected_value"], scored["value"])[0, 1] > 0.5


def test_truth_refuses_censored_or_out_of_range_snapshots(dataset: SynthResult) -> None:
    data_dir = dataset.paths["truth"].parent
    truth = pq.read_table(dataset.paths["truth"]).to_pandas()
    with pytest.raises(ValueError):
        realised_labels(data_dir, SNAPSHOT)  # the default 365-day value horizon runs past the end
    late = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=1)
    with pytest.raises(ValueError):
        true_scores(truth, history_before(data_dir, late), late)

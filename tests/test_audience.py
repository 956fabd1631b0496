"""Audience core logic on hand-made populations: every filter operator, holdouts, lift, insight, the store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from portrait.audience import (
    AudienceBook,
    AudienceError,
    AudienceNotFound,
    AudienceStore,
    FilterError,
    Population,
    assign,
    compile_filter,
    lift,
)
from portrait.audience.insight import benjamini_hochberg, numeric_text, two_proportion_p, welch_p
from portrait.audience.population import write_population

PEOPLE = pd.DataFrame(
    {
        "customer_id": [f"C{i}" for i in range(10)],
        "churn_tier": ["high", "high", "medium", "low", "low", "low", "medium", "high", None, "low"],
        "spend_365d": [10.0, 250.0, 99.0, 100.0, 0.0, None, 500.0, 35.5, 80.0, 100.5],
        "region": ["north", "south", "north", None, "east", "north", "south", "east", "north", "west"],
    }
)


@pytest.fixture
def population(tmp_path: Path) -> Population:
    return write_population(tmp_path / "aud", "k1", PEOPLE, snapshot="2025-01-02", versions={"churn": "3"})


def ids(pop: Population, filter_: dict) -> list[str]:
    return pop.select(filter_)["customer_id"].tolist()


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"field": "churn_tier", "op": "eq", "value": "high"}, ["C0", "C1", "C7"]),
        ({"field": "churn_tier", "op": "=", "value": "high"}, ["C0", "C1", "C7"]),
        ({"field": "churn_tier", "op": "ne", "value": "low"}, ["C0", "C1", "C2", "C6", "C7"]),
        ({"field": "spend_365d", "op": "lt", "value": 35.5}, ["C0", "C4"]),
        ({"field": "spend_365d", "op": "lte", "value": 35.5}, ["C0", "C4", "C7"]),
        ({"field": "spend_365d", "op": ">", "value": 100}, ["C1", "C6", "C9"]),
        ({"field": "spend_365d", "op": "gte", "value": 100}, ["C1", "C3", "C6", "C9"]),
        ({"field": "spend_365d", "op": "between", "value": [80, 100]}, ["C2", "C3", "C8"]),
        ({"field": "region", "op": "in", "value": ["east", "west"]}, ["C4", "C7", "C9"]),
        ({"field": "region", "op": "not_in", "value": ["north", "south"]}, ["C4", "C7", "C9"]),
        ({"field": "region", "op": "is_null"}, ["C3"]),
        ({"field": "spend_365d", "op": "not_null"}, [f"C{i}" for i in range(10) if i != 5]),
        (
            {
                "and": [
                    {"field": "churn_tier", "op": "in", "value": ["high", "medium"]},
                    {"field": "spend_365d", "op": ">=", "value": 50},
                ]
            },
            ["C1", "C2", "C6"],
        ),  # fmt: skip
        (
            {
                "or": [
                    {"field": "region", "op": "eq", "value": "west"},
                    {"field": "churn_tier", "op": "eq", "value": "medium"},
                ]
            },
            ["C2", "C6", "C9"],
        ),
        # not: everyone the inner filter does not select, customers without a value included
        ({"not": {"field": "spend_365d", "op": ">=", "value": 100}}, ["C0", "C2", "C4", "C5", "C7", "C8"]),
        (
            {
                "and": [
                    {"not": {"field": "region", "op": "eq", "value": "north"}},
                    {
                        "or": [
                            {"field": "churn_tier", "op": "eq", "value": "high"},
                            {"field": "spend_365d", "op": "is_null"},
                        ]
                    },
                ]
            },
            ["C1", "C7"],
        ),  # fmt: skip
    ],
)
def test_each_filter_operator_selects_exactly_its_customers(population, filter_, expected):
    assert ids(population, filter_) == expected
    size, by_tier = population.breakdown(filter_)
    assert size == len(expected)
    assert sum(by_tier["churn_tier"].values()) == len(expected)


def test_breakdown_splits_the_size_by_tier(population):
    size, by_tier = population.breakdown({"field": "spend_365d", "op": ">=", "value": 80})
    assert size == 6  # C1, C2, C3, C6, C8, C9
    assert by_tier == {"churn_tier": {"(none)": 1, "high": 1, "low": 2, "medium": 2}}


@pytest.mark.parametrize(
    ("filter_", "problem"),
    [
        (
            {"field": "spend_356d", "op": "gt", "value": 1},
            "unknown field 'spend_356d'; did you mean spend_365d",
        ),
        ({"field": "spend_365d; DROP TABLE x", "op": "gt", "value": 1}, "unknown field"),
        ({"field": "spend_365d", "op": "gt", "value": "100"}, "expects a number"),
        ({"field": "region", "op": "gt", "value": "north"}, "gt needs a numeric field"),
        ({"field": "region", "op": "in", "value": []}, "non-empty list"),
        ({"field": "region", "op": "in", "value": "north"}, "non-empty list"),
        ({"field": "region", "op": "eq", "value": ["north"]}, "one value, not a list"),
        ({"field": "spend_365d", "op": "between", "value": [5]}, "[low, high]"),
        ({"field": "spend_365d", "op": "between", "value": [9, 5]}, "above high"),
        ({"field": "region", "op": "is_null", "value": "x"}, "takes no value"),
        ({"field": "region", "op": "eq"}, "needs a value"),
        ({"field": "region", "op": "like", "value": "n%"}, "bad filter at"),
        ({"and": []}, "bad filter at"),
        ({"field": "region", "op": "eq", "value": "x", "extra": 1}, "bad filter at"),
        ({"xor": [1]}, "bad filter at"),
    ],
)
def test_bad_filters_are_refused_naming_the_problem(population, filter_, problem):
    with pytest.raises(FilterError) as info:
        population.select(filter_)
    assert problem in str(info.value)


def test_values_are_parameters_never_sql_text(population):
    sneaky = "north' OR '1'='1"
    compiled = compile_filter({"field": "region", "op": "eq", "value": sneaky}, population.columns)
    assert sneaky not in compiled.sql and compiled.params == [sneaky]
    assert ids(population, {"field": "region", "op": "eq", "value": sneaky}) == []


def test_deep_or_large_filters_are_refused(population):
    deep: dict = {"field": "region", "op": "is_null"}
    for _ in range(10):
        deep = {"not": deep}
    with pytest.raises(FilterError, match="nested deeper"):
        population.select(deep)
    many = {
        "or": [{"field": "region", "op": "is_null"}] * 60
        + [{"or": [{"field": "region", "op": "is_null"}] * 10}]
    }
    with pytest.raises(FilterError, match="more than 64 conditions"):
        population.select(many)


# ---- holdouts ------------------------------------------------------------------------------------------------


def _members(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"K{i:06d}" for i in range(n)],
            "stratum": rng.choice(["high", "medium", "low"], n, p=[0.1, 0.3, 0.6]),
        }
    )


def test_holdout_is_stratified_and_stable_across_recomputation_and_additions():
    members = _members(5_000)
    first = assign("aud_0123456789abcdef", members, 0.2)
    again = assign("aud_0123456789abcdef", members.sample(frac=1.0, random_state=3), 0.2)  # another order
    pd.testing.assert_frame_equal(first, again)
    shares = first.groupby("stratum").group.apply(lambda g: (g == "control").mean())
    counts = first.groupby("stratum").size()
    for stratum, share in shares.items():  # exact per stratum, up to rounding
        assert abs(share * counts[stratum] - round(0.2 * counts[stratum])) < 1e-9
    # Customers added later: everyone keeps their side, the new ones keep each stratum at 20 %.
    grown = pd.concat([members, _members(7_000).iloc[5_000:]], ignore_index=True)
    second = assign("aud_0123456789abcdef", grown, 0.2, previous=first)
    kept = second.merge(first, on="customer_id", suffixes=("", "_before"))
    assert len(kept) == 5_000 and (kept.group == kept.group_before).all()
    for stratum, part in second.groupby("stratum"):
        assert abs((part.group == "control").sum() - round(0.2 * len(part))) <= 1, stratum
    # Another audience splits the same customers differently (the hash is keyed by the audience).
    other = assign("aud_fedcba9876543210", members, 0.2)
    assert (other.group != first.group).mean() > 0.2


def test_lift_interval_matches_a_case_computed_by_hand():
    # One stratum: treatment 100 of 1,000 converted, control 5 of 100.
    groups = pd.DataFrame(
        {
            "customer_id": [f"T{i}" for i in range(1000)] + [f"C{i}" for i in range(100)],
            "stratum": "all",
            "group": ["treatment"] * 1000 + ["control"] * 100,
        }
    )
    converted = [f"T{i}" for i in range(100)] + [f"C{i}" for i in range(5)] + ["stranger"]
    report = lift(groups, converted)
    # lift = 0.10 - 0.05; se = sqrt(0.1 * 0.9 / 1000 + 0.05 * 0.95 / 100) = sqrt(0.000565) = 0.0237697
    se = math.sqrt(0.1 * 0.9 / 1000 + 0.05 * 0.95 / 100)
    assert report.lift == pytest.approx(0.05)
    assert report.lift_ci == pytest.approx((0.05 - 1.959964 * se, 0.05 + 1.959964 * se), abs=1e-6)
    assert report.lift_ci == pytest.approx((0.003412, 0.096588), abs=1e-6)
    assert report.significant
    assert report.relative_lift == pytest.approx(1.0)
    assert report.incremental_conversions == pytest.approx(50.0)
    assert report.unknown_converted == 1
    # Two strata weighted by their share of the audience: 3/4 with lift 0.1, 1/4 with lift 0.
    strata = pd.DataFrame(
        {
            "customer_id": [f"A{i}" for i in range(300)] + [f"B{i}" for i in range(100)],
            "stratum": ["a"] * 300 + ["b"] * 100,
            "group": (["treatment"] * 200 + ["control"] * 100) + (["treatment"] * 50 + ["control"] * 50),
        }
    )
    report = lift(strata, [f"A{i}" for i in range(40)] + [f"A{i}" for i in range(200, 210)] + ["B0", "B50"])
    # a: 40/200 - 10/100 = 0.1; b: 1/50 - 1/50 = 0; weighted 0.75 * 0.1
    assert report.lift == pytest.approx(0.075)
    var = 0.75**2 * (0.2 * 0.8 / 200 + 0.1 * 0.9 / 100) + 0.25**2 * 2 * (0.02 * 0.98 / 50)
    assert report.lift_ci == pytest.approx(
        (0.075 - 1.959964 * math.sqrt(var), 0.075 + 1.959964 * math.sqrt(var)), abs=1e-6
    )


# ---- statistics and words -------------------------------------------------------------------------------------


def test_statistics_match_scipy_and_textbook_values():
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 2.0, 400), rng.normal(1.3, 1.0, 900)
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_p(a.mean(), a.var(ddof=1), len(a), b.mean(), b.var(ddof=1), len(b)) == pytest.approx(
        expected
    )
    # 30/100 against 20/100: z = 0.1 / sqrt(0.25 * 0.75 * 0.02) = 1.633, p = 0.1025
    assert two_proportion_p(30, 100, 20, 100) == pytest.approx(0.10247, abs=1e-4)
    assert benjamini_hochberg([0.01, None, 0.04, 0.03, 0.5]) == pytest.approx(
        [0.04, None, 0.16 / 3, 0.16 / 3, 0.5]
    )


def test_insight_finds_what_sets_an_audience_apart(tmp_path: Path):
    from scipy import stats

    rng = np.random.default_rng(1)
    n = 20_000
    frame = pd.DataFrame(
        {
            "customer_id": [f"P{i:06d}" for i in range(n)],
            "orders_365d": rng.poisson(2.0, n).astype(float),
            "noise": rng.normal(0, 1, n),
            "conversion_tier": rng.choice(["high", "medium", "low"], n, p=[0.1, 0.2, 0.7]),
        }
    )
    buyers = frame.orders_365d >= 5
    pop = write_population(tmp_path / "aud", "k", frame, snapshot="s", versions={})
    book = AudienceBook(AudienceStore(tmp_path / "aud", tmp_path / "audit.jsonl"), lambda: pop)
    result = book.insight_of(frame[buyers][["customer_id"]])
    orders = next(r for r in result.numeric if r.field == "orders_365d")
    assert orders.significant and orders.lift == pytest.approx(
        frame.orders_365d[buyers].mean() / frame.orders_365d.mean()
    )
    assert (
        orders.text.startswith(f"buys {orders.lift:.1f}".rstrip("0").rstrip("."))
        and "more often than the average customer" in orders.text
    )
    noise = next(r for r in result.numeric if r.field == "noise")
    assert not noise.significant  # independent of the selection: no more than noise
    # The aggregates (audience, and the rest derived from the population's) give scipy's Welch test exactly.
    welch = stats.ttest_ind(frame.noise[buyers], frame.noise[~buyers], equal_var=False).pvalue
    assert noise.p_value == pytest.approx(welch, rel=1e-6)
    assert not any(r.significant for r in result.categorical if r.field == "conversion_tier")
    assert result.top_traits[0] == orders.text
    assert numeric_text("spend_365d", 50.0, 100.0).startswith("spends 50% less than the average customer")


# ---- the store ------------------------------------------------------------------------------------------------


def test_audiences_are_stored_listed_exported_deleted_and_audited(population, tmp_path: Path):
    store = AudienceStore(tmp_path / "aud", tmp_path / "audit" / "audiences.jsonl")
    book = AudienceBook(store, lambda: population)
    record = book.create_filter(
        {"field": "churn_tier", "op": "eq", "value": "high"}, name="high", creator="key:abc"
    )
    assert record.size == 3 and record.by_tier["churn_tier"] == {"high": 3}
    assert (
        record.model_versions == {"churn": "3"}
        and record.snapshot == "2025-01-02"
        and record.creator == "key:abc"
    )
    folder = tmp_path / "aud" / record.id
    assert sorted(p.name for p in folder.iterdir()) == ["definition.json", "members.parquet"]
    assert [r.id for r in book.list()] == [record.id]
    csv = book.export(record.id, "csv", "key:def").decode()
    assert csv.splitlines() == ['"customer_id"', '"C0"', '"C1"', '"C7"']
    ids_record = book.create_ids(["C3", "C3", "ghost", "C9"], name="ids", creator="key:abc")
    assert ids_record.size == 2 and any("1 ids are not in the population" in w for w in ids_record.warnings)
    deleted = book.delete(record.id, "key:xyz")
    assert deleted.id == record.id and not folder.exists()
    with pytest.raises(AudienceNotFound):
        book.get(record.id)
    with pytest.raises(AudienceNotFound):
        book.export("../../etc", "csv", "key:def")
    trail = [(x["operation"], x["audience_id"], x["caller"]) for x in store.audit_trail()]
    assert trail == [
        ("create", record.id, "key:abc"),
        ("export", record.id, "key:def"),
        ("create", ids_record.id, "key:abc"),
        ("delete", record.id, "key:xyz"),
    ]
    with pytest.raises(AudienceError, match="empty"):
        book.create_filter({"field": "region", "op": "eq", "value": "nowhere"}, name="", creator="k")
    with pytest.raises(AudienceError, match="none of the 1 customer ids"):
        book.create_ids(["ghost"], name="", creator="k")


def test_holdout_export_and_outcomes_through_the_book(tmp_path: Path):
    n = 3_000
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {"customer_id": [f"H{i:05d}" for i in range(n)], "conversion_tier": rng.choice(["high", "low"], n)}
    )
    pop = write_population(tmp_path / "aud", "k", frame, snapshot="s", versions={})
    book = AudienceBook(AudienceStore(tmp_path / "aud", tmp_path / "audit.jsonl"), lambda: pop)
    record = book.create_ids(frame.customer_id[:2000].tolist(), name="h", creator="k", control_share=0.25)
    assert record.holdout is not None and record.holdout.stratify_by == "conversion_tier"
    assert abs(record.holdout.control - 500) <= 1
    export = lambda: pd.read_parquet(__import__("io").BytesIO(book.export(record.id, "parquet", "k")))  # noqa: E731
    first = export()
    assert list(first.columns) == ["customer_id", "group"] and export().equals(first)
    grown = book.add_members(record.id, frame.customer_id[2000:2600].tolist(), "k")
    assert grown.size == 2600 and abs(grown.holdout.control - 650) <= 2
    after = export().merge(first, on="customer_id", suffixes=("", "_before"))
    assert len(after) == 2000 and (after.group == after.group_before).all()
    control = set(export().query("group == 'control'").customer_id)
    converted = [c for i, c in enumerate(sorted(set(export().customer_id) - control)) if i % 5 == 0]  # 20 %
    converted += [c for i, c in enumerate(sorted(control)) if i % 10 == 0]  # 10 %
    report = book.record_outcomes(record.id, converted, "k")
    assert report.lift == pytest.approx(0.1, abs=0.01) and report.significant
    assert book.get(record.id).outcomes == report
    with pytest.raises(AudienceError, match="control_share"):
        book.make_holdout(record.id, 1.5, None, "k")
    with pytest.raises(AudienceError, match="cannot stratify by 'nope'"):
        book.make_holdout(record.id, 0.1, "nope", "k")

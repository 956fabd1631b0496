"""OneID (features/identity, features/synth_identity, portrait identity ...): real Splink on DuckDB.

One small synthetic population (noise on) trains the Splink model once per module; the hand-built
scenarios reuse that model, so no test trains again.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from features.identity import (
    IdentityConfig,
    IdentityIndex,
    StitchInputs,
    UnknownKind,
    follow,
    identity_dir,
    normalise_value,
    pairwise_scores,
    resolve_identifier,
    stitch,
    stitch_workspace,
    stitched_run,
    validate_identities,
)
from features.identity.normalise import kind_sql
from features.synth_identity import FIELDS, IdentityNoise, IdentitySynthConfig, generate_identities
from features.validate import ContractError
from portrait.settings import Settings
from tests.conftest import TINY_CUSTOMERS, TINY_EVENTS, TINY_TRANSACTIONS, write_table

PEOPLE = 1_500
T0 = datetime(2025, 1, 1, tzinfo=UTC)
COLUMNS = ("record_id", "source", *FIELDS)


def settings_for(home: Path, **overrides: object) -> Settings:
    return Settings(home=home, identity_threads=1, **overrides)


def identities_table(rows: list[dict[str, str | None]]) -> pa.Table:
    return pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in COLUMNS})


def run_stitch(settings: Settings, rows: list[dict[str, str | None]], model: Path | None, **kwargs: object):  # noqa: ANN201
    """Write ``rows`` as the identities input, validate and stitch them (reusing ``model`` when given)."""
    config = IdentityConfig.from_settings(settings)
    raw = settings.raw_dir / "identities.parquet"
    raw.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(identities_table(rows), raw)
    clean = settings.clean_dir / "identities.parquet"
    validate_identities(
        raw, config, clean_path=clean, quarantine_path=settings.quarantine_dir / "identities.parquet"
    )
    directory = identity_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    if model is not None and not (directory / "model.json").exists():
        shutil.copy(model, directory / "model.json")
    return stitch(StitchInputs(clean, None, directory), config, **kwargs)


def oneids(settings: Settings) -> dict[str, str]:
    table = pq.read_table(identity_dir(settings) / "oneid_map.parquet", columns=["record_id", "oneid"])
    return dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))


def merges(settings: Settings) -> list[dict]:
    return pq.read_table(identity_dir(settings) / "merges.parquet").to_pylist()


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A noisy synthetic population stitched once (this trains the model the other tests reuse)."""
    home = tmp_path_factory.mktemp("population")
    settings = settings_for(home)
    synthetic = generate_identities(PEOPLE, IdentitySynthConfig(seed=11))
    paths = synthetic.write(settings.raw_dir)
    config = IdentityConfig.from_settings(settings)
    clean = settings.clean_dir / "identities.parquet"
    validation = validate_identities(
        paths["identities"],
        config,
        clean_path=clean,
        quarantine_path=settings.quarantine_dir / "identities.parquet",
    )
    report = stitch(StitchInputs(clean, None, identity_dir(settings)), config, now=T0)
    return {
        "settings": settings,
        "synthetic": synthetic,
        "validation": validation,
        "report": report,
        "model": identity_dir(settings) / "model.json",
    }


# ---- normalisation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("email", "  Marie.Martin@Yahoo.FR ", "marie.martin@yahoo.fr"),
        ("email", "Marie.Martin+shop@GMail.com", "mariemartin@gmail.com"),
        ("email", "m.a.r.i.e@googlemail.com", "marie@gmail.com"),
        ("email", "marie.martin+x@yahoo.fr", "marie.martin+x@yahoo.fr"),  # only Gmail ignores dots and tags
        ("email", "not-an-address", None),
        ("email", "a@b", None),
        ("phone", "06 12 34 56 78", "+33612345678"),
        ("phone", "+33 (0)6 12 34 56 78", "+33612345678"),
        ("phone", "0033 6 12 34 56 78", "+33612345678"),
        ("phone", "612345678", "+33612345678"),
        ("phone", "+44 7700 900123", "+447700900123"),
        ("phone", "0000000000", None),
        ("phone", "12 34", None),
        ("device_id", "  AbC-123 ", "abc-123"),
        ("member_id", " 000123 ", "000123"),
        ("member_id", "   ", None),
    ],
)
def test_normalisation(kind: str, raw: str, expected: str | None) -> None:
    config = IdentityConfig.from_settings(Settings())
    assert normalise_value(kind, raw, config) == expected
    with duckdb.connect() as con:  # the SQL that normalises the stored values agrees
        assert con.execute(f"SELECT {kind_sql(kind, '$v', config)}", {"v": raw}).fetchone()[0] == expected


def test_python_and_sql_normalisation_agree_on_generated_values() -> None:
    """Lookups normalise in Python, the data in SQL: they must agree on every kind of value."""
    config = IdentityConfig.from_settings(Settings())
    records = generate_identities(300, IdentitySynthConfig(seed=5)).records
    odd = [
        " ",
        "\ta@b.cd",
        "a@@b.cd",
        "+",
        "(0)",
        "00",
        "0",
        "+0 12 34 56 78 9",
        "x y@z.fr",
        "É@x.fr",
        "06 12\u00a034",
    ]
    for kind in ("email", "phone", "device_id", "member_id"):
        values = [v for v in records.column(kind).to_pylist() if v] + odd
        with duckdb.connect() as con:
            con.register("vals", pa.table({"v": pa.array(values, pa.string())}))
            sql = [r[0] for r in con.execute(f"SELECT {kind_sql(kind, 'v', config)} FROM vals").fetchall()]
        assert [normalise_value(kind, v, config, hashed=False) for v in values] == sql, kind


def test_hashing_stores_salted_sha256_and_lookups_work_on_hashes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, identity_hash_identifiers=True, identity_hash_salt="pepper")
    config = IdentityConfig.from_settings(settings)
    rows = [
        {"record_id": "a", "source": "web", "email": "Ann.Lee@Gmail.com", "name": "Ann Lee"},
        {"record_id": "b", "source": "store", "email": "annlee+promo@gmail.com", "phone": "06 11 22 33 44"},
    ]
    run_stitch(settings, rows, model=None, now=T0)
    stored = pq.read_table(settings.clean_dir / "identities.parquet").column("email").to_pylist()
    assert all(len(v) == 64 and "@" not in v for v in stored)
    assert stored[0] == stored[1] == normalise_value("email", "ann.lee@gmail.com", config)
    ids = oneids(settings)
    assert ids["a"] == ids["b"]
    assert resolve_identifier(settings, "email", "ANNLEE@googlemail.com") == ids["a"]
    assert resolve_identifier(settings, "phone", "+33 6 11 22 33 44") == ids["a"]


# ---- validation ---------------------------------------------------------------------------------------


def test_validation_quarantines_unusable_rows_and_clears_bad_values(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    config = IdentityConfig.from_settings(settings)
    rows = [
        {"record_id": "r1", "source": "web", "email": "a@b.fr", "phone": "12", "birth_date": "1990-02-30"},
        {"record_id": None, "source": "web", "email": "c@d.fr"},
        {"record_id": "r2", "source": " ", "email": "c@d.fr"},
        {"record_id": "r3", "source": "web", "email": "not an e-mail"},
        {"record_id": "r1", "source": "web", "email": "a@b.fr", "phone": "12", "birth_date": "1990-02-30"},
        {"record_id": "r1", "source": "app", "email": "x@y.fr"},
        {"record_id": "r4", "source": "store", "name": "Zoé Roy", "birth_date": "2999-01-01"},
    ]
    raw = tmp_path / "identities.parquet"
    pq.write_table(identities_table(rows), raw)
    report = validate_identities(
        raw, config, clean_path=tmp_path / "c.parquet", quarantine_path=tmp_path / "q.parquet", now=T0
    )
    assert (report.rows_read, report.accepted, report.quarantined) == (7, 2, 5)
    assert report.by_reason == {
        "missing_record_id": 1,
        "missing_source": 1,
        "no_identifier": 1,
        "duplicate": 1,
        "duplicate_record_id": 1,
    }
    assert report.cleared == {"invalid_phone": 1, "invalid_birth_date": 2}
    clean = pq.read_table(tmp_path / "c.parquet").to_pylist()
    assert [
        (r["record_id"], r["phone"], r["birth_date"], r["first_name"], r["last_name"]) for r in clean
    ] == [
        ("r1", None, None, None, None),
        ("r4", None, None, "zoe", "roy"),
    ]
    quarantine = pq.read_table(tmp_path / "q.parquet").to_pylist()
    assert sorted(q["source_row"] for q in quarantine) == [1, 2, 3, 4, 5]
    with pytest.raises(ContractError, match="missing required column"):
        pq.write_table(pa.table({"record_id": ["x"]}), raw)
        validate_identities(
            raw, config, clean_path=tmp_path / "c.parquet", quarantine_path=tmp_path / "q.parquet"
        )


# ---- guards --------------------------------------------------------------------------------------------


def person(i: int, **fields: str | None) -> dict[str, str | None]:
    first = (
        "anna",
        "boris",
        "chloe",
        "dimitri",
        "elena",
        "farid",
        "gwen",
        "hugo",
        "ines",
        "jonas",
        "kim",
        "lou",
    )
    row: dict[str, str | None] = {
        "record_id": f"p{i}",
        "source": "store",
        "email": f"{first[i % len(first)]}.{i}@mail.fr",
        "name": f"{first[i % len(first)]} Surname{i}",
        "birth_date": f"19{50 + i}-0{1 + i % 9}-1{i % 9}",
        "postcode": f"{10000 + i}",
    }
    row.update(fields)
    return row


def test_shared_identifier_guard(tmp_path: Path, population: dict) -> None:
    """A tablet's device id and a placeholder phone on many people link nobody; an e-mail on six records of
    one person still links them (people are counted, not records)."""
    settings = settings_for(tmp_path)
    rows = [person(i, device_id="SHOP-TABLET-1") for i in range(8)]
    rows += [person(10 + i, phone="06 00 00 00 00") for i in range(7)]
    rows += [
        {"record_id": f"same{k}", "source": "web", "email": "solo.person@mail.fr", "name": "Solo Person"}
        for k in range(6)
    ]
    report = run_stitch(settings, rows, population["model"], now=T0)
    ids = oneids(settings)
    assert len({ids[f"p{i}"] for i in range(8)}) == 8
    assert len({ids[f"p{10 + i}"] for i in range(7)}) == 7
    assert len({ids[f"same{k}"] for k in range(6)}) == 1
    assert report.blocked_values == 2
    assert {(e.kind, e.value, e.people) for e in report.blocked_examples} == {
        ("device_id", "shop-tablet-1", 8),
        ("phone", "+33600000000", 7),
    }
    assert resolve_identifier(settings, "phone", "0600000000") is None
    assert resolve_identifier(settings, "email", "solo.person@mail.fr") == ids["same0"]


def test_recycled_phone_does_not_merge_two_people(tmp_path: Path, population: dict) -> None:
    settings = settings_for(tmp_path)
    rows = [
        person(1, record_id="old", phone="06 98 76 54 32"),
        person(2, record_id="new", phone="+33 6 98 76 54 32"),
    ]
    report = run_stitch(settings, rows, population["model"], now=T0)
    ids = oneids(settings)
    assert ids["old"] != ids["new"]
    assert report.conflicted_values == 1
    unguarded = settings_for(tmp_path / "unguarded", identity_conflict_guard=False)
    run_stitch(unguarded, rows, population["model"], now=T0)
    assert len(set(oneids(unguarded).values())) == 1


def test_cluster_size_guard_reports_and_keeps_strong_links_only(tmp_path: Path, population: dict) -> None:
    """Twelve records with one name, birth date and postcode but nothing strong in common would be one
    person of 12 records: over the limit of 10, so reported and kept apart (the two strong pairs stay)."""
    settings = settings_for(tmp_path, identity_max_cluster_records=10)
    rows = [
        {
            "record_id": f"twin{k:02d}",
            "source": "crm",
            "email": f"twin{k // 2}@mail.fr" if k < 4 else f"twin{k}@mail.fr",
            "name": "Ottilie Vandersteen",
            "birth_date": "1971-03-09",
            "postcode": "33000",
        }
        for k in range(12)
    ]
    report = run_stitch(settings, rows, population["model"], now=T0)
    ids = oneids(settings)
    assert len(set(ids.values())) == 10  # 2 strong pairs + 8 singles
    assert (
        ids["twin00"] == ids["twin01"] and ids["twin02"] == ids["twin03"] and ids["twin00"] != ids["twin02"]
    )
    assert len(report.oversized_clusters) == 1
    assert report.oversized_clusters[0].records == 12 and report.oversized_clusters[0].strong_components == 10
    # under a higher limit the same records are one person
    roomy = settings_for(tmp_path / "roomy", identity_max_cluster_records=20)
    run_stitch(roomy, rows, population["model"], now=T0)
    assert len(set(oneids(roomy).values())) == 1


# ---- stable ids, merges, lookups ------------------------------------------------------------------------


def test_oneids_are_stable_and_merges_are_logged(tmp_path: Path, population: dict) -> None:
    settings = settings_for(tmp_path)
    base = [
        person(1, record_id="a1", phone="0611111111"),
        person(1, record_id="a2", email=None, phone="+33 6 11 11 11 11", name=None),
        person(2, record_id="b1", member_id="M-2"),
        person(3, record_id="c1", member_id="M-3", email="carol@mail.fr"),
    ]
    first = run_stitch(settings, base, population["model"], now=T0)
    ids1 = oneids(settings)
    assert first.mode == "full" and not first.model_trained
    assert ids1["a1"] == ids1["a2"] and len(set(ids1.values())) == 3

    again = run_stitch(settings, base, population["model"], now=T0)
    assert again.mode == "unchanged" and oneids(settings) == ids1

    # new records: one joins b and c (member id of b, e-mail of c), one is a new person
    more = [
        *base,
        person(2, record_id="bc", member_id="M-2", email="carol@mail.fr", name=None, birth_date=None),
    ]
    more.append(person(9, record_id="z1"))
    later = datetime(2025, 2, 1, tzinfo=UTC)
    incremental = run_stitch(settings, more, population["model"], now=later)
    ids2 = oneids(settings)
    assert incremental.mode == "incremental" and incremental.new_records == 2
    assert ids2["a1"] == ids1["a1"] and ids2["a2"] == ids1["a2"]
    survivor, retired = sorted([ids1["b1"], ids1["c1"]])
    assert ids2["b1"] == ids2["c1"] == ids2["bc"] == survivor
    assert ids2["z1"] not in ids1.values()
    log = merges(settings)
    assert [(m["old_oneid"], m["new_oneid"], m["event"], m["reason"]) for m in log] == [
        (retired, survivor, "merge", "strong identifier")
    ]
    assert log[0]["changed_at"] == later
    assert follow(settings, retired) == survivor and follow(settings, survivor) == survivor
    assert IdentityIndex.load(settings).follow(retired) == survivor

    # a full run over the same records changes nobody's OneID
    full = run_stitch(settings, more, population["model"], full=True, now=later)
    assert oneids(settings) == ids2 and full.merged_oneids == 0 and full.split_oneids == 0
    state = json.loads((identity_dir(settings) / "state.json").read_text())
    assert state["runs"] == 3 and state["next_oneid"] == 5  # the unchanged run wrote nothing


def test_lookup_by_any_identifier(tmp_path: Path, population: dict) -> None:
    settings = settings_for(tmp_path)
    rows = [
        person(
            1, record_id="web-1", source="web", email="Lou.Nguyen@Gmail.com", phone=None, device_id="DEV-9"
        ),
        person(
            1,
            record_id="store-1",
            email="lounguyen+receipts@gmail.com",
            phone="06 55 44 33 22",
            member_id="4242",
        ),
        person(2, record_id="other", device_id="dev-9"),  # a shared device: a weak id on two people
    ]
    run_stitch(settings, rows, population["model"], now=T0)
    ids = oneids(settings)
    lou = ids["web-1"]
    assert ids["store-1"] == lou != ids["other"]
    index = IdentityIndex.load(settings)
    for kind, value in [
        ("email", "lou.nguyen@googlemail.com"),
        ("phone", "+33 (0)6 55 44 33 22"),
        ("phone", "0033655443322"),
        ("member_id", " 4242 "),
        ("record_id", "store-1"),
        ("customer_id", "web-1"),
    ]:
        assert resolve_identifier(settings, kind, value) == lou, (kind, value)
        assert index.resolve(kind, value) == lou, (kind, value)
    assert index.resolve("device_id", "DEV-9") is None  # two people: ambiguous
    assert index.resolve_many("phone", ["0655443322", "0700000001", None]) == [lou, None, None]
    with pytest.raises(UnknownKind):
        index.resolve("fax", "1")


# ---- quality on synthetic truth ---------------------------------------------------------------------------


def test_synthetic_identities_are_reproducible_and_carry_their_truth() -> None:
    a = generate_identities(50, IdentitySynthConfig(seed=1))
    b = generate_identities(50, IdentitySynthConfig(seed=1))
    assert a.records.equals(b.records) and a.truth.equals(b.truth)
    assert a.records.column("record_id").to_pylist() == a.truth.column("record_id").to_pylist()
    assert set(a.truth.column("person_id").to_pylist()) == {f"P{i:07d}" for i in range(1, 51)}
    assert not a.records.equals(generate_identities(50, IdentitySynthConfig(seed=2)).records)


def test_small_splink_run_precision_and_recall(population: dict) -> None:
    settings, truth = population["settings"], population["synthetic"].truth
    scores = pairwise_scores(identity_dir(settings) / "oneid_map.parquet", truth)
    report = population["report"]
    assert report.model_trained and report.blocked_values > 0 and report.probabilistic_merges > 0
    # deterministic-only baseline: strong links alone (probabilistic links switched off)
    baseline = settings_for(settings.home / "baseline", identity_probabilistic=False)
    run_stitch(baseline, population["synthetic"].records.to_pylist(), population["model"], now=T0)
    base = pairwise_scores(identity_dir(baseline) / "oneid_map.parquet", truth)
    assert scores.precision >= 0.98, scores
    assert scores.recall >= 0.93, scores
    assert scores.recall >= base.recall + 0.03, (scores, base)


def test_noise_free_identities_link_deterministically(tmp_path: Path, population: dict) -> None:
    synthetic = generate_identities(300, IdentitySynthConfig(seed=4, noise=IdentityNoise.none()))
    settings = settings_for(tmp_path)
    run_stitch(settings, synthetic.records.to_pylist(), population["model"], now=T0)
    scores = pairwise_scores(identity_dir(settings) / "oneid_map.parquet", synthetic.truth)
    assert scores.precision == 1.0 and scores.recall >= 0.95, scores


# ---- the workspace step and the CLI ----------------------------------------------------------------------


def test_stitch_workspace_keys_clean_tables_by_oneid(tiny_clean: Settings, population: dict) -> None:
    """Customers A and B are one person (two records sharing a phone); C and D have no identity record."""
    settings = tiny_clean
    rows = [
        {"record_id": "A", "source": "web", "email": "a@x.fr", "phone": "0612121212", "name": "Ada Byron"},
        {"record_id": "B", "source": "store", "phone": "+33612121212", "name": "Ada Byron"},
    ]
    pq.write_table(identities_table(rows), settings.raw_dir / "identities.parquet")
    identity_dir(settings).mkdir(parents=True)
    shutil.copy(population["model"], identity_dir(settings) / "model.json")
    report = stitch_workspace(settings, now=T0)
    ids = oneids(settings)
    assert ids["A"] == ids["B"] and len({ids["A"], ids["C"], ids["D"]}) == 3
    assert report.records_without_identity == 2
    clean = {
        t: pq.read_table(settings.clean_dir / f"{t}.parquet") for t in ("customers", "transactions", "events")
    }
    customers = {r["customer_id"]: r for r in clean["customers"].to_pylist()}
    assert set(customers) == {ids["A"], ids["C"], ids["D"]}
    ada = customers[ids["A"]]
    assert ada["signup_ts"] == datetime(2024, 1, 1, 12, tzinfo=UTC) and ada["region"] == "north"
    assert clean["transactions"].num_rows == 7 and set(
        clean["transactions"].column("customer_id").to_pylist()
    ) == {
        ids["A"],
        ids["D"],
    }
    assert report.rewritten == {"customers": 3, "transactions": 7, "events": 8}
    assert stitched_run(settings.clean_dir / "customers.parquet") == report.run_id
    # a second run reads the tables as validated (kept aside), never a OneID as a record id
    second = stitch_workspace(settings, now=T0)
    assert second.mode == "unchanged" and oneids(settings) == ids
    assert set(
        pq.read_table(settings.clean_dir / "customers.parquet").column("customer_id").to_pylist()
    ) == set(customers)


def test_cli_answers_bad_input_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from portrait.cli import app

    monkeypatch.setenv("PORTRAIT_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    cases = [
        (["identity", "stitch"], 2, "portrait data validate"),
        (["identity", "lookup", "email", "a@b.fr"], 2, "no stitching run yet"),
        (["identity", "follow", "nope"], 2, "is not a OneID"),
        (["identity", "synth"], 2, "portrait data synth"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
    # validated tables, but an identities file that is not Parquet
    settings = Settings(home=tmp_path)
    for table, rows in (
        ("customers", TINY_CUSTOMERS),
        ("transactions", TINY_TRANSACTIONS),
        ("events", TINY_EVENTS),
    ):
        write_table(settings.clean_dir / f"{table}.parquet", table, rows)
    (settings.raw_dir / "identities.parquet").write_text("record_id,source\n")
    result = runner.invoke(app, ["identity", "stitch"])
    assert result.exit_code == 2 and "cannot be read" in result.output and "Traceback" not in result.output
    monkeypatch.setenv("PORTRAIT_IDENTITY_MAX_PEOPLE_PER_VALUE", "0")
    result = runner.invoke(app, ["identity", "stitch"])
    assert result.exit_code == 2 and "identity_max_people_per_value" in result.output


def test_incremental_run_links_held_back_records_like_a_full_run(tmp_path: Path, population: dict) -> None:
    """The incremental path (only the records that can meet a new one are read into the model) finds
    what a full run finds; customer ids without an identity record become records in both modes."""
    settings = settings_for(tmp_path)
    records = population["synthetic"].records.to_pylist()
    held = set(range(0, len(records), 20))  # 5 % of the records arrive later
    customers = tmp_path / "customers.parquet"
    pq.write_table(pa.table({"customer_id": ["lonely-1", records[1]["record_id"]]}), customers)
    config = IdentityConfig.from_settings(settings)
    directory = identity_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(population["model"], directory / "model.json")
    clean = settings.clean_dir / "identities.parquet"
    for rows, now in (
        ([r for i, r in enumerate(records) if i not in held], T0),
        (records, T0.replace(month=2)),
    ):
        raw = settings.raw_dir / "identities.parquet"
        raw.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(identities_table(rows), raw)
        validate_identities(
            raw, config, clean_path=clean, quarantine_path=settings.quarantine_dir / "q.parquet"
        )
        report = stitch(StitchInputs(clean, customers, directory), config, now=now)
        assert report.records_without_identity == 1
    assert report.mode == "incremental" and report.new_records == len(held)
    assert oneids(settings)["lonely-1"] not in {v for k, v in oneids(settings).items() if k != "lonely-1"}
    truth = population["synthetic"].truth
    incremental = pairwise_scores(directory / "oneid_map.parquet", truth)
    full = pairwise_scores(identity_dir(population["settings"]) / "oneid_map.parquet", truth)
    assert incremental.precision >= 0.98, incremental
    assert incremental.recall >= full.recall - 0.01, (incremental, full)

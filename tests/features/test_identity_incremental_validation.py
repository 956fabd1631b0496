"""Incremental identity validation: unchanged raw rows reuse their previous clean rows (features/identity/normalise).

Every test compares an incremental validation with a validation from scratch of the same input: same
clean rows and values, same quarantine, same counts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.identity import IdentityConfig, IdentityValidation, validate_identities
from features.identity import normalise as normalise_module
from features.identity.normalise import reuse_paths
from features.synth_identity import FIELDS, IdentitySynthConfig, generate_identities
from features.validate import ContractError
from portrait.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
T1 = datetime(2025, 1, 1, tzinfo=UTC)
COLUMNS = ("record_id", "source", *FIELDS)
COUNTS = ("rows_read", "accepted", "quarantined", "by_reason", "cleared", "ignored_columns", "hashed")

Row = dict[str, str | None]


def table_of(rows: list[Row]) -> pa.Table:
    return pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in COLUMNS})


def config_for(**overrides: Any) -> IdentityConfig:
    return IdentityConfig.from_settings(Settings(identity_threads=1, **overrides))


def validate(
    source: Path, out: Path, config: IdentityConfig, now: datetime, *, reuse: bool = True
) -> IdentityValidation:
    return validate_identities(
        source,
        config,
        clean_path=out / "clean" / "identities.parquet",
        quarantine_path=out / "quarantine" / "identities.parquet",
        now=now,
        reuse=reuse,
    )


def reusable(report: IdentityValidation) -> int:
    """Rows the next validation of the same input reuses: the accepted ones whose birth date was not cleared."""
    return report.accepted - report.cleared.get("invalid_birth_date", 0)


def outputs(out: Path) -> tuple[pa.Table, pa.Table]:
    return (
        pq.read_table(out / "clean" / "identities.parquet"),
        pq.read_table(out / "quarantine" / "identities.parquet"),
    )


def assert_same_as_from_scratch(
    source: Path, out: Path, report: IdentityValidation, config: IdentityConfig, now: datetime, scratch: Path
) -> None:
    """``out`` holds what a validation from scratch of ``source`` writes, and ``report`` says what it says."""
    full = validate(source, scratch, config, now, reuse=False)
    assert full.reused == 0
    assert {k: getattr(report, k) for k in COUNTS} == {k: getattr(full, k) for k in COUNTS}
    clean, quarantine = outputs(out)
    full_clean, full_quarantine = outputs(scratch)
    assert clean.schema == full_clean.schema
    assert clean.to_pylist() == full_clean.to_pylist()
    assert quarantine.schema == full_quarantine.schema
    assert quarantine.to_pylist() == full_quarantine.to_pylist()


@pytest.fixture(scope="module")
def records() -> list[Row]:
    return generate_identities(500, IdentitySynthConfig(seed=21)).records.to_pylist()


def base_and_next(records: list[Row], future: str) -> tuple[list[Row], list[Row], int]:
    """A base input, and the next one: ~1 % rows added, a few changed or removed (incl. the first of a
    duplicate pair and of a record id pair, so that the second is accepted now); returns (base, next, added)."""
    held = records[::100]  # ~1 % arrive with the next input
    kept = [r for r in records if r not in held]
    special: list[Row] = [
        {"record_id": "dup-1", "source": "web", "email": "Dup.One@Example.com", "name": "Dup One"},
        {"record_id": "dup-1", "source": "web", "email": "Dup.One@Example.com", "name": "Dup One"},
        {"record_id": "rid-1", "source": "web", "email": "first@example.com"},
        {"record_id": "rid-1", "source": "app", "email": "second@example.com"},
        {"record_id": "future-bd", "source": "crm", "name": "Ann Future", "birth_date": future},
        {"record_id": "bad-phone", "source": "store", "phone": "12", "name": "Bo Phone"},
        {"record_id": "bad-email", "source": "store", "email": "no at sign", "member_id": "M-77"},
        {"record_id": None, "source": "web", "email": "nobody@example.com"},
        {"record_id": "no-id", "source": "web"},
    ]
    base = kept[:200] + special + kept[200:]
    nxt = [dict(r) for r in base]
    # Removed: the first of the duplicate pair and of the record id pair, and three ordinary rows.
    del nxt[200 + 2]
    del nxt[200]
    del nxt[10:13]
    # Changed: an e-mail, a name, a phone made invalid, a record id blanked, a row made a duplicate.
    nxt[20]["email"] = "changed.address@gmail.com"
    nxt[21]["name"] = "Zoé  Renamed-Person"
    nxt[22]["phone"] = "0"
    nxt[23]["record_id"] = "  "
    nxt[24] = dict(nxt[30])
    # Added: the held-back ~1 %, part of them before the base rows, part after.
    half = len(held) // 2
    nxt = held[:half] + nxt + held[half:]
    return base, nxt, len(held)


@pytest.mark.parametrize(
    ("hashing", "step"),
    [(False, timedelta(days=30)), (True, timedelta(days=30)), (False, timedelta(days=-30))],
    ids=["plain-later", "hashed-later", "plain-earlier"],
)
def test_incremental_validation_equals_a_full_one(
    tmp_path: Path, records: list[Row], hashing: bool, step: timedelta
) -> None:
    config = (
        config_for(identity_hash_identifiers=True, identity_hash_salt="pepper") if hashing else config_for()
    )
    t2 = T1 + step
    # A birth date valid at one validation date and in the future at the other: it decides differently.
    future = (max(T1, t2) - timedelta(days=10)).date().isoformat()
    base, nxt, added = base_and_next(records, future)
    out = tmp_path / "workspace"
    (tmp_path / "raw").mkdir()
    pq.write_table(table_of(base), tmp_path / "raw" / "base.parquet")
    first = validate(tmp_path / "raw" / "base.parquet", out, config, T1)
    assert (
        first.reused == 0
        and first.by_reason["duplicate"] == 1
        and first.by_reason["duplicate_record_id"] == 1
    )
    # The next input is a folder of two files (rows move between files and positions).
    folder = tmp_path / "raw" / "next"
    folder.mkdir()
    pq.write_table(table_of(nxt[:300]), folder / "part-0.parquet")
    pq.write_table(table_of(nxt[300:]), folder / "part-1.parquet")

    second = validate(folder, out, config, t2)

    # Normalised again: the added rows, 4 changed ones, 3 quarantined in the base for their own values or
    # as a second record id (the second of the duplicate pair has the key of the first: it is reused), and
    # rows whose birth date was cleared (future-bd when the date moves on: it depends on the date).
    assert second.rows_read == len(nxt)
    fresh = added + 4 + 3 + (step > timedelta(0))
    most = added + 4 + first.cleared.get("invalid_birth_date", 0) + first.quarantined
    assert len(nxt) - most <= second.reused <= len(nxt) - fresh
    assert_same_as_from_scratch(folder, out, second, config, t2, tmp_path / "scratch")
    clean = {r["record_id"]: r for r in outputs(out)[0].to_pylist()}
    assert clean["dup-1"]["email"] is not None and "rid-1" in clean  # the second rows are accepted now
    assert (clean["future-bd"]["birth_date"] is not None) == (step > timedelta(0))
    assert second.by_reason.get("duplicate") == 1 and "duplicate_record_id" not in second.by_reason
    if hashing:
        assert all(v is None or len(v) == 64 for v in outputs(out)[0].column("email").to_pylist())


def test_a_third_run_on_an_unchanged_input_reuses_every_accepted_row(
    tmp_path: Path, records: list[Row]
) -> None:
    config = config_for()
    raw = tmp_path / "identities.parquet"
    pq.write_table(table_of(records), raw)
    first = validate(raw, tmp_path / "w", config, T1)
    second = validate(raw, tmp_path / "w", config, T1)
    assert second.reused == reusable(first) > 0.95 * first.rows_read
    assert_same_as_from_scratch(raw, tmp_path / "w", second, config, T1, tmp_path / "scratch")


@pytest.mark.parametrize(
    "change",
    [
        "phone_country_code",
        "email_aliases",
        "hash_salt",
        "kinds",
        "normaliser_version",
        "clean_rewritten",
        "rows_corrupt",
        "clean_corrupt",
        "reuse_off",
    ],
)
def test_what_normalisation_depends_on_invalidates_reuse(
    tmp_path: Path,
    records: list[Row],
    change: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = tmp_path / "identities.parquet"
    rows = records[:300] + [
        {"record_id": "uk", "source": "web", "phone": "07700 900123", "email": "A@Mail.example"}
    ]
    pq.write_table(table_of(rows), raw)
    config = config_for(identity_hash_identifiers=True, identity_hash_salt="pepper")
    out = tmp_path / "w"
    first = validate(raw, out, config, T1)
    assert validate(raw, out, config, T1).reused == reusable(first)  # the control: everything reused
    reuse = True
    clean_path = out / "clean" / "identities.parquet"
    if change == "phone_country_code":
        config = config_for(
            identity_hash_identifiers=True, identity_hash_salt="pepper", identity_phone_country_code="44"
        )
    elif change == "email_aliases":
        config = config_for(
            identity_hash_identifiers=True,
            identity_hash_salt="pepper",
            identity_email_domain_aliases={"mail.example": "gmail.com"},
        )
    elif change == "hash_salt":
        config = config_for(identity_hash_identifiers=True, identity_hash_salt="salt2")
    elif change == "kinds":
        config = config_for(
            identity_hash_identifiers=True,
            identity_hash_salt="pepper",
            identity_kinds={"email": "strong", "phone": "strong", "member_id": "strong", "device_id": "weak"},
        )
    elif change == "normaliser_version":
        monkeypatch.setattr(normalise_module, "NORMALISER_VERSION", normalise_module.NORMALISER_VERSION + 1)
    elif change == "clean_rewritten":  # someone edited the clean output: it must not be trusted
        table = pq.read_table(clean_path)
        names = table.column("first_name").to_pylist()
        pq.write_table(
            table.set_column(2, "first_name", pa.array(["edited"] * len(names), pa.string())), clean_path
        )
    elif change in ("rows_corrupt", "clean_corrupt"):  # damaged, though size and time still match
        damaged = reuse_paths(clean_path)[0] if change == "rows_corrupt" else clean_path
        status = damaged.stat()
        damaged.write_bytes(b"x" * status.st_size)
        os.utime(damaged, ns=(status.st_atime_ns, status.st_mtime_ns))
    else:
        reuse = False

    with caplog.at_level(logging.INFO, logger="features.identity.normalise"):
        again = validate(raw, out, config, T1, reuse=reuse)

    assert again.reused == 0
    if change.endswith("_corrupt"):  # trusted by the signature, then failed to read: a full run instead
        assert any(r.levelno == logging.WARNING and "not reused" in r.getMessage() for r in caplog.records)
    assert_same_as_from_scratch(raw, out, again, config, T1, tmp_path / "scratch")
    assert "edited" not in outputs(out)[0].column("first_name").to_pylist()
    assert validate(raw, out, config, T1).reused == reusable(again)  # and the next run reuses again


def test_reuse_files_hold_no_identifier_or_salt(tmp_path: Path, records: list[Row]) -> None:
    raw = tmp_path / "identities.parquet"
    pq.write_table(table_of(records[:200]), raw)
    config = config_for(identity_hash_identifiers=True, identity_hash_salt="pepper-secret")
    validate(raw, tmp_path / "w", config, T1)
    rows_path, signature_path = reuse_paths(tmp_path / "w" / "clean" / "identities.parquet")
    keys = pq.read_table(rows_path)
    assert keys.column_names == ["k_hi", "k_lo", "pos", *(f"has_{k}" for k in config.kinds), "has_birth_date"]
    assert (
        keys.num_rows > 0
        and len(set(zip(keys["k_hi"].to_pylist(), keys["k_lo"].to_pylist(), strict=True))) == keys.num_rows
    )
    text = signature_path.read_text(encoding="utf-8")
    assert "pepper-secret" not in text
    saved = json.loads(text)
    assert saved["signature"]["config"]["hash"] == config.hash_fingerprint
    # A new salt on every validation from scratch: keys cannot be compared across workspaces or runs.
    validate(raw, tmp_path / "w", config, T1, reuse=False)
    assert json.loads(signature_path.read_text(encoding="utf-8"))["salt"] != saved["salt"]
    assert pq.read_table(rows_path)["k_hi"].to_pylist() != keys["k_hi"].to_pylist()


def test_csv_input_is_validated_incrementally_too(tmp_path: Path, records: list[Row]) -> None:
    config = config_for()
    base, nxt, added = base_and_next(records, "1990-01-01")
    raw = tmp_path / "identities.csv"
    table_of(base).to_pandas().to_csv(raw, index=False)
    validate(raw, tmp_path / "w", config, T1)
    table_of(nxt).to_pandas().to_csv(raw, index=False)
    report = validate(raw, tmp_path / "w", config, T1)
    assert len(nxt) - added - 30 <= report.reused <= len(nxt) - added
    assert_same_as_from_scratch(raw, tmp_path / "w", report, config, T1, tmp_path / "scratch")


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_failed_validation_leaves_the_previous_output_and_reuse(tmp_path: Path, records: list[Row]) -> None:
    raw = tmp_path / "identities.parquet"
    pq.write_table(table_of(records[:200]), raw)
    config = config_for()
    out = tmp_path / "w"
    first = validate(raw, out, config, T1)
    before = _files(out)
    assert any(name.endswith(".reuse.json") for name in before)
    pq.write_table(table_of([{"record_id": None, "source": "web", "email": "a@b.fr"}]), raw)
    with pytest.raises(ContractError, match="no usable row"):
        validate(raw, out, config, T1)
    assert _files(out) == before  # nothing published, no temporary file left
    pq.write_table(table_of(records[:200]), raw)
    assert validate(raw, out, config, T1).reused == reusable(first)


KILLED_RUN = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from pathlib import Path
    from features.identity import IdentityConfig, validate_identities
    from portrait.settings import Settings

    out = Path(sys.argv[2])
    validate_identities(
        Path(sys.argv[1]),
        IdentityConfig.from_settings(Settings(identity_threads=1)),
        clean_path=out / "clean" / "identities.parquet",
        quarantine_path=out / "quarantine" / "identities.parquet",
        now=datetime.fromisoformat(sys.argv[3]),
    )
    """
)


@pytest.mark.parametrize("moment", ["writing", "publishing"])
def test_a_killed_validation_leaves_a_usable_output(tmp_path: Path, records: list[Row], moment: str) -> None:
    """SIGKILL while the outputs are written (a temporary file exists) or published (the signature is
    gone): the clean output is the previous or the new one, whole, and the next run's output is right."""
    base = records * 40  # ~50k rows: the write takes long enough to be caught
    base = [{**r, "record_id": f"{r['record_id']}-{i // len(records)}"} for i, r in enumerate(base)]
    raw = tmp_path / "identities.parquet"
    pq.write_table(table_of(base), raw)
    out = tmp_path / "w"
    config = config_for()
    validate(raw, out, config, T1)
    previous = outputs(out)[0]
    clean_path = out / "clean" / "identities.parquet"
    signature_path = reuse_paths(clean_path)[1]
    nxt = base + [{**r, "record_id": f"{r['record_id']}-new"} for r in records[:500]]
    pq.write_table(table_of(nxt), raw)

    def caught() -> bool:
        if moment == "writing":
            return any(p.name.endswith(".tmp") for p in clean_path.parent.iterdir())
        return not signature_path.exists()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(raw), str(out), T1.isoformat()], cwd=ROOT, env=env
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and not caught() and time.monotonic() < deadline:
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert process.returncode == (-signal.SIGKILL if moment == "writing" else process.returncode)
    assert process.returncode in (0, -signal.SIGKILL)

    clean = pq.read_table(clean_path)  # whole: readable
    validate(raw, tmp_path / "scratch", config, T1, reuse=False)
    assert clean.equals(previous) or clean.equals(outputs(tmp_path / "scratch")[0])
    report = validate(raw, out, config, T1)
    assert_same_as_from_scratch(raw, out, report, config, T1, tmp_path / "scratch")

"""SIGKILL of ``portrait score`` mid-run, and links planted at ``--out``.

On a copy of the session's trained workspace (``served_home``), each command runs in a subprocess as a user
runs it. A killed command must leave the previous outputs byte for byte, its temporary files must be gone
once the next command has started, and that next command must succeed. The helpers and the validate /
disk / database faults are in ``tests/test_faults.py``; a killed ``portrait train`` (its files and its
registry entries) in ``tests/training/test_crash_safe.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.test_faults import digests, kill_when, portrait, temporaries


@pytest.fixture
def home(served_home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(served_home, copy, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    return copy


def ok(result) -> str:  # noqa: ANN001 - subprocess.CompletedProcess[str]
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_score_and_lookalike_never_write_through_links_and_a_killed_score_leaves_the_tags_whole(
    home: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "export" / "tags.parquet"
    audience = out.parent / "audience.csv"
    out.parent.mkdir()
    finals = ["tags.parquet", "tags.csv", "audience.csv"]
    fixed = [
        ".tags.parquet.tmp",
        "tags.parquet.tmp",
        ".tags.csv.tmp",
        "tags.csv.partial",
        ".audience.csv.tmp",
    ]
    for name in finals + fixed:  # links where an output or a fixed temporary name would go
        (out.parent / name).symlink_to(victim)
    score = ["score", "--out", str(out), "--csv"]

    first = portrait(home, *score)
    ok(first)
    assert "nanobind" not in first.stderr  # no DuckDB object outlives the interpreter (frozen ones are freed)
    before = digests(out.parent)
    assert set(before) == {"tags.parquet", "tags.csv"} and victim.read_text() == "precious"

    # Killed while a temporary output sits beside the final ones (the Parquet or the CSV being written).
    # The write takes milliseconds: a run that ends before the watcher sees it, or renames its output between
    # the watcher's look and the kill (no temporary left), is run again.
    pid, litter = None, []
    for _ in range(8):
        before = digests(out.parent)
        pid = kill_when(home, score, lambda: bool(temporaries(out.parent)))
        litter = temporaries(out.parent, home / "data") if pid is not None else []
        if litter:
            break
    assert pid is not None and litter, "score always finished before the kill"
    assert digests(out.parent) == before  # no partial file under a final name
    assert all(f".{pid}-" in p.name for p in litter)

    # The next command (lookalike, writing in the same folder) removes the litter as it starts.
    seed = tmp_path / "seed.csv"
    pd.read_csv(out.with_suffix(".csv"))["customer_id"].head(30).to_frame().to_csv(seed, index=False)
    ok(portrait(home, "lookalike", "--seed", str(seed), "--out", str(audience), "--size", "50"))
    assert temporaries(out.parent, home / "data") == []
    assert len(pd.read_csv(audience)) == 50

    ok(portrait(home, *score))  # and the next score succeeds
    tags, csv = pq.read_table(out).to_pandas(), pd.read_csv(out.with_suffix(".csv"))
    assert len(tags) == len(csv) > 0 and tags["customer_id"].tolist() == csv["customer_id"].tolist()
    assert victim.read_text() == "precious" and all((out.parent / n).is_symlink() for n in fixed)
    for name in finals:  # a link at an output is replaced by the file, never written through
        assert not (out.parent / name).is_symlink() and (out.parent / name).stat().st_size > 0
    assert temporaries(out.parent, home / "data") == []

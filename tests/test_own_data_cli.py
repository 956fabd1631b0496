"""A team's own data from the command line: the real ``portrait`` CLI on ``examples/own_data``.

Every command runs in a subprocess from the repository root, as the README's "Your own data" section
shows it, with ``PORTRAIT_HOME`` in a temporary folder and no other ``PORTRAIT_*`` setting inherited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from portrait import catalogue
from tests.conftest import TINY_CUSTOMERS, TINY_TRANSACTIONS, write_table

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "examples/own_data/mapping.yaml"
BATCH = "transactions=examples/own_data/orders_batch.csv"
HORIZONS = {"PORTRAIT_MODELS__CLV__HORIZON_DAYS": "180"}  # two years of history: 180 * 2 + 60 days fit


def portrait(home: Path, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("portrait")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "portrait.cli"]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    clean_env.pop("PYTHONWARNINGS", None)  # warnings show as they would to a user
    clean_env.update(PORTRAIT_HOME=str(home), COLUMNS="160", **env)
    return subprocess.run(
        [*command, *args], cwd=REPO, env=clean_env, capture_output=True, text=True, timeout=timeout
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failure is one 'error:' line on stderr and a non-zero exit, never a traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_example_files_are_small() -> None:
    folder = REPO / "examples" / "own_data"
    assert sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) < 200_000


def test_import_dry_run_then_import_then_append_twice(tmp_path: Path) -> None:
    home = tmp_path / "workspace"
    dry = ok(portrait(home, "data", "import", EXAMPLE, "--dry-run", "--sample", "3"))
    assert "first 3 mapped rows" in dry and "C0016-20230102" in dry and "2023-01-01T23:00:00Z" in dry
    assert "derived '{customer_id}-{ts:%Y%m%d}'" in dry and "no problems found" in dry
    assert "dry run: nothing was written" in dry
    assert not home.exists()

    imported = ok(portrait(home, "data", "import", EXAMPLE))
    assert "6,812" in imported and "validation" in imported
    raw = home / "data" / "raw"
    before = pq.read_table(raw / "transactions.parquet")
    assert before.num_rows == 6_812 and pq.read_table(raw / "customers.parquet").num_rows == 800

    ok(portrait(home, "data", "import", EXAMPLE, "--append", "--source", BATCH))
    after = pq.read_table(raw / "transactions.parquet")
    assert after.num_rows == 6_812 + 13
    assert after.slice(0, before.num_rows).equals(before)  # existing rows first, untouched
    again = ok(portrait(home, "data", "import", EXAMPLE, "--append", "--source", BATCH))
    assert pq.read_table(raw / "transactions.parquet").equals(after)
    assert "import (append)" in again


def test_mapping_problems_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.yaml"
    bad.write_text((REPO / EXAMPLE).read_text().replace("customer_id: customer", "customer_id: client"))
    bad.with_name("orders.csv").write_text("customer,date\nC1,01/01/2024\n")
    line = one_line_error(portrait(tmp_path / "ws", "data", "import", str(bad)))
    assert (
        "transactions.columns.customer_id: the source has no column 'client' (found: customer, date)" in line
    )
    dry = portrait(tmp_path / "ws", "data", "import", str(bad), "--dry-run")
    assert dry.returncode == 2 and "error: transactions.columns.customer_id" in dry.stdout
    line = one_line_error(portrait(tmp_path / "ws", "data", "import", EXAMPLE, "--source", "orders=x.csv"))
    assert "'orders' is not an input" in line
    assert not (tmp_path / "ws" / "data" / "raw" / "transactions.parquet").exists()


def test_schema_says_what_validation_requires(tmp_path: Path) -> None:
    schema = json.loads(ok(portrait(tmp_path, "data", "schema")))
    assert "is_return" in schema["transactions"]["required"]
    assert "is_return" not in schema["transactions"]["properties"]["is_return"].get("default", "no default")


def test_validation_table_shows_an_absent_events_file(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    write_table(raw / "customers.parquet", "customers", TINY_CUSTOMERS)
    write_table(raw / "transactions.parquet", "transactions", TINY_TRANSACTIONS)
    out = ok(portrait(tmp_path, "data", "validate"))
    events = next(line for line in out.splitlines() if "events" in line)
    assert "source absent: treated as an empty table" in events


@pytest.mark.slow
def test_example_end_to_end(tmp_path: Path) -> None:
    """README "Your own data": import -> data check -> train all -> features build -> materialize."""
    home = tmp_path / "workspace"
    fast = {f"PORTRAIT_MODELS__{m.upper()}__N_TRAIN": "3" for m in ("churn", "conversion", "clv")}
    env = {**HORIZONS, **fast}
    ok(portrait(home, "data", "import", EXAMPLE, **env))
    check = ok(portrait(home, "data", "check", **env))
    assert "not enough" not in check
    result = portrait(home, "train", "all", "--trials", "1", **env)
    trained = ok(result)
    # Nothing a user cannot act on: no other library's INFO lines, notices or progress bars, no DuckDB
    # "nanobind: leaked" report at exit (ibis's default backend outlived the interpreter before).
    for noise in ("nanobind", "Successfully registered", "Created version", "Detected uv project",
                  "Downloading artifacts", "Compiling new CVM", "arviz", "ArviZ", "Warning"):  # fmt: skip
        assert noise not in result.stderr, noise
    for name in catalogue.names():
        row = next(line for line in trained.splitlines() if line.startswith(f"│ {name} "))
        assert "│ 1 " in row and "skipped" not in row and "failed" not in row, row
    ok(portrait(home, "features", "build", **env))
    materialized = portrait(home, "features", "materialize", **env)
    ok(materialized)
    assert "Materializing" not in materialized.stdout + materialized.stderr  # Feast's print: logged (debug)
    assert "800 serving vectors pre-computed" in " ".join(materialized.stderr.split())  # however wrapped
    # ... -> serve: every model is ready, and the tags carry each model's horizon.
    port = _free_port()
    command = [str(Path(sys.executable).with_name("portrait")), "serve", "--port", str(port)]
    server = subprocess.Popen(
        command,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")},
            **env,
            "PORTRAIT_HOME": str(home),
        },
        stdout=(served := (tmp_path / "serve.log").open("wb")),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    served.close()  # the child has its own descriptor
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.5)
        health = httpx.get(f"{base}/v1/health", timeout=30).json()
        assert health["ready"] and set(health["models"]) == set(catalogue.names())
        customer = (
            pq.read_table(home / "data" / "clean" / "customers.parquet").column("customer_id")[0].as_py()
        )
        tags = httpx.post(f"{base}/v1/tags", json={"customer_ids": [customer]}, timeout=30).json()[0]
        assert tags["found"] and tags["value"]["horizon_days"] == int(
            HORIZONS["PORTRAIT_MODELS__CLV__HORIZON_DAYS"]
        )
        # The server's metrics live in the workspace's BentoML home for its port, not a machine-wide one.
        assert "portrait_tags_by_tier_total" in httpx.get(f"{base}/metrics", timeout=30).text
        assert any((home / "data" / "serving" / f"bentoml-{port}" / "prometheus_multiproc_dir").glob("*.db"))
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as the README says
        server.wait(timeout=30)
    log = (tmp_path / "serve.log").read_text(encoding="utf-8", errors="replace")
    assert "Warning" not in log and "Traceback" not in log, log[-3000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for command in (
        ("score", "--out", str(blocker / "tags.parquet")),
        ("lookalike", "--seed", str(blocker), "--size", "10", "--out", str(blocker / "audience.csv")),
    ):
        line = one_line_error(portrait(tmp_path / "ws", *command))
        assert f"cannot write {blocker}/" in line and f"{blocker} is a file, not a folder" in line, line
    assert not (tmp_path / "ws" / "data").exists()  # refused before the workspace was touched

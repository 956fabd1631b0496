"""No traceback from any CLI command on bad or missing input: one `error:` line and a non-zero exit.

Every command runs on an empty workspace, a short one (a few days of history) and a malformed one (raw
files that are not what they claim to be).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from portrait.cli import app
from portrait.settings import Settings
from tests.conftest import TINY_CUSTOMERS, TINY_EVENTS, TINY_TRANSACTIONS, write_table

# Commands that must refuse each workspace below (arguments chosen so that only the workspace is wrong).
COMMANDS: list[list[str]] = [
    ["data", "validate"],
    ["data", "check"],
    ["data", "load", "cdnow", "--path", "{home}/nope.txt"],
    ["data", "import", "{home}/nope.yaml"],
    ["features", "build"],
    ["features", "materialize"],
    ["train", "churn", "--trials", "1"],
    ["train", "nonsense"],
    ["promote", "churn", "99"],
    ["lookalike", "--seed", "{home}/nope.csv", "--out", "{home}/a.csv", "--size", "10"],
    ["score", "--out", "{home}/tags.parquet"],
]


def _empty(settings: Settings) -> None:
    settings.ensure_dirs()


def _short(settings: Settings) -> None:
    """Validated data covering a few weeks only: too short for any model's windows."""
    settings.ensure_dirs()
    write_table(settings.raw_dir / "customers.parquet", "customers", TINY_CUSTOMERS)
    tx = [t for t in TINY_TRANSACTIONS if t["ts"].month >= 5]
    write_table(settings.raw_dir / "transactions.parquet", "transactions", tx)
    write_table(settings.raw_dir / "events.parquet", "events", TINY_EVENTS)
    for table in ("customers", "transactions", "events"):
        (settings.clean_dir / f"{table}.parquet").write_bytes(
            (settings.raw_dir / f"{table}.parquet").read_bytes()
        )


def _malformed(settings: Settings) -> None:
    settings.ensure_dirs()
    for table in ("customers", "transactions", "events"):
        (settings.raw_dir / f"{table}.parquet").write_text("this is not parquet\n")
        (settings.clean_dir / f"{table}.parquet").write_text("neither is this\n")


WORKSPACES: dict[str, Callable[[Settings], None]] = {
    "empty": _empty,
    "short": _short,
    "malformed": _malformed,
}


@pytest.mark.parametrize("kind", list(WORKSPACES))
def test_every_command_fails_in_one_line_without_a_traceback(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / kind
    monkeypatch.setenv("PORTRAIT_HOME", str(home))
    monkeypatch.setenv("PORTRAIT_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("COLUMNS", "300")
    WORKSPACES[kind](Settings(home=home))
    runner = CliRunner()
    for command in COMMANDS:
        args = [a.format(home=home) for a in command]
        result = runner.invoke(app, args)
        where = f"{kind}: portrait {' '.join(command)}"
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{where} raised {type(result.exception).__name__}: {result.exception}"
        )
        assert "Traceback" not in result.output, f"{where}: {result.output}"
        must_fail = (
            kind != "short"
            or command[:2] in (["data", "check"], ["train", "churn"])
            or "nope" in str(command)
        )
        if must_fail:
            assert result.exit_code != 0, f"{where} succeeded: {result.output}"
        if result.exit_code != 0:
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            reported = "data check" in result.output or "skipped" in result.output
            assert len(errors) == 1 or (not errors and reported), f"{where}: {result.output}"


def test_stream_replay_of_a_damaged_dead_letter_file_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTRAIT_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    nothing = runner.invoke(app, ["stream", "--replay"])
    assert nothing.exit_code == 0 and "nothing set aside" in nothing.output
    folder = tmp_path / "data" / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stream_dead.jsonl").write_text('{"item": {"kind": "event"}, "reason": "x"}\n{"truncated')
    result = runner.invoke(app, ["stream", "--replay"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (error,) = [line for line in result.output.splitlines() if line.strip()]
    assert error.startswith("error: ") and "stream_dead.replaying-" in error and "line 2" in error
    assert len(list(folder.glob("stream_dead.replaying-*.jsonl"))) == 1  # kept, nothing sent

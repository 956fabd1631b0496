"""Faults on disk: planted links, SIGKILL mid-run, a full and a read-only disk, an unreachable database.

Temporary files are created exclusively (a link planted where one will go is never followed), a killed
command leaves the previous outputs whole, and the next command removes what it left behind. Commands run
in a subprocess as a user runs them; a full disk is a real tmpfs and a read-only one a real read-only bind
mount (both need root, as on this machine and in CI). The kills of ``portrait score`` and ``portrait
train`` need trained models: they are in ``tests/serving/test_faults_kill.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from features.synth import SynthConfig
from portrait import files
from portrait.files import atomic_path, clean_start, close_scratch, remove_stale, temp_beside
from portrait.settings import Settings
from portrait.workflow import synthesize
from tests.conftest import ci_required

REPO = Path(__file__).resolve().parent.parent
TEMP = re.compile(r"^(tmp_)?\..*\.\d+-[0-9a-f]{8}-[0-9a-f]{12}\.tmp$")  # tmp_: DuckDB's own


# ---- helpers (the serving kill tests use them too) ----------------------------------------------------
def command(home: Path, *args: str, **env: str) -> tuple[list[str], dict[str, str]]:
    """The ``portrait`` command line and a clean environment (no inherited PORTRAIT_* setting)."""
    script = Path(sys.executable).with_name("portrait")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "portrait.cli"]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    clean_env.update(PORTRAIT_HOME=str(home), COLUMNS="200", PYTHONWARNINGS="ignore", **env)
    return [*argv, *args], clean_env


def portrait(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    argv, clean_env = command(home, *args, **env)
    return subprocess.run(argv, cwd=REPO, env=clean_env, capture_output=True, text=True, timeout=600)


def kill_when(home: Path, args: list[str], ready: Callable[[], bool], **env: str) -> int | None:
    """Start ``portrait <args>`` and SIGKILL it as soon as ``ready()`` holds; returns its pid, or None if
    the command ended first (the fault was not injected mid-run)."""
    argv, clean_env = command(home, *args, **env)
    proc = subprocess.Popen(
        argv, cwd=REPO, env=clean_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return proc.pid
        time.sleep(0.0005)
    proc.kill()
    proc.wait()
    return None


def temporaries(*folders: Path) -> list[Path]:
    """Every temporary file or folder of ours under ``folders``."""
    found = []
    for folder in folders:
        for root, dirs, names in os.walk(folder):
            found += [Path(root, n) for n in dirs + names if TEMP.match(n)]
    return found


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[")]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    return errors[0]


def digests(folder: Path) -> dict[str, bytes]:
    """The published files of ``folder`` (temporary ones aside), byte for byte."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.is_symlink() and not TEMP.match(p.name)
    }


def need_root() -> None:
    if os.geteuid() != 0:
        if ci_required():
            pytest.fail("the disk-fault tests mount a tmpfs and a read-only bind mount: run CI as root")
        pytest.skip("mounting needs root")


@pytest.fixture
def mount() -> Iterator[Callable[..., None]]:
    """``mount(*args, target)``, unmounted at the end of the test."""
    mounted: list[Path] = []

    def do(*args: str) -> None:
        subprocess.run(["mount", *args], check=True, capture_output=True)
        mounted.append(Path(args[-1]))

    yield do
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


# ---- temporary files -------------------------------------------------------------------------------------
def test_a_link_planted_at_a_temporary_name_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out" / "tags.csv"
    out.parent.mkdir()
    # The random part of the next temporary names is forced, so a link can sit exactly where the first
    # one would go; every fixed name a writer might use gets one too, and so does the target itself.
    tokens = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc", "dddddddddddd"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(tokens))
    first = out.with_name(f".tags.csv.{os.getpid()}-{files._host()}-aaaaaaaaaaaa.tmp")
    planted = [
        first,
        out.with_suffix(".csv.tmp"),
        out.with_name(".tags.csv.tmp"),
        out.with_suffix(".partial"),
    ]
    for link in planted:
        link.symlink_to(victim)
    dangling = out.with_name(f".x.{os.getpid()}-{files._host()}-bbbbbbbbbbbb.tmp")
    dangling.symlink_to(tmp_path / "nowhere")
    with atomic_path(out) as tmp:
        assert tmp.name.endswith("-bbbbbbbbbbbb.tmp") and not tmp.is_symlink() and tmp.stat().st_size == 0
        tmp.write_text("customer_id\nC1\n")
    assert out.read_text() == "customer_id\nC1\n" and not out.is_symlink()
    assert victim.read_text() == "precious" and all(link.is_symlink() for link in planted)
    assert not (tmp_path / "nowhere").exists()

    out.unlink()
    out.symlink_to(victim)  # a link at the target is replaced, not written through
    with atomic_path(out) as tmp:
        tmp.write_text("new")
    assert not out.is_symlink() and out.read_text() == "new" and victim.read_text() == "precious"

    folder = temp_beside(tmp_path / "staging", directory=True)
    assert folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())


def test_stale_temporaries_of_dead_processes_go_and_those_of_live_ones_stay(tmp_path: Path) -> None:
    data = tmp_path / "data" / "clean"
    mine = temp_beside(data / "customers.parquet")
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])

    def temp(name: str, pid: int, host: str = files._host()) -> Path:  # the documented naming
        return data / f".{name}.{pid}-{host}-{os.urandom(6).hex()}.tmp"

    try:
        left = [temp("events.parquet", dead.pid), temp("transactions.parquet", dead.pid)]
        for p in left:
            p.write_bytes(b"half a file")
        spill = temp("duckdb-spill", dead.pid)
        spill.mkdir()
        (spill / "duckdb_temp_block.tmp").write_bytes(b"x" * 1000)
        kept = temp("customers.parquet", live.pid)
        reused = temp("events.csv", live.pid)  # changed long before the live process started: pid reused
        other_host = temp("a", dead.pid, host="00000000")
        for p in (kept, reused, other_host):
            p.touch()
        os.utime(reused, (time.time() - 3600, time.time() - 3600))
        victim = tmp_path / "victim"
        victim.mkdir()
        (victim / "keep").touch()
        link = temp("b", dead.pid)
        link.symlink_to(victim)

        removed = remove_stale([], recursive=[tmp_path / "data"])
        assert sorted(removed) == sorted([*left, spill, reused, link])
        assert not any(p.exists() or p.is_symlink() for p in removed)
        assert mine.exists() and kept.exists() and other_host.exists()
        assert (victim / "keep").exists()  # a link is removed, never followed
    finally:
        live.kill()
        live.wait()


def test_a_command_scratch_folder_holds_its_temporary_files_and_is_removed_at_exit(tmp_path: Path) -> None:
    import tempfile

    before = tempfile.gettempdir()
    scratch = clean_start(tmp_path / "data", tmp_path / "data" / "tmp")
    try:
        assert scratch.parent == tmp_path / "data" / "tmp" and TEMP.match(scratch.name)
        assert tempfile.gettempdir() == str(scratch)
        with files.spill_folder(tmp_path) as spill:
            assert spill.parent == scratch
        assert not spill.exists()
    finally:
        close_scratch()
    assert not scratch.exists() and tempfile.gettempdir() == before


# ---- validate: killed, full disk, read-only disk ------------------------------------------------------------
@pytest.fixture(scope="module")
def validated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("faults_ws")
    settings = Settings(home=home)
    end = datetime(2025, 1, 1, tzinfo=UTC)
    synthesize(
        settings, SynthConfig(n_customers=3000, seed=3, start=datetime(2023, 1, 1, tzinfo=UTC), end=end)
    )
    return home


@pytest.fixture
def home(validated_home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(validated_home, copy, symlinks=True)
    return copy


def test_killed_validate_leaves_clean_data_whole_and_the_next_run_removes_its_litter(home: Path) -> None:
    clean, quarantine = home / "data" / "clean", home / "data" / "quarantine"
    before = digests(clean)
    pid = kill_when(home, ["data", "validate"], lambda: bool(temporaries(clean, quarantine)))
    assert pid is not None, "validate ended before the kill"

    assert digests(clean) == before  # byte for byte
    litter = temporaries(home / "data")
    assert litter and all(f".{pid}-" in p.name for p in litter)  # what the kill left: its pid in the name

    again = portrait(home, "data", "validate")
    assert again.returncode == 0, again.stderr
    assert temporaries(home / "data") == []
    assert set(digests(clean)) == set(before)  # republished, readable
    import pyarrow.parquet as pq

    assert sum(pq.read_metadata(clean / name).num_rows for name in before) > 0


def test_validate_on_a_full_disk_says_so_in_one_line_and_keeps_the_clean_data(home: Path, mount) -> None:  # noqa: ANN001
    need_root()
    clean = home / "data" / "clean"
    saved = home / "saved"
    shutil.copytree(clean, saved)
    mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", str(clean))
    for p in saved.iterdir():
        shutil.copy2(p, clean / p.name)
    free = shutil.disk_usage(clean).free
    (clean / "filler").write_bytes(b"\0" * (free - 4096))
    before = digests(clean)

    result = portrait(home, "data", "validate")
    line = one_line_error(result)
    assert re.fullmatch(
        rf"error: cannot write {re.escape(str(clean))}/\w+\.parquet: no space left on device", line
    )
    assert digests(clean) == before and temporaries(clean) == []


def test_validate_on_a_read_only_disk_says_so_in_one_line(home: Path, mount) -> None:  # noqa: ANN001
    need_root()
    clean = home / "data" / "clean"
    before = digests(clean)
    mount("--bind", str(clean), str(clean))
    mount("-o", "remount,bind,ro", str(clean))

    line = one_line_error(portrait(home, "data", "validate"))
    assert re.fullmatch(
        rf"error: cannot write {re.escape(str(clean))}/\w+\.parquet: read-only file system", line
    )
    assert digests(clean) == before and temporaries(home / "data") == []


def test_features_apply_with_postgres_unreachable_says_so_in_one_line(home: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/portrait"
    result = portrait(home, "features", "apply", PORTRAIT_PROFILE="production", PORTRAIT_POSTGRES_URL=url)
    line = one_line_error(result)
    assert f"127.0.0.1:{port}" in line or f'"127.0.0.1", port {port}' in line
    assert result.returncode == 3 and "s3cret" not in result.stdout + result.stderr

"""`portrait stream` on the real Redis: killed with SIGKILL and restarted, it loses and double-counts nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from features.stream import GROUP, publish
from portrait.settings import Settings
from tests.conftest import online_store_down
from tests.production.conftest import Servers

pytestmark = pytest.mark.production
ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = ("A", "B", "C")


def _landed(settings: Settings) -> int:
    path = settings.data_root / "landing" / "landing.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=30) as con:
        try:
            return int(con.execute("SELECT count(*) FROM portrait_landing").fetchone()[0])
        except sqlite3.OperationalError:  # the consumer has not created the table yet
            return 0


def _env(settings: Settings, stream: str, redis_url: str) -> dict[str, str]:
    """`portrait stream`'s environment: the workspace, the stream and the broker."""
    return {
        **os.environ,
        "PORTRAIT_HOME": str(settings.home),
        "PORTRAIT_EVENTS_STREAM": stream,
        "PORTRAIT_BROKER_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }


STREAM = [sys.executable, "-m", "portrait.cli", "stream"]


def _consumer(settings: Settings, stream: str, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **_env(settings, stream, redis_url),
        "PORTRAIT_STREAM_CONSUMER": "consumer-1",
        "PORTRAIT_STREAM_CLAIM_IDLE_MS": "1000",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            STREAM,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait(settings: Settings, at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (n := _landed(settings)) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    return n


def test_a_killed_consumer_restarts_without_loss_or_double_counting(
    tiny_clean: Settings, servers: Servers, tmp_path: Path
):
    # No `repo.apply` first: the consumer registers the real-time view it pushes to in a fresh workspace.
    stream = f"portrait-test-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC) - timedelta(hours=1)
    items = [
        {
            "kind": "event",
            "event_id": f"e{i}",
            "customer_id": CUSTOMERS[i % 3],
            "ts": (now + timedelta(seconds=i)).isoformat(),
            "event_type": "add_to_cart" if i % 7 == 0 else "view",
            "session_id": "s",
        }
        for i in range(1200)
    ]
    client = redis.Redis.from_url(servers.redis_url)
    try:
        asyncio.run(
            publish(
                Settings(home=tiny_clean.home, events_stream=stream, broker_url=servers.redis_url),
                items[:600],
            )
        )
        first = _consumer(tiny_clean, stream, servers.redis_url, tmp_path / "first.log")
        try:
            assert _wait(tiny_clean, 50, 120) >= 50, "the consumer landed nothing"
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # mid-stream: some messages read, not acknowledged
            first.wait(timeout=10)
        killed_at = _landed(tiny_clean)
        asyncio.run(
            publish(
                Settings(home=tiny_clean.home, events_stream=stream, broker_url=servers.redis_url),
                items[600:],
            )
        )
        second = _consumer(tiny_clean, stream, servers.redis_url, tmp_path / "second.log")
        try:
            landed = _wait(tiny_clean, len(items), 120)
            time.sleep(2)  # anything counted twice would show up now
            landed = _landed(tiny_clean)
            deadline = time.monotonic() + 120  # redelivered messages are reclaimed one by one
            while client.xpending(stream, GROUP)["pending"] and time.monotonic() < deadline:
                time.sleep(0.5)
            pending = client.xpending(stream, GROUP)["pending"]
        finally:
            os.killpg(second.pid, signal.SIGTERM)  # a graceful stop
            stopped = second.wait(timeout=20)
    finally:
        client.delete(stream)
        client.close()
    output = (tmp_path / "second.log").read_text(encoding="utf-8", errors="replace")
    assert stopped == 0 and output.rstrip().endswith("stopped"), output[-2000:]
    # One line per batch, FastStream's own lines (coloured, one per message) at debug level, no traceback.
    assert "stream batch:" in output and "Traceback" not in output, output[-2000:]
    assert "FastStream" not in output and "Received" not in output and "\x1b[" not in output, output[-2000:]
    assert killed_at < len(items)
    assert landed == len(items)  # every event exactly once (the landing key drops redeliveries)
    assert pending == 0  # and every message acknowledged in the end


def test_a_message_that_keeps_failing_is_set_aside_and_replayed(
    tiny_clean: Settings, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The online store is down: the batch is delivered again message by message until each has failed
    `stream_max_deliveries` times, then set aside with its error and acknowledged (no error line every few
    seconds for ever). A message that is not a JSON object is quarantined at its first delivery. Once the store
    is back, `replay` sends the set-aside messages again and they reach the online store."""
    import json

    from features import realtime, repo, stream

    settings = Settings(
        home=tiny_clean.home,
        events_stream=f"portrait-test-{uuid.uuid4().hex[:8]}",
        broker_url=servers.redis_url,
        stream_consumer="consumer-1",
        stream_claim_idle_ms=100,
        stream_max_deliveries=3,
    )
    store = repo.ensure_applied(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    items = [
        {
            "kind": "event",
            "event_id": f"d{i}",
            "customer_id": "A",
            "ts": (now - timedelta(minutes=i)).isoformat(),
            "event_type": "add_to_cart",
            "session_id": "s",
        }  # fmt: skip
        for i in range(2)
    ]
    dead = settings.quarantine_dir / stream.DEAD_LETTERS
    rejected = settings.quarantine_dir / "stream.jsonl"
    client = redis.Redis.from_url(servers.redis_url)

    def lines(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    async def consume_until(done, timeout: float) -> None:  # noqa: ANN001 - a predicate
        broker = stream.build_app(settings, store).broker
        await broker.start()
        try:
            deadline = time.monotonic() + timeout
            while not done() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            await broker.stop()

    try:
        asyncio.run(stream.publish(settings, [*items, "not an object"]))
        with monkeypatch.context() as patch:
            patch.setattr(store, "write_to_online_store", online_store_down)
            asyncio.run(consume_until(lambda: len(lines(dead)) == 2 and len(lines(rejected)) == 1, 60))
            assert client.xpending(settings.events_stream, stream.GROUP)["pending"] == 0
        set_aside = lines(dead)
        assert sorted(d["item"]["event_id"] for d in set_aside) == ["d0", "d1"]
        assert all(d["reason"].startswith("undeliverable: 3 deliveries failed, the last with ConnectionError")
                   for d in set_aside)  # fmt: skip
        assert [r["item"] for r in lines(rejected)] == ["not an object"]
        assert lines(rejected)[0]["reason"].startswith("malformed_message")
        view = store.get_feature_view(realtime.VIEW)
        assert realtime.read_online(store, view, ["A"]) == [None]  # landed, never pushed

        replayed = subprocess.run(
            [*STREAM, "--replay"],
            cwd=ROOT,
            env=_env(settings, settings.events_stream, servers.redis_url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replayed.returncode == 0, replayed.stderr
        assert "2 set-aside message(s) sent again" in replayed.stdout + replayed.stderr
        assert not dead.exists() and not list(settings.quarantine_dir.glob("stream_dead*"))
        asyncio.run(consume_until(lambda: realtime.read_online(store, view, ["A"]) != [None], 60))
        row = realtime.read_online(store, view, ["A"])[0]
        assert row is not None and row.values["carts_1h"] == 2
        assert stream.replay(settings) == 0  # nothing left to send
    finally:
        client.delete(settings.events_stream)
        client.close()

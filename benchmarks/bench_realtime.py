"""Event to changed tag: latency under a steady event rate, over HTTP and over the stream; events lost.

Builds (or reuses, ``--home``) a synthetic workspace with all models, starts a real ``bentoml serve`` and,
for the stream part, a real ``portrait stream`` consumer on the local Redis. Then, for ``--seconds``:

* **HTTP**: ``POST /v1/events`` batches at ``--rate`` events/s (batches every ``--tick`` seconds);
* **stream**: the same rate published to a Redis stream that the consumer reads.

Every ``--probe-every``-th event is probed: ``/v1/tags`` for its customer is polled until the tag's
``realtime.last_seen`` reaches the event's time; the latency is from sending the event to that answer.
At the end the landing zone must hold every event exactly once (sent == landed). A last part sends as fast
as one client can (``--burst`` seconds) and reports the sustained events/s.

Usage: ``python benchmarks/bench_realtime.py [--customers 20000] [--rate 1000] [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import publish  # noqa: E402
from portrait.settings import Settings  # noqa: E402
from serving.process import ServiceProcess, free_port  # noqa: E402

END = datetime(2025, 1, 1, tzinfo=UTC)
logger = logging.getLogger("bench_realtime")


def build(home: Path, customers: int) -> None:
    from features.synth import SynthConfig
    from portrait.workflow import build_workspace

    if (home / "data" / "feast" / "online_store.db").exists():
        return
    settings = Settings(home=home)
    build_workspace(
        settings,
        synth=SynthConfig(n_customers=customers, seed=3, start=END - timedelta(days=3 * 365), end=END),
        snapshot=END + timedelta(days=1),
        trials=1,
        n_train=2,
        step_days=60,
    )


def landed(home: Path) -> int:
    with sqlite3.connect(home / "data" / "landing" / "landing.db", timeout=30) as con:
        return int(con.execute("SELECT count(*) FROM portrait_landing").fetchone()[0])


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a process in its own session, its output in ``log`` (kept for a failed run's diagnosis)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def event(cid: str, at: datetime) -> dict[str, object]:
    return {
        "event_id": uuid.uuid4().hex,
        "customer_id": cid,
        "ts": at.isoformat(),
        "event_type": "view",
        "category": "toys",
        "session_id": "bench",
    }


async def probe(client: httpx.AsyncClient, base: str, cid: str, at: datetime, sent: float) -> float | None:
    """Seconds from sending the event until /v1/tags shows it (None: not within 10 s)."""
    while time.perf_counter() - sent < 10:
        tags = (await client.post(f"{base}/v1/tags", json={"customer_ids": [cid]})).json()[0]
        seen = (tags.get("realtime") or {}).get("last_seen")
        if seen and datetime.fromisoformat(seen) >= at.replace(microsecond=0):
            return time.perf_counter() - sent
        await asyncio.sleep(0.01)
    return None


async def drive(
    base: str, send, ids: list[str], rate: int, seconds: float, tick: float, probe_every: int
) -> tuple[int, list[float | None]]:
    """Send ``rate`` events/s for ``seconds`` through ``send(batch)``; probe every ``probe_every``-th."""
    rng = np.random.default_rng(0)
    per_tick = max(1, round(rate * tick))
    probes: list[asyncio.Task[float | None]] = []
    sent = 0
    async with httpx.AsyncClient(timeout=30) as client:
        began = time.perf_counter()
        n_ticks = int(seconds / tick)
        for k in range(n_ticks):
            target = began + k * tick
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
            now = datetime.now(UTC)
            # Distinct times: two events equal in every contract column are one duplicate to the validator.
            batch = [
                event(ids[int(i)], now + timedelta(microseconds=j))
                for j, i in enumerate(rng.integers(0, len(ids), per_tick))
            ]
            t_send = time.perf_counter()
            await send(client, batch)
            sent += len(batch)
            for j, item in enumerate(batch):
                if (sent - len(batch) + j) % probe_every == 0:
                    probes.append(
                        asyncio.create_task(probe(client, base, str(item["customer_id"]), now, t_send))
                    )
        results = list(await asyncio.gather(*probes))
    return sent, results


def summary(name: str, sent: int, results: list[float | None], seconds: float) -> dict[str, object]:
    got = np.array([r for r in results if r is not None])
    return {
        "path": name,
        "events sent": sent,
        "events/s": round(sent / seconds),
        "probes": len(results),
        "not seen in 10 s": sum(r is None for r in results),
        "p50 ms": round(float(np.percentile(got, 50)) * 1000, 1) if len(got) else None,
        "p99 ms": round(float(np.percentile(got, 99)) * 1000, 1) if len(got) else None,
        "max ms": round(float(got.max()) * 1000, 1) if len(got) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=None, help="Workspace to reuse (built when empty).")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000, help="Events per second.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tick", type=float, default=0.1, help="Seconds between batches.")
    parser.add_argument("--probe-every", type=int, default=100)
    parser.add_argument("--burst", type=float, default=15.0, help="Seconds of the as-fast-as-possible part.")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    from benchmarks.bench_production import beside

    load_start, beside_start = os.getloadavg(), beside()
    home = args.home or Path(tempfile.mkdtemp(prefix="bench_realtime_"))
    started = time.perf_counter()
    build(home, args.customers)
    build_s = time.perf_counter() - started
    import pandas as pd

    from features.tables import PROFILE_VIEW, snapshot_files

    ids = pd.read_parquet(
        snapshot_files(Settings(home=home).features_dir, PROFILE_VIEW)[-1]
    ).customer_id.tolist()
    port = free_port()
    stream = f"bench-events-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "PORTRAIT_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "PORTRAIT_EVENTS_STREAM": stream,
        "PORTRAIT_BROKER_URL": args.redis,
        "PORTRAIT_STREAM_CONSUMER": "bench",
    }
    env.pop("PORTRAIT_API_KEYS", None)
    logs = home / "bench_logs"
    logs.mkdir(exist_ok=True)
    server = ServiceProcess(None, logs / "server.log", env=env, port=port)
    consumer = start([sys.executable, "-m", "portrait.cli", "stream"], env, logs / "consumer.log")
    logger.info("server and consumer logs in %s", logs)
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        server.wait_ready(180)
        before = landed(home) if (home / "data" / "landing" / "landing.db").exists() else 0

        answered = {"accepted": 0, "duplicates": 0, "rejected": 0}

        async def over_http(client: httpx.AsyncClient, batch: list[dict[str, object]]) -> None:
            response = await client.post(f"{base}/v1/events", json={"events": batch})
            response.raise_for_status()
            body = response.json()
            answered["accepted"] += body["accepted"]
            answered["duplicates"] += body["duplicates"]
            answered["rejected"] += len(body["rejected"])

        sent_http, res_http = asyncio.run(
            drive(base, over_http, ids, args.rate, args.seconds, args.tick, args.probe_every)
        )
        rows.append(summary("HTTP POST /v1/events", sent_http, res_http, args.seconds))

        import redis

        publisher = redis.Redis.from_url(args.redis)

        async def over_stream(client: httpx.AsyncClient, batch: list[dict[str, object]]) -> None:
            import json

            pipe = publisher.pipeline(transaction=False)
            for item in batch:
                pipe.xadd(stream, {"__data__": json.dumps({"kind": "event", **item})})
            pipe.execute()

        sent_stream, res_stream = asyncio.run(
            drive(base, over_stream, ids, args.rate, args.seconds, args.tick, args.probe_every)
        )
        rows.append(summary("Redis stream (portrait stream)", sent_stream, res_stream, args.seconds))
        deadline = time.monotonic() + 60
        expected = before + sent_http + sent_stream
        while landed(home) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        after = landed(home)

        async def burst() -> tuple[int, float]:
            sent = 0
            async with httpx.AsyncClient(timeout=60) as client:
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < args.burst:
                    now = datetime.now(UTC)
                    batch = [event(ids[i % len(ids)], now) for i in range(sent, sent + 1000)]
                    (await client.post(f"{base}/v1/events", json={"events": batch})).raise_for_status()
                    sent += len(batch)
                return sent, time.perf_counter() - t0

        burst_sent, burst_s = asyncio.run(burst())
        publisher.delete(stream)
    finally:
        stop(consumer)
        server.stop()
    load = os.getloadavg()
    lines = [
        f"Load average at the start {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}; running "
        f"beside it: {'; '.join(beside_start) or 'nothing else above 10% CPU'}.",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end; {len(ids):,} customers (synthetic, "
        f"workspace built in {build_s:.0f} s); server and consumer on this machine beside the load generator.",
        f"Command: `python benchmarks/bench_realtime.py --customers {args.customers} --rate {args.rate} "
        f"--seconds {args.seconds:g}`.",
        "",
        "| path | events sent | events/s | probes | not seen in 10 s | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['path']} | {r['events sent']:,} | {r['events/s']:,} | {r['probes']} | {r['not seen in 10 s']} | "
            f"{r['p50 ms']} | {r['p99 ms']} | {r['max ms']} |"
            for r in rows
        ),
        "",
        f"HTTP answers: {answered['accepted']:,} accepted, {answered['duplicates']:,} duplicates, "
        f"{answered['rejected']:,} rejected of {sent_http:,} sent.",
        f"Events landed: {after - before:,} of {sent_http + sent_stream:,} sent (lost or double-counted: "
        f"{(sent_http + sent_stream) - (after - before):,}).",
        f"Sustained, one client sending 1,000-event batches as fast as answered: {burst_sent / burst_s:,.0f} "
        f"events/s over {burst_s:.0f} s.",
    ]
    publish("## Real-time events\n\n" + "\n".join(lines), "## Real-time events")


if __name__ == "__main__":
    main()

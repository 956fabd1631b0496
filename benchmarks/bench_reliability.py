"""Reliability benchmark: schemathesis over the OpenAPI document, then a 60 s load at 32 clients, against one
real ``bentoml serve serving.service:Portrait`` process (with API keys, on 127.0.0.1).

1. schemathesis (every phase and check, positive and negative data; ``tests/serving/test_schemathesis.py``'s
   ``run_schemathesis``) for ``--fuzz-seconds``: cases sent and failures by check;
2. ``--concurrency`` closed-loop clients (``httpx.AsyncClient``) sending single-customer ``POST /v1/tags`` with
   known ids for ``--duration`` seconds: requests, errors by status, p50 / p99 latency;
3. the server's resident memory (the server and its workers) before the fuzzing, after it and after the
   load.

The workspace is a synthetic one of ``--customers`` customers built with ``portrait.workflow`` (all models
trained and promoted, the SQLite online store materialized), reused from ``--workdir`` when built there
before. Figures are printed and written to the ``## Reliability`` section of ``benchmarks/RESULTS.md`` with
the date, the machine's load (``uptime``) and what else was running.

Usage: ``python benchmarks/bench_reliability.py [--workdir DIR] [--duration 60] [--concurrency 32]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's packages come from the checkout
    sys.path.insert(0, str(ROOT))

from results import publish  # noqa: E402

from portrait.settings import API_SCOPES, Settings  # noqa: E402
from serving.process import ServiceProcess  # noqa: E402
from tests.serving.test_schemathesis import FuzzRun, run_schemathesis  # noqa: E402

SECTION = "## Reliability"
KEY = "bench-reliability-key"
END = datetime(2025, 1, 1, tzinfo=UTC)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def beside(own: set[int]) -> str:
    """The busiest other processes (name and CPU share over one second): what ran beside the benchmark."""
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid not in own]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(1.0)
    busy: list[tuple[float, str]] = []
    for p in procs:
        try:
            share = p.cpu_percent(None)
            if share >= 10:
                cmd = " ".join(p.info["cmdline"] or [p.info["name"] or "?"])
                busy.append((share, cmd[:70]))
        except psutil.Error:
            continue
    busy.sort(reverse=True)
    return "; ".join(f"{cmd} ({share:.0f} %)" for share, cmd in busy[:5]) or "nothing busy"


def workspace(workdir: Path, customers: int) -> Path:
    home = workdir / f"ws_{customers}"
    marker = home / "bench_reliability.json"
    if marker.exists():
        return home
    from features.synth import SynthConfig
    from portrait.workflow import build_workspace

    settings = Settings(home=home)
    settings.ensure_dirs()
    build_workspace(
        settings,
        synth=SynthConfig(n_customers=customers, seed=5, start=END - timedelta(days=3 * 365), end=END),
        snapshot=END + timedelta(days=1),
        trials=1,
        n_train=2,
        step_days=60,
    )
    marker.write_text(json.dumps({"customers": customers, "built": datetime.now(UTC).isoformat()}))
    return home


@dataclass
class Load:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> dict[str, int]:
        return {k: v for k, v in self.statuses.items() if k != "200"}


async def _load(url: str, ids: list[str], concurrency: int, duration_s: float) -> Load:
    result = Load()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=headers) as client:
        stop = time.monotonic() + duration_s
        rng = np.random.default_rng(22)

        async def worker() -> None:
            while time.monotonic() < stop:
                body = {"customer_ids": [ids[int(rng.integers(len(ids)))]]}
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/tags", json=body)
                    result.statuses[str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    result.statuses[type(exc).__name__] += 1
                result.latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


def report(args: argparse.Namespace, fuzz: FuzzRun, load: Load, rss: dict[str, float], context: dict) -> str:
    lat = np.array(load.latencies) * 1000
    failures = ", ".join(f"{k}: {v:,}" for k, v in sorted(fuzz.failures.items())) or "none"
    errors = ", ".join(f"{k}: {v:,}" for k, v in sorted(load.errors.items())) or "none"
    lines = [
        SECTION,
        "",
        f"Run {context['date']} by `benchmarks/bench_reliability.py` on {context['nproc']} cores; "
        f"`uptime` at the start: `{context['uptime_start']}`, at the end: `{context['uptime_end']}`. Beside it "
        f"(other processes over 10 % CPU at the start): {context['beside']}.",
        "",
        f"One real `bentoml serve serving.service:Portrait` (1 worker, API keys configured) on a synthetic "
        f"workspace of {args.customers:,} customers (all models trained and promoted, SQLite online store).",
        "",
        "| what | figure |",
        "|---|---|",
        f"| schemathesis {context['st_version']} (all phases and checks, positive + negative data) | "
        f"{fuzz.cases:,} cases in {fuzz.seconds:.0f} s |",
        f"| ... failures by check | {failures} |",
        f"| ... server errors (`not_a_server_error`) | {fuzz.failures.get('not_a_server_error', 0)} |",
        f"| ... schema violations (`response_schema_conformance`, `status_code_conformance`, "
        f"`content_type_conformance`) | "
        f"{sum(fuzz.failures.get(c, 0) for c in ('response_schema_conformance', 'status_code_conformance', 'content_type_conformance'))} |",
        f"| load: {args.concurrency} clients, single-customer `POST /v1/tags`, {load.seconds:.0f} s | "
        f"{load.requests:,} requests ({load.requests / load.seconds:.0f}/s) |",
        f"| ... errors by status | {errors} |",
        f"| ... latency p50 / p99 | {np.percentile(lat, 50):.1f} ms / {np.percentile(lat, 99):.1f} ms |",
        f"| server RSS: start / after fuzzing / after load | {rss['start']:.0f} MB / {rss['fuzzed']:.0f} MB / "
        f"{rss['loaded']:.0f} MB |",
        "",
        "`positive_data_acceptance` failures are schema-valid requests refused for what they mean (seed ids "
        "that are no known customer, a filter on a feature that does not exist), answered with a 400 / 422 "
        "naming the problem; they are listed in `tests/serving/test_schemathesis.py` (`DOMAIN_REFUSALS`).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/portrait_bench_reliability"))  # noqa: S108
    parser.add_argument("--customers", type=int, default=2500)
    parser.add_argument("--fuzz-seconds", type=float, default=100)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import schemathesis

    args.workdir.mkdir(parents=True, exist_ok=True)
    home = workspace(args.workdir, args.customers)
    ids = pq.read_table(home / "data" / "clean" / "customers.parquet").column("customer_id").to_pylist()
    context = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "uptime_start": uptime(),
        "st_version": schemathesis.__version__,
    }
    server = ServiceProcess(home, args.workdir / "server.log", api_keys={KEY: API_SCOPES})
    try:
        server.wait_ready(300)
        context["beside"] = beside({os.getpid(), *server.pids()})
        rss = {"start": server.rss_bytes() / 1e6}
        fuzz = run_schemathesis(server.url, KEY, max_time_s=args.fuzz_seconds)
        rss["fuzzed"] = server.rss_bytes() / 1e6
        load = asyncio.run(_load(server.url, ids, args.concurrency, args.duration))
        rss["loaded"] = server.rss_bytes() / 1e6
    finally:
        server.stop()
    context["uptime_end"] = uptime()
    publish(report(args, fuzz, load, rss, context), SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()

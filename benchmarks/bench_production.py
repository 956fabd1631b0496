"""Production-profile benchmark: materialization into Redis vs SQLite, and ``/v1/tags`` latency on each.

One run, same machine, same data, side by side:

1. **Data**: a ``--base-customers`` synthetic workspace built by ``portrait.workflow.build_workspace``
   (synth -> validate -> features + Feast apply -> train; no materialization), with every tag model of
   the catalogue (churn, conversion, clv) trained on it (``trials=1``) into a SQLite MLflow store. The serving snapshot's three feature tables are then tiled to ``--customers`` customers (new
   ids, same rows repeated): materialization cost depends on rows and columns, not on their realism,
   and building 1M customers' features through the pipeline takes far longer than loading them.
2. **Loads**: ``features.repo.apply`` + ``features.store.materialize`` of that snapshot, into the SQLite online
   store (local profile) and into Redis (production profile: Feast SQL registry in a fresh PostgreSQL
   database, Redis a private ``redis-server`` started by this script, so the shared one is not filled with
   a million keys). ``materialize`` writes Portrait's batch views with the bulk loader
   (``features/bulk_load.py``) and the push view's table with Feast's own materialize. Per store, three loads,
   each in a fresh child process: the first load (an empty store), an incremental load with nothing changed,
   and a reload after every customer changed (the tiled profile table rewritten with ``tenure_days`` + 1),
   which is switched in beside live data. Wall time, customers/s, the loader's phases, CPU time and peak RSS
   of the child, and the store's size (SQLite file; Redis ``used_memory``).
   **Feast's own materialize** (what ``materialize`` did before: Feast's ``materialize`` of every view, then
   the serving vectors rebuilt from the store) is timed the same way on the first ``--feast-customers``
   customers (default 100,000) into a separate project, and extrapolated linearly to ``--customers``.
3. **Latency**: ``Tagger.tags([one_id])`` in-process for random known customers, ``--requests`` calls per
   store after a warm-up (p50/p90/p99), plus the bare Feast online read inside it; then the same over
   HTTP through the BentoML app (``Portrait.to_asgi()`` + Starlette's TestClient, in a child process
   per store, no network hop) for ``--http-requests`` calls. Both stores serve the same models (the
   SQLite MLflow store), so the difference is the online store.

Figures are printed and written to the ``## Production profile`` section of ``benchmarks/RESULTS.md``
(only that section is replaced), with the machine, its load average before each step and the other processes
that used the CPU when the run started: the machine may be shared.

Usage: ``python benchmarks/bench_production.py [--customers 1000000] [--feast-customers 100000] [--requests 2000]
[--workdir DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from portrait import catalogue  # noqa: E402
from portrait.settings import Settings  # noqa: E402

logger = logging.getLogger("bench_production")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
END = datetime(2025, 1, 1, tzinfo=UTC)
SNAPSHOT = END + timedelta(days=1)
VIEWS = catalogue.ALL_VIEWS


# ---- helpers ---------------------------------------------------------------------------------------------


def snapshot_file(home: Path, view: str) -> Path:
    return home / "data" / "features" / view / f"snapshot={SNAPSHOT:%Y%m%dT%H%M%S}.parquet"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "mean": float(values.mean()),
        "n": len(values),
    }


def machine() -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"cpus": cpus, "python": platform.python_version(), "load": os.getloadavg()}


def tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def store_settings(args: argparse.Namespace, store: str) -> Settings:
    """Settings of the benchmark workspace for one online store (same MLflow models for both)."""
    common: dict[str, Any] = {
        "home": Path(args.workdir) / "bench",
        "mlflow_tracking_uri": tracking_uri(Path(args.workdir)),
        "mlflow_artifact_root": (Path(args.workdir) / "artifacts").as_uri(),
        "api_keys": {},
    }
    if store == "sqlite":
        return Settings(profile="local", **common)
    return Settings(
        profile="production",
        postgres_url=args.postgres_url,
        redis_url=args.redis_url,
        redis_key_prefix=args.key_prefix,
        **common,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``PORTRAIT_*`` variables that make ``get_settings()`` (the HTTP service) equal ``settings``."""
    env = {
        "PORTRAIT_HOME": str(settings.home),
        "PORTRAIT_PROFILE": settings.profile,
        "PORTRAIT_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PORTRAIT_MLFLOW_ARTIFACT_ROOT": settings.artifact_root,
        "PORTRAIT_API_KEYS": "{}",
    }
    if settings.profile == "production":
        env |= {
            "PORTRAIT_POSTGRES_URL": settings.postgres_url,
            "PORTRAIT_REDIS_URL": settings.redis_url,
            "PORTRAIT_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        }
    return env


# ---- 1. data ---------------------------------------------------------------------------------------------


def tag_model_names() -> list[str]:
    """The models ``/v1/tags`` serves, from the catalogue."""
    return [entry.name for entry in catalogue.tag_models()]


def build_base(args: argparse.Namespace) -> Path:
    """The workflow's workspace and its trained tag models (reused when ``--workdir`` already has them)."""
    from features.synth import SynthConfig
    from portrait.workflow import build_workspace

    workdir = Path(args.workdir)
    home = workdir / "base"
    done = workdir / "base.done"
    if done.exists() and json.loads(done.read_text()).get("customers") == args.base_customers:
        logger.info("reusing the base workspace in %s", home)
        return home
    shutil.rmtree(home, ignore_errors=True)
    settings = Settings(
        home=home,
        profile="local",
        mlflow_tracking_uri=tracking_uri(workdir),
        mlflow_artifact_root=(workdir / "artifacts").as_uri(),
    )
    started = time.perf_counter()
    build_workspace(
        settings,
        synth=SynthConfig(
            n_customers=args.base_customers, seed=17, start=END - timedelta(days=3 * 365), end=END
        ),  # validated as of END
        models=tag_model_names(),
        trials=1,
        materialize=False,  # the tiled copy of the snapshot is what gets materialized, into each store
        snapshot=SNAPSHOT,
        n_train=2,
        step_days=60,
    )
    done.write_text(json.dumps({"customers": args.base_customers}))
    logger.info("base workspace and models ready in %.0f s", time.perf_counter() - started)
    return home


def tile(base: Path, bench: Path, customers: int) -> None:
    """Write the serving snapshot of ``customers`` customers by repeating the base customers: new customer
    ``P<k>`` is a copy of the base profile table's row ``k % base`` in every feature table of the snapshot (the
    push view's included, so a table holding only some customers keeps its share of them)."""
    marker = bench / "tiled.json"
    if marker.exists() and json.loads(marker.read_text()).get("customers") == customers:
        return
    shutil.rmtree(bench, ignore_errors=True)
    reference = pd.read_parquet(snapshot_file(base, VIEWS[0]), columns=["customer_id"]).customer_id
    position = pd.Series(np.arange(len(reference)), index=reference.to_numpy())
    views = sorted(
        p.name for p in (base / "data" / "features").iterdir() if snapshot_file(base, p.name).exists()
    )
    for view in views:
        frame = pd.read_parquet(snapshot_file(base, view))
        out = snapshot_file(bench, view)
        out.parent.mkdir(parents=True, exist_ok=True)
        if len(frame):
            first = position.reindex(frame.customer_id.to_numpy()).dropna().astype(np.int64)
            rows = np.flatnonzero(frame.customer_id.isin(first.index).to_numpy())
            first = first.to_numpy()
            copies = np.maximum(
                0, -(-(customers - first) // len(reference))
            )  # k = first + j * base < customers
            which = np.repeat(rows, copies)
            k = np.repeat(first, copies) + len(reference) * (
                np.arange(copies.sum()) - np.repeat(np.cumsum(copies) - copies, copies)
            )
            dtype = frame["customer_id"].dtype
            frame = frame.iloc[which].reset_index(drop=True)
            frame["customer_id"] = pd.Series([f"P{i:08d}" for i in k], dtype="string").astype(dtype)
        frame.to_parquet(out, index=False)
    marker.write_text(json.dumps({"customers": customers}))


def process_label(cmdline: list[str], name: str) -> str:
    """A short name for a process: the program, or for Python the script, module or test files it runs."""
    words = [w.replace("\n", " ") for w in cmdline] or [name]
    program = Path(words[0]).name
    if not program.startswith("python") and program not in ("pytest", "uv"):
        return program if program != "java" else "java " + next((w for w in words if "Spark" in w), "")
    rest = words[1:] if program.startswith("python") else words
    if any(Path(w).name == "pytest" for w in words):
        tests = [w.removeprefix("tests/") for w in words if w.startswith("tests")]
        return ("pytest " + " ".join(tests))[:70]
    if "-c" in rest[:-1]:
        code = rest[rest.index("-c") + 1]
        return "python worker process" if "multiprocessing" in code else "python -c (inline script)"
    if rest[:1] == ["-m"]:
        rest = rest[1:]
    shown = [Path(w).name if "/" in w else w for w in rest if not w.startswith("-")][:3]
    return " ".join(shown)[:70] or program


def beside() -> list[str]:
    """The other processes using the CPU now (sampled over one second), busiest first."""
    import psutil

    mine = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.info["pid"] not in mine]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(1.0)
    busy = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            cpu = proc.cpu_percent(None)
            if cpu >= 10:
                busy.append((cpu, process_label(proc.info["cmdline"] or [], str(proc.info["name"]))))
    return [f"`{label}` ({cpu:.0f}% CPU)" for cpu, label in sorted(busy, reverse=True)[:5]]


# ---- 2. loads (child processes) ------------------------------------------------------------------------------

LOADS = ("first", "unchanged", "reload")
"""The first load into an empty store; an incremental load with nothing changed; a reload after every customer
changed."""


def load_result(started: float, cpu0: float, result: dict[str, Any]) -> dict[str, Any]:
    load = result["load"] or {}
    return {
        "seconds": time.perf_counter() - started,
        "cpu_s": cpu_seconds() - cpu0,
        "peak_rss_mb": peak_rss_mb(),
        "mode": result["mode"],
        "why": load.get("why"),
        "written": load.get("written"),
        "vectors": result["vectors"],
        "switch": load.get("switch"),
        "phases": {k: v for k, v in (load.get("seconds") or {}).items() if k != "total"},
        "loader_s": (load.get("seconds") or {}).get("total", 0.0),
    }


def step_load(args: argparse.Namespace) -> dict[str, Any]:
    """One load of the tiled snapshot into one store (``--kind``, see :data:`LOADS`); a child process."""
    from features import repo
    from features import store as fs

    settings = store_settings(args, args.store)
    settings.ensure_dirs()
    applied = 0.0
    if args.kind == "first":
        started = time.perf_counter()
        store = repo.apply(settings)
        applied = time.perf_counter() - started
    else:
        store = fs.feature_store(settings)
    if args.kind == "reload":  # every customer changes: the pipeline wrote a new profile table
        path = snapshot_file(settings.home, "customer_profile")
        frame = pd.read_parquet(path)
        frame["tenure_days"] += 1.0
        frame.to_parquet(path, index=False)
    cpu0, started = cpu_seconds(), time.perf_counter()
    result = fs.materialize(
        settings,
        start=SNAPSHOT - timedelta(seconds=1),
        end=SNAPSHOT + timedelta(days=1),
        incremental=args.kind != "first",
        store=store,
    )
    return {"store": args.store, "kind": args.kind, "apply_s": applied, **load_result(started, cpu0, result)}


def feast_settings(args: argparse.Namespace, store: str) -> Settings:
    """The subset workspace Feast's own materialize loads (a project of its own on both stores)."""
    settings = store_settings(args, store).model_copy(update={"home": Path(args.workdir) / "feast_subset"})
    if store == "redis":
        settings = settings.model_copy(update={"redis_key_prefix": f"{args.key_prefix}_feast"})
    return settings


def step_feast(args: argparse.Namespace) -> dict[str, Any]:
    """Feast's own materialize of every view, then the serving vectors from the store (what
    ``features.store.materialize`` did before the bulk loader), on the subset; a child process."""
    from features import repo
    from features import store as fs

    settings = feast_settings(args, args.store)
    settings.ensure_dirs()
    shutil.rmtree(settings.feast_dir, ignore_errors=True)
    store = repo.apply(settings)
    cpu0, started = cpu_seconds(), time.perf_counter()
    views = [v.name for v in store.list_feature_views()]
    store.materialize(
        start_date=SNAPSHOT - timedelta(seconds=1), end_date=SNAPSHOT + timedelta(days=1), feature_views=views
    )
    vectors_started = time.perf_counter()
    vectors = fs.precompute_vectors(settings, store)
    return {
        "store": args.store,
        "seconds": time.perf_counter() - started,
        "vectors_s": time.perf_counter() - vectors_started,
        "vectors": vectors,
        "cpu_s": cpu_seconds() - cpu0,
        "peak_rss_mb": peak_rss_mb(),
    }


def in_child(args: argparse.Namespace, step: str, store: str, *extra: str) -> dict[str, Any]:
    """Run one ``--step`` of this script for ``store`` in a fresh process; its JSON result."""
    cmd = [
        sys.executable,
        __file__,
        "--step",
        step,
        "--store",
        store,
        "--workdir",
        args.workdir,
        "--postgres-url",
        args.postgres_url,
        "--redis-url",
        args.redis_url,
        "--key-prefix",
        args.key_prefix,
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"step {step} ({store}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_in_child(
    args: argparse.Namespace, step: str, store: str, customers: int, *extra: str
) -> dict[str, Any]:
    """A step in a child process, with the 1-minute load average before it and the derived rates."""
    load = os.getloadavg()[0]
    started_at = datetime.now(UTC)
    result = in_child(args, step, store, *extra)
    return result | {
        "load": load,
        "customers": customers,
        "customers_per_s": customers / result["seconds"],
        "measured_at": f"{started_at:%Y-%m-%d %H:%M} UTC",
    }


def store_size_mb(args: argparse.Namespace, store: str, bench: Path, private: bool) -> float | None:
    if store == "sqlite":
        online = bench / "data" / "feast" / "online_store.db"
        return sum(p.stat().st_size for p in online.parent.glob(online.name + "*")) / 1e6
    return redis_memory_mb(args.redis_url, private)


# ---- 3. latency ------------------------------------------------------------------------------------------


def tagger_latency(args: argparse.Namespace, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Single-customer ``Tagger.tags`` and the bare online read inside it, in-process, per store.

    Both stores' Taggers live in this process and the calls alternate (sqlite, redis, redis, sqlite,
    ...) so that load on a shared machine hits both alike.
    """
    from serving.tagger import Tagger

    taggers = {store: Tagger(store_settings(args, store)) for store in ("sqlite", "redis")}
    for store, tagger in taggers.items():
        missing = [n for n in tag_model_names() if n not in tagger.models]
        if missing:
            raise RuntimeError(f"{store}: models not loaded: {missing} ({tagger.load_errors})")
        for cid in ids[: args.warmup]:
            tagger.tags([cid])
    samples: dict[str, dict[str, list[float]]] = {s: {"tags": [], "read": []} for s in taggers}
    found = dict.fromkeys(taggers, 0)
    for i, cid in enumerate(ids[args.warmup : args.warmup + args.requests]):
        order = ("sqlite", "redis") if i % 2 == 0 else ("redis", "sqlite")
        for store in order:
            tagger = taggers[store]
            started = time.perf_counter()
            out = tagger.tags([cid])
            samples[store]["tags"].append(1000 * (time.perf_counter() - started))
            found[store] += out[0].found
            started = time.perf_counter()
            tagger.store.get_online_features(
                features=tagger._refs, entity_rows=[{"customer_id": cid}]
            ).to_dict()
            samples[store]["read"].append(1000 * (time.perf_counter() - started))
    for store, count in found.items():
        if count != args.requests:
            raise RuntimeError(f"only {count} of {args.requests} customers were found in the {store} store")
    return {
        store: {
            "tags": percentiles(samples[store]["tags"]),
            "read": percentiles(samples[store]["read"]),
            "features": len(taggers[store]._refs),
        }
        for store in taggers
    }


def step_http(args: argparse.Namespace) -> dict[str, Any]:
    """``POST /v1/tags`` with one id through the BentoML app in-process (TestClient); a child process.

    One app per process: BentoML registers its Prometheus metrics process-wide.
    """
    from starlette.testclient import TestClient

    from serving.service import Portrait

    os.environ.update(settings_env(store_settings(args, args.store)))
    ids = json.loads(Path(args.ids_file).read_text())
    warmup, requests = args.warmup, args.http_requests
    with TestClient(Portrait.to_asgi()) as client:
        for cid in ids[:warmup]:
            client.post("/v1/tags", json={"customer_ids": [cid]})
        samples = []
        for cid in ids[warmup : warmup + requests]:
            started = time.perf_counter()
            response = client.post("/v1/tags", json={"customer_ids": [cid]})
            samples.append(1000 * (time.perf_counter() - started))
            if response.status_code != 200 or not response.json()[0]["found"]:
                raise RuntimeError(f"/v1/tags answered {response.status_code}: {response.text[:300]}")
    return percentiles(samples)


# ---- servers ---------------------------------------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` on a free port without persistence, owned (started and stopped) by this run."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed; pass --redis-url to use a running Redis")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def redis_memory_mb(url: str, private: bool) -> float | None:
    """Redis memory used by the run: the whole private server, or unknown on a shared one."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return client.info("memory")["used_memory"] / 1e6 if private else None
    finally:
        client.close()


def drop_redis_project(url: str, project: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30)
    batch: list[bytes] = []
    for key in client.scan_iter(match=b"*" + project.encode(), count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)
    client.close()


# ---- report ----------------------------------------------------------------------------------------------


TARGET_S = {"redis": 60.0, "sqlite": 180.0}
"""The issue's targets for a load of 1,000,000 customers."""
KIND_LABEL = {
    "first": "first load (empty store)",
    "unchanged": "incremental, nothing changed",
    "reload": "reload, every customer changed",
}
PHASES = ("read", "compare", "prepare", "vectors", "write", "index", "switch", "cleanup", "registry")


def section(args: argparse.Namespace, fig: dict[str, Any]) -> str:
    m = fig["machine"]
    load1, load5, load15 = m["load"]
    beside_text = "; ".join(fig["beside"]) or "nothing else above 10% CPU"
    out = [
        "## Production profile",
        "",
        f"`python benchmarks/bench_production.py --customers {args.customers} --feast-customers "
        f"{args.feast_customers} --requests {args.requests} --http-requests {args.http_requests}` on "
        f"{m['cpus']} cores, {fig['date']}; load average at start **{load1:.2f} / {load5:.2f} / {load15:.2f}** "
        "(1 / 5 / 15 min; 2.0 means both cores busy), and before each step in the tables. Running beside it "
        f"when it started: {beside_text}. Redis: a private `redis-server` ({fig['redis_version']}, no "
        "persistence) on this machine; Feast SQL registry in a fresh PostgreSQL database; SQLite: Feast's "
        "SQLite online store on local disk (WAL journal).",
        "",
        f"### Loads of {args.customers:,} customers (3 batch views, {fig['columns']} feature columns, and the "
        "serving vectors)",
        "",
        f"The serving snapshot of a {args.base_customers:,}-customer synthetic workspace, tiled to "
        f"{args.customers:,} customers. `features.store.materialize` in a fresh process per load (apply not "
        "included; CPU = that process only): the bulk loader (`features/bulk_load.py`) for the batch views and "
        f"the serving vectors, Feast's own materialize for the push view's table ({fig['push_rows']:,} rows). "
        "'Written': customers whose Feast rows were written.",
        "",
        "| online store | load | wall s | customers/s | written | vectors | CPU s | peak RSS MB | store MB after "
        "| load avg before |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for store in ("sqlite", "redis"):
        for kind in LOADS:
            r = fig["loads"][store][kind]
            size = f"{r['size_mb']:,.0f}" if r.get("size_mb") is not None else "-"
            out.append(
                f"| {store} | {KIND_LABEL[kind]} | {r['seconds']:,.1f} | {r['customers_per_s']:,.0f} | "
                f"{r['written']:,} | {r['vectors']:,} | {r['cpu_s']:,.1f} | {r['peak_rss_mb']:,.0f} | {size} | "
                f"{r['load']:.1f} |"
            )
    verdicts = []
    for store in ("redis", "sqlite"):
        seconds = fig["loads"][store]["first"]["seconds"]
        worst = max(r["seconds"] for r in fig["loads"][store].values())
        verdict = "meets" if worst <= TARGET_S[store] else "misses"
        verdicts.append(
            f"{store}: first load **{seconds:,.1f} s**, slowest of the three {worst:,.1f} s against "
            f"{TARGET_S[store]:.0f} s ({verdict} it as measured here)"
        )
    out += [
        "",
        f"Targets for {args.customers:,} customers (Redis <= {TARGET_S['redis']:.0f} s, SQLite <= "
        f"{TARGET_S['sqlite']:.0f} s): "
        + "; ".join(verdicts)
        + ". Store size: the SQLite file (with its WAL; a "
        "rebuilt table leaves the previous one's pages free in the file, reused by the next load); Redis "
        "`used_memory` of the private server.",
        "",
        "Where the loader's time goes (seconds; 'compare': the digests of an incremental SQLite load, before it "
        "decides what to write; 'prepare' -- reading the columns, serializing values, vectors and digests -- "
        "runs on a second thread beside the writes, so it overlaps 'write' / 'vectors'; "
        "'vectors' is the Redis pass writing the new vector slot; 'rest' is the time of `materialize` outside "
        "the loader, mostly Feast's materialize of the push view):",
        "",
        "| online store | load | " + " | ".join(PHASES) + " | loader | rest | how it was switched in |",
        "|---|---|" + "---:|" * (len(PHASES) + 2) + "---|",
    ]
    for store in ("sqlite", "redis"):
        for kind in LOADS:
            r = fig["loads"][store][kind]
            phases = " | ".join(f"{r['phases'].get(p, 0.0):.1f}" if p in r["phases"] else "-" for p in PHASES)
            out.append(
                f"| {store} | {KIND_LABEL[kind]} | {phases} | {r['loader_s']:.1f} | "
                f"{r['seconds'] - r['loader_s']:.1f} | {r['switch']} |"
            )
    if fig.get("feast"):
        n = args.feast_customers
        out += [
            "",
            f"### Feast's own materialize, for comparison ({n:,} customers, extrapolated)",
            "",
            "What `features.store.materialize` did before the bulk loader: Feast's `materialize` of every view, "
            "then the serving vectors rebuilt from the store (`precompute_vectors`), into a separate project, "
            f"in a fresh process. **Measured on the first {n:,} customers only and extrapolated linearly to "
            f"{args.customers:,}** (the full run would take tens of minutes).",
            "",
            "| online store | wall s (measured) | customers/s | of which vectors s | CPU s | peak RSS MB | "
            f"load avg before | extrapolated to {args.customers:,} | bulk first load, measured |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for store in ("sqlite", "redis"):
            r = fig["feast"][store]
            extrapolated = args.customers / r["customers_per_s"]
            bulk = fig["loads"][store]["first"]["seconds"]
            out.append(
                f"| {store} | {r['seconds']:,.1f} | {r['customers_per_s']:,.0f} | {r['vectors_s']:,.1f} | "
                f"{r['cpu_s']:,.1f} | {r['peak_rss_mb']:,.0f} | {r['load']:.1f} | ~{extrapolated:,.0f} s "
                f"(extrapolated) | {bulk:,.1f} s ({extrapolated / bulk:,.0f}x faster) |"
            )
    out.append("")
    return "\n".join(out) + "\n" + _latency_section(args, fig)


def _latency_section(args: argparse.Namespace, fig: dict[str, Any]) -> str:
    out = [
        f"### `/v1/tags` latency, one customer per call ({fig['latency']['sqlite']['features']} online "
        f"features, {' + '.join(tag_model_names())})",
        "",
        f"In-process `Tagger.tags([id])`: {args.requests:,} calls per store after {args.warmup} warm-up "
        "calls, random known customers, the two stores' calls alternating in one process; 'online read' "
        "is the bare Feast `get_online_features` for the "
        f"same id. HTTP: `POST /v1/tags` through the BentoML app ({args.http_requests:,} calls; "
        "`Portrait.to_asgi()` + TestClient in a fresh process per store, so no network hop). "
        f"1-minute load average at the start of the latency runs {fig['latency_load']:.1f}, at the end "
        f"of the whole run {fig['end_load']:.1f}.",
        "",
        "| online store | path | p50 ms | p90 ms | p99 ms | mean ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for store in ("sqlite", "redis"):
        lat = fig["latency"][store]
        rows = [("Tagger.tags", lat["tags"]), ("online read only", lat["read"])]
        if store in fig.get("http", {}):
            rows.append(("HTTP /v1/tags", fig["http"][store]))
        for path, p in rows:
            out.append(
                f"| {store} | {path} | {p['p50']:.2f} | {p['p90']:.2f} | {p['p99']:.2f} | {p['mean']:.2f} |"
            )
    if fig.get("notes"):
        for note in fig["notes"]:
            out += ["", note]
    return "\n".join(out).rstrip() + "\n"


def write_section(text: str, path: Path = RESULTS, *, write: bool = True) -> None:
    """Print the report and replace this benchmark's section of ``path`` (see :func:`results.publish`)."""
    from results import publish

    publish(text, "## Production profile", write=write, path=path)


# ---- main ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from portrait.backends import drop_postgres_database, ensure_postgres_database

    fig: dict[str, Any] = {
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "notes": list(args.note),
    }
    base = build_base(args)
    bench = Path(args.workdir) / "bench"
    started = time.perf_counter()
    tile(base, bench, args.customers)
    logger.info("tiled to %s customers in %.0f s", f"{args.customers:,}", time.perf_counter() - started)
    fig["columns"] = sum(
        len(pd.read_parquet(snapshot_file(bench, v)).columns) - 3 for v in VIEWS
    )  # minus id and the two timestamps

    private = None if args.redis_url else PrivateRedis()
    if private:
        args.redis_url = private.url
    created_db = not args.postgres_url
    if created_db:
        args.postgres_url = (
            f"postgresql+psycopg://postgres@127.0.0.1:5432/portrait_bench_{uuid.uuid4().hex[:8]}"
        )
    ensure_postgres_database(args.postgres_url)
    shutil.rmtree(bench / "data" / "feast", ignore_errors=True)  # a fresh SQLite online store
    if private is None:  # a shared Redis: the first load starts from an empty project there too
        drop_redis_project(args.redis_url, f"portrait_{args.key_prefix}")
    fig["beside"] = beside()
    fig["push_rows"] = sum(
        len(pd.read_parquet(snapshot_file(bench, v), columns=["customer_id"]))
        for v in (p.name for p in (bench / "data" / "features").iterdir())
        if v not in VIEWS and snapshot_file(bench, v).exists()
    )
    try:
        import redis

        client = redis.Redis.from_url(args.redis_url)
        fig["redis_version"] = f"Redis {client.info('server')['redis_version']}"
        client.close()
        fig["loads"] = {}
        for store in args.stores:
            fig["loads"][store] = {}
            for kind in LOADS:
                logger.info("%s load of %s customers into %s", kind, f"{args.customers:,}", store)
                result = timed_in_child(args, "load", store, args.customers, f"--kind={kind}")
                result["size_mb"] = store_size_mb(args, store, bench, private is not None)
                fig["loads"][store][kind] = result
                logger.info("%s %s: %s", store, kind, result)
        fig["feast"] = {}
        if args.feast_customers:
            tile(base, Path(args.workdir) / "feast_subset", args.feast_customers)
            for store in ("sqlite", "redis"):
                logger.info(
                    "Feast's own materialize of %s customers into %s", f"{args.feast_customers:,}", store
                )
                fig["feast"][store] = timed_in_child(args, "feast", store, args.feast_customers)
                logger.info("feast %s: %s", store, fig["feast"][store])
            drop_redis_project(args.redis_url, feast_settings(args, "redis").feast_project_name)
            shutil.rmtree(feast_settings(args, "sqlite").feast_dir, ignore_errors=True)

        if len(args.stores) < 2:  # the latency parts compare both stores
            fig["end_load"] = os.getloadavg()[0]
            return fig
        ids = pd.read_parquet(snapshot_file(bench, VIEWS[0]), columns=["customer_id"]).customer_id.tolist()
        rng = np.random.default_rng(5)
        sample = [
            ids[i] for i in rng.integers(0, len(ids), args.warmup + max(args.requests, args.http_requests))
        ]
        fig["latency_load"] = os.getloadavg()[0]
        fig["latency"], fig["http"] = tagger_latency(args, sample), {}
        logger.info("latency: %s", fig["latency"])
        if args.http_requests:
            ids_file = Path(args.workdir) / "latency_ids.json"
            ids_file.write_text(json.dumps(sample))
            for store in ("sqlite", "redis"):
                fig["http"][store] = in_child(
                    args,
                    "http",
                    store,
                    f"--ids-file={ids_file}",
                    f"--http-requests={args.http_requests}",
                    f"--warmup={args.warmup}",
                )
                logger.info("%s HTTP latency: %s", store, fig["http"][store])
        fig["end_load"] = os.getloadavg()[0]
    finally:
        if private:
            private.stop()
        else:
            drop_redis_project(args.redis_url, f"portrait_{args.key_prefix}")
        if created_db:
            drop_postgres_database(args.postgres_url)
    return fig


def main() -> None:
    """Parse arguments, run the parts, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="Customers to materialize.")
    parser.add_argument("--base-customers", type=int, default=5_000, help="Customers through the pipeline.")
    parser.add_argument("--requests", type=int, default=2_000, help="In-process latency calls per store.")
    parser.add_argument("--http-requests", type=int, default=500, help="HTTP calls per store (0: skip).")
    parser.add_argument("--warmup", type=int, default=50, help="Warm-up calls before timing.")
    parser.add_argument("--workdir", default=None, help="Reused between runs (default: a temp dir).")
    parser.add_argument("--redis-url", default="", help="Use this Redis instead of a private redis-server.")
    parser.add_argument("--postgres-url", default="", help="Registry database (default: a fresh one).")
    parser.add_argument("--key-prefix", default="bench", help="Feast project suffix in Redis.")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    parser.add_argument(
        "--feast-customers",
        type=int,
        default=100_000,
        help="Customers loaded by Feast's own materialize for comparison (0: skip), extrapolated.",
    )
    parser.add_argument("--note", action="append", default=[], help="A line to add to the section.")
    parser.add_argument(
        "--stores",
        nargs="+",
        choices=["sqlite", "redis"],
        default=["sqlite", "redis"],
        help="Online stores to load (one store: the loads only, printed with --no-write).",
    )
    parser.add_argument("--step", choices=["load", "feast", "http"], help=argparse.SUPPRESS)
    parser.add_argument("--store", choices=["sqlite", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=LOADS, default="first", help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "bentoml", "httpx", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.step:
        step = {"load": step_load, "feast": step_feast, "http": step_http}[args.step]
        print(json.dumps(step(args)))
        return
    temp = None
    if args.workdir is None:
        temp = tempfile.TemporaryDirectory(prefix="bench_production_")
        args.workdir = temp.name
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    try:
        fig = run(args)
    finally:
        if temp:
            temp.cleanup()
    if len(args.stores) < 2:  # the section compares both stores: print this store's loads only
        print(json.dumps(fig["loads"], indent=1, default=str))
        return
    write_section(section(args, fig), write=not args.no_write)


if __name__ == "__main__":
    main()

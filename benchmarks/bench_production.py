"""Production-profile benchmark: materialization into Redis vs SQLite, and ``/v1/tags`` latency on each.

One run, same machine, same data, side by side:

1. **Data**: a ``--base-customers`` synthetic workspace built by ``portrait.workflow.build_workspace``
   (synth -> validate -> features + Feast apply -> train; no materialization), with every tag model of
   the catalogue (churn, conversion, clv) trained on it (``trials=1``) into a SQLite MLflow store. The serving snapshot's three feature tables are then tiled to ``--customers`` customers (new
   ids, same rows repeated): materialization cost depends on rows and columns, not on their realism,
   and building 1M customers' features through the pipeline takes far longer than loading them.
2. **Materialization**: ``features.store.apply`` + a full ``features.store.materialize`` of that snapshot,
   once into the SQLite online store (local profile) and once into Redis (production profile: Feast SQL
   registry in a fresh PostgreSQL database, Redis a private ``redis-server`` started by this script, so
   the shared one is not filled with a million keys). Each load runs in a fresh child process: wall
   time, customers/s and feature-view rows/s, CPU time and peak RSS of the child, and the size of the
   store afterwards (SQLite file; Redis ``used_memory``).
3. **Latency**: ``Tagger.tags([one_id])`` in-process for random known customers, ``--requests`` calls per
   store after a warm-up (p50/p90/p99), plus the bare Feast online read inside it; then the same over
   HTTP through the BentoML app (``Portrait.to_asgi()`` + Starlette's TestClient, in a child process
   per store, no network hop) for ``--http-requests`` calls. Both stores serve the same models (the
   SQLite MLflow store), so the difference is the online store.

Figures are printed and written to the ``## Production profile`` section of ``benchmarks/RESULTS.md``
(only that section is replaced), with the machine and its load average: the machine may be shared.

Usage: ``python benchmarks/bench_production.py [--customers 1000000] [--requests 2000] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
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
    """Write the serving snapshot of ``customers`` customers by repeating the base customers' rows."""
    marker = bench / "tiled.json"
    if marker.exists() and json.loads(marker.read_text()).get("customers") == customers:
        return
    shutil.rmtree(bench, ignore_errors=True)
    ids = pd.Series([f"P{i:08d}" for i in range(customers)], dtype="string")
    for view in VIEWS:
        frame = pd.read_parquet(snapshot_file(base, view))
        rows = np.resize(np.arange(len(frame)), customers)
        big = frame.iloc[rows].reset_index(drop=True)
        big["customer_id"] = ids.astype(frame["customer_id"].dtype)
        out = snapshot_file(bench, view)
        out.parent.mkdir(parents=True, exist_ok=True)
        big.to_parquet(out, index=False)
    marker.write_text(json.dumps({"customers": customers}))


# ---- 2. materialization (child process) ------------------------------------------------------------------


def step_materialize(args: argparse.Namespace) -> dict[str, Any]:
    """Apply + full materialization of the tiled snapshot into one store; runs in a child process."""
    from features import repo
    from features import store as fs

    settings = store_settings(args, args.store)
    settings.ensure_dirs()
    started = time.perf_counter()
    store = repo.apply(settings)
    applied = time.perf_counter() - started
    cpu0, started = cpu_seconds(), time.perf_counter()
    result = fs.materialize(
        settings,
        start=SNAPSHOT - timedelta(seconds=1),
        end=SNAPSHOT + timedelta(days=1),
        incremental=False,
        store=store,
    )
    seconds = time.perf_counter() - started
    return {
        "store": args.store,
        "apply_s": applied,
        "seconds": seconds,
        "vectors_s": result["vectors_seconds"],  # part of `seconds`: rebuilding the serving vectors
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


def materialized_file(args: argparse.Namespace, store: str) -> Path:
    return Path(args.workdir) / f"materialized_{store}.json"


def materialize_in_child(args: argparse.Namespace, store: str) -> dict[str, Any]:
    """Materialize into ``store`` in a child process; the figures are also kept in the workdir."""
    logger.info("materializing %s customers into %s", f"{args.customers:,}", store)
    load = os.getloadavg()[0]
    started_at = datetime.now(UTC)
    result = in_child(args, "materialize", store)
    result["load"] = load
    result["rows_per_s"] = 3 * args.customers / result["seconds"]
    result["customers_per_s"] = args.customers / result["seconds"]
    result["customers"] = args.customers
    result["measured_at"] = f"{started_at:%Y-%m-%d %H:%M} UTC"
    materialized_file(args, store).write_text(json.dumps(result))
    return result


def reused_sqlite(args: argparse.Namespace, bench: Path) -> dict[str, Any] | None:
    """The SQLite figures of an earlier run in this workdir when ``--reuse-sqlite`` and its store is intact."""
    saved = materialized_file(args, "sqlite")
    if not (args.reuse_sqlite and saved.exists() and (bench / "data" / "feast" / "online_store.db").exists()):
        return None
    result = json.loads(saved.read_text())
    if result.get("customers") != args.customers:
        return None
    logger.info("reusing the SQLite store materialized at %s", result["measured_at"])
    return result | {"reused": True}


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


def section(args: argparse.Namespace, fig: dict[str, Any]) -> str:
    m = fig["machine"]
    reused = bool(fig["materialize"]["sqlite"].get("reused"))
    out = [
        "## Production profile",
        "",
        f"`python benchmarks/bench_production.py --customers {args.customers} --requests {args.requests} "
        f"--http-requests {args.http_requests}{' --reuse-sqlite' if reused else ''}` on {m['cpus']} cores, "
        f"{fig['date']}; load average at start {m['load'][0]:.1f} (shared machine: other jobs were running, "
        "so absolute times are pessimistic; "
        + (
            "the SQLite load comes from an earlier run, see below; the latency runs alternate the stores"
            if reused
            else "the two stores ran back to back under the same conditions"
        )
        + "). Redis: a private `redis-server` "
        f"({fig['redis_version']}, no persistence) on this machine; Feast SQL registry in a fresh "
        "PostgreSQL database; SQLite: Feast's SQLite online store on local disk.",
        "",
        f"### Materialization of {args.customers:,} customers (3 feature views, {fig['columns']} feature "
        "columns)",
        "",
        f"The serving snapshot of a {args.base_customers:,}-customer synthetic workspace, tiled to "
        f"{args.customers:,} customers. Full `features.store.materialize` in a fresh process each "
        "(apply not included; CPU = the materializing process only).",
        "",
        "| online store | wall s | customers/s | view rows/s | CPU s | peak RSS MB | store size MB | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for store in ("sqlite", "redis"):
        r = fig["materialize"][store]
        size = f"{r['size_mb']:,.0f}" if r.get("size_mb") is not None else "-"
        when = f" (earlier run, {r['measured_at']})" if r.get("reused") else ""
        out.append(
            f"| {store}{when} | {r['seconds']:,.1f} | {r['customers_per_s']:,.0f} | {r['rows_per_s']:,.0f} | "
            f"{r['cpu_s']:,.1f} | {r['peak_rss_mb']:,.0f} | {size} | {r['load']:.1f} |"
        )
    ratio = fig["materialize"]["sqlite"]["seconds"] / fig["materialize"]["redis"]["seconds"]
    out += [
        "",
        f"Redis / SQLite speed: {ratio:.2f}x. Store size: the SQLite file; Redis `used_memory` of the "
        "private server. Load avg: the 1-minute load average when that store's load started."
        + (
            " The SQLite row comes from an earlier run in the same workdir (same tiled data; "
            "`--reuse-sqlite`): its store was kept and served the latency runs below."
            if reused
            else ""
        ),
        "",
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
    sqlite_result = reused_sqlite(args, bench)
    if sqlite_result is None:
        shutil.rmtree(bench / "data" / "feast", ignore_errors=True)  # a fresh SQLite online store
    try:
        import redis

        client = redis.Redis.from_url(args.redis_url)
        fig["redis_version"] = f"Redis {client.info('server')['redis_version']}"
        client.close()
        fig["materialize"] = {"sqlite": sqlite_result} if sqlite_result else {}
        for store in ("sqlite", "redis"):
            if store not in fig["materialize"]:
                fig["materialize"][store] = materialize_in_child(args, store)
            logger.info("%s: %s", store, fig["materialize"][store])
        online_db = bench / "data" / "feast" / "online_store.db"
        fig["materialize"]["sqlite"]["size_mb"] = online_db.stat().st_size / 1e6
        fig["materialize"]["redis"]["size_mb"] = redis_memory_mb(args.redis_url, private is not None)

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
        "--reuse-sqlite",
        action="store_true",
        help="Keep the SQLite store and figures of an earlier run in --workdir (same --customers).",
    )
    parser.add_argument("--note", action="append", default=[], help="A line to add to the section.")
    parser.add_argument("--step", choices=["materialize", "http"], help=argparse.SUPPRESS)
    parser.add_argument("--store", choices=["sqlite", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "bentoml", "httpx", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.step:
        step = step_materialize if args.step == "materialize" else step_http
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
    write_section(section(args, fig), write=not args.no_write)


if __name__ == "__main__":
    main()

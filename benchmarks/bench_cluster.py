"""Cluster-profile benchmark: DuckDB on one machine and Spark (``local[2]``) side by side, and a projection.

For each ``--sizes`` (default 10,000 and 100,000 synthetic customers), on the same machine, data and snapshot:

1. **Features**: the three feature tables of the serving snapshot, by ``features.pipeline.compute_features``
   (DuckDB) and ``features.spark.compute_features`` (the same Ibis definitions on PySpark, ``local[2]``). The
   Spark session's start is timed apart. Then one Spark task rewrites the largest table as one file (what the
   one-file-per-view layout costs at the end of a build: the serial part of a Spark build).
2. **Training frame**: Feast ``get_historical_features`` of the ``tags_v1`` FeatureService for every customer
   at the snapshot: the DuckDB offline store (production profile; the frame in memory) and the Spark offline
   store (cluster profile; entities from a Spark table, the frame written as Parquet by the executors, which
   is what the distributed refit reads), each over its own engine's tables.
3. **Materialization**: ``features.store.materialize`` on each profile (the batch views go through Portrait's
   bulk loader on both, the push view through Feast's materialize: on Spark for the cluster profile), and
   Feast's own ``materialize`` of the three batch views through the Spark offline store.
4. **Scoring**: every customer's tags, by ``Tagger.tags_frame`` in batches of 10,000 over the online store
   (``portrait score``, one process) and by ``portrait.scoring.score_on_spark`` (partitions scored in
   parallel with ``mapInPandas``). The models (churn, conversion, clv; one trial) are trained once on a
   separate 5,000-customer workspace.

Every step runs in a fresh child process; its wall time, CPU time and peak memory -- the resident memory of
the process and everything under it (Spark's JVM and Python workers), sampled every 0.2 s -- are reported.
Redis is a private ``redis-server`` (no persistence) and the registry and MLflow a fresh PostgreSQL database,
both removed afterwards.

**Projection**: from the Spark steps' measured rates per core (customers per core-second, local[2]; marginal
between the two largest sizes, so that fixed costs -- JVM, Python workers, job planning -- cancel out), the time
of each step for ``--target`` customers (default 50M) on a cluster of ``--executors`` x ``--executor-cores``
cores, assuming the work per customer stays the same and spreads evenly over the cores; the one-file writes
and the driver-side steps are projected at their measured serial rates. It is labelled as a projection, not a
measurement.

Figures are printed and written to the ``## Cluster`` section of ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_cluster.py [--sizes 10000 100000 1000000] [--target 50000000] [--executors 10]
[--executor-cores 8] [--no-write]``. Needs Java 17, PostgreSQL (``PORTRAIT_POSTGRES_URL`` or 127.0.0.1) and
``redis-server``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.results import publish  # noqa: E402
from portrait.settings import Settings  # noqa: E402

logger = logging.getLogger("bench_cluster")
SECTION = "## Cluster"
END = datetime(2025, 1, 1, tzinfo=UTC)
SNAPSHOT = END + timedelta(days=1)
SPARK_CONF = {"spark.ui.enabled": "false", "spark.driver.memory": "4g", "spark.sql.shuffle.partitions": "8"}
TRAIN_CUSTOMERS = 5_000
TAG_MODELS = ("churn", "conversion", "clv")
SCORE_BATCH = 10_000


# ---- settings of one run ---------------------------------------------------------------------------------
def settings_for(kind: str, home: Path, env: dict[str, str]) -> Settings:
    """``duckdb``: the production profile over DuckDB's tables; ``spark``: the cluster profile over Spark's;
    ``train``: the production profile of the training workspace. All share Redis, PostgreSQL and MLflow."""
    common: dict[str, Any] = {
        "home": home,
        "postgres_url": env["postgres_url"],
        "redis_url": env["redis_url"],
        "mlflow_tracking_uri": None,
        "mlflow_artifact_root": None,
        "api_keys": {},
    }
    if kind == "spark":
        return Settings(
            profile="cluster",
            redis_key_prefix=f"{env['prefix']}s",
            spark_master="local[2]",
            spark_conf=SPARK_CONF,
            **common,
        )
    return Settings(profile="production", redis_key_prefix=f"{env['prefix']}{kind[0]}", **common)


# ---- child steps -----------------------------------------------------------------------------------------
class TreeMemory:
    """Peak resident memory of this process and all its descendants, sampled in a thread."""

    def __init__(self, every_s: float = 0.2) -> None:
        import psutil

        self._me = psutil.Process()
        self._every = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> int:
        import psutil

        total = 0
        for process in [self._me, *self._me.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.sample()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.sample()
        return self.peak


def _customers(home: Path) -> list[str]:
    import pandas as pd

    from features.tables import snapshot_path

    path = snapshot_path(home / "data" / "features", "customer_profile", SNAPSHOT)
    return pd.read_parquet(path, columns=["customer_id"]).customer_id.tolist()


def _spark(settings: Settings) -> Any:
    from features.spark import spark_session

    session = spark_session(settings)
    session.sparkContext.setLogLevel("ERROR")
    return session


def _spark_frame(settings: Settings, store: Any, service: Any, work: Path) -> tuple[int, int, float]:
    """The training frame on the cluster profile, as :mod:`training.distributed` reads it: the entities a Spark
    DataFrame (every customer of the profile snapshot), ``RetrievalJob.to_spark_df()`` written as Parquet by
    the executors. Nothing is collected to the driver: ``to_df()`` (``toPandas``) of a million rows hung
    here, the JVM's Arrow serving thread gone and the driver waiting for its result. (rows, columns, s)"""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

    from features.tables import snapshot_path

    session = _spark(settings)
    profile = snapshot_path(settings.home / "data" / "features", "customer_profile", SNAPSHOT)
    target = work / "frame_spark.parquet"
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    entity = session.read.parquet(str(profile)).select(
        "customer_id", F.lit(SNAPSHOT.replace(tzinfo=None)).cast("timestamp").alias("event_timestamp")
    )
    job = store.get_historical_features(entity_df=entity, features=service)
    job.to_spark_df().write.parquet(str(target))
    seconds = time.perf_counter() - started
    dataset = pq.ParquetDataset(target)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in dataset.files)
    columns = len(dataset.schema.names)
    shutil.rmtree(target, ignore_errors=True)
    return rows, columns, seconds


def step(name: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one step in this (child) process; returns its figures."""
    duck, spark_home = work / "duckdb", work / "spark"
    out: dict[str, Any] = {}
    if name == "features_duckdb":
        from features.pipeline import compute_features

        build = compute_features(duck / "data" / "clean", duck / "data" / "features", [SNAPSHOT])
        out["rows"] = build.rows
    elif name == "features_spark":
        from features import spark as fsp
        from features.tables import snapshot_path

        started = time.perf_counter()
        session = _spark(settings_for("spark", spark_home, env))
        out["session_s"] = time.perf_counter() - started
        started = time.perf_counter()
        build = fsp.compute_features(
            session, spark_home / "data" / "clean", spark_home / "data" / "features", [SNAPSHOT]
        )
        out["compute_s"] = time.perf_counter() - started
        out["rows"] = build.rows
        # The serial end of a build: one task writing one view's file (here the widest one, already computed).
        table = session.read.parquet(
            str(snapshot_path(spark_home / "data" / "features", "customer_behaviour", SNAPSHOT))
        ).cache()
        table.count()
        started = time.perf_counter()
        fsp.write_single_parquet(table, work / "single_writer.parquet")
        out["single_writer_s"] = time.perf_counter() - started
        table.unpersist()
    elif name in ("frame_duckdb", "frame_spark"):
        import pandas as pd

        from features import store as fs

        kind = name.removeprefix("frame_")
        settings = settings_for(kind, duck if kind == "duckdb" else spark_home, env)
        if kind == "spark":
            started = time.perf_counter()
            _spark(settings)
            out["session_s"] = time.perf_counter() - started
        store = fs.feature_store(settings)
        service = store.get_feature_service("tags_v1")
        if kind == "duckdb":  # one machine: the frame in memory, as training.dataset builds it
            ids = _customers(settings.home)
            entity = pd.DataFrame({"customer_id": ids, "event_timestamp": pd.Timestamp(SNAPSHOT)})
            started = time.perf_counter()
            frame = store.get_historical_features(entity_df=entity, features=service).to_df()
            out["frame_s"] = time.perf_counter() - started
            out["rows"], out["columns"] = frame.shape
        else:  # the cluster: entities from a Spark table, the frame written by the Spark job as Parquet
            out["rows"], out["columns"], out["frame_s"] = _spark_frame(settings, store, service, work)
    elif name in ("materialize_duckdb", "materialize_spark"):
        from features import store as fs

        kind = name.removeprefix("materialize_")
        settings = settings_for(kind, duck if kind == "duckdb" else spark_home, env)
        if kind == "spark":
            _spark(settings)
        result = fs.materialize(settings, end=SNAPSHOT + timedelta(days=1))
        out["vectors"] = result["vectors"]
        out["loader_s"] = (result.get("load") or {}).get("seconds", {}).get("total", 0.0)
    elif name == "materialize_feast_spark":
        from features import store as fs
        from features.pipeline import VIEWS

        settings = settings_for("spark", spark_home, env).model_copy(
            update={"redis_key_prefix": f"{env['prefix']}f"}
        )
        _spark(settings)
        from features import repo

        store = repo.apply(settings)
        started = time.perf_counter()
        store.materialize(
            start_date=SNAPSHOT - timedelta(days=1),
            end_date=SNAPSHOT + timedelta(days=1),
            feature_views=list(VIEWS),
        )
        out["feast_s"] = time.perf_counter() - started
    elif name == "score_local":
        import pandas as pd

        from serving.tagger import Tagger, freeze_startup_objects

        settings = settings_for("duckdb", duck, env)
        ids = _customers(duck)
        tagger = Tagger(settings)
        assert not [n for n in TAG_MODELS if n not in tagger.models], tagger.load_errors
        freeze_startup_objects()
        started = time.perf_counter()
        parts = [tagger.tags_frame(ids[i : i + SCORE_BATCH]) for i in range(0, len(ids), SCORE_BATCH)]
        frame = pd.concat(parts, ignore_index=True)
        frame.to_parquet(work / "tags_local.parquet", index=False)
        out["score_s"] = time.perf_counter() - started
        out["rows"] = len(frame)
    elif name == "score_spark":
        from portrait.scoring import score_on_spark

        settings = settings_for("spark", spark_home, env)
        started = time.perf_counter()
        session = _spark(settings)
        out["session_s"] = time.perf_counter() - started
        run = score_on_spark(settings, session, work / "tags_spark.parquet")
        out["score_s"] = run.seconds
        out["rows"], out["partitions"] = run.customers, run.partitions
    else:
        raise SystemExit(f"unknown step {name}")
    return out


def run_child(args: argparse.Namespace) -> None:
    """``--step``: run one step, then print its figures as the last line (JSON)."""
    import resource

    logging.basicConfig(level=logging.WARNING)
    env = json.loads(args.env)
    memory = TreeMemory()
    started, cpu = time.perf_counter(), time.process_time()
    figures = step(args.step, Path(args.work), env)
    figures["wall_s"] = time.perf_counter() - started
    figures["cpu_s"] = time.process_time() - cpu
    figures["peak_mb"] = memory.stop() / 2**20
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures["children_cpu_s"] = children.ru_utime + children.ru_stime  # JVM and workers that exited
    print(json.dumps(figures))  # noqa: T201 - the parent reads it


def measure(name: str, work: Path, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    load = os.getloadavg()[0]
    done = subprocess.run(
        [sys.executable, __file__, "--step", name, "--work", str(work), "--env", json.dumps(env)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        raise SystemExit(f"step {name} failed:\n{done.stderr[-4000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["load"] = load
    logger.info(
        "%s: %.1f s, peak %.0f MB (load %.1f before)", name, figures["wall_s"], figures["peak_mb"], load
    )
    return figures


# ---- set-up ------------------------------------------------------------------------------------------------
def prepare(work: Path, customers: int, env: dict[str, str], seed: int = 11) -> None:
    """Synthetic inputs for ``customers`` in the DuckDB and Spark workspaces (the same validated files)."""
    from features.synth import SynthConfig
    from portrait.workflow import synthesize

    base = Settings(home=work / "duckdb")
    synthesize(
        base, SynthConfig(n_customers=customers, seed=seed, start=END - timedelta(days=3 * 365), end=END)
    )
    shutil.copytree(base.clean_dir, work / "spark" / "data" / "clean")


def register(work: Path, env: dict[str, str]) -> None:
    """Apply the Feast repository of both workspaces (their registries in the shared database)."""
    from features import repo

    for kind, home in (("duckdb", work / "duckdb"), ("spark", work / "spark")):
        settings = settings_for(kind, home, env)
        settings.ensure_dirs()
        repo.apply(settings)


def train(train_home: Path, env: dict[str, str]) -> None:
    """Churn, conversion and CLV (one trial each) on a small workspace, promoted in the shared MLflow."""
    from features.synth import SynthConfig
    from portrait.workflow import build_features, synthesize
    from training.train import train_named

    settings = settings_for("train", train_home, env)
    settings.ensure_dirs()
    synthesize(
        settings,
        SynthConfig(n_customers=TRAIN_CUSTOMERS, seed=5, start=END - timedelta(days=3 * 365), end=END),
    )
    build_features(settings, [SNAPSHOT])
    for name in TAG_MODELS:
        train_named(settings, name, trials=1, n_train=2, step_days=60)


class PrivateRedis:
    """A ``redis-server`` on a free port without persistence, started and stopped by this run."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# ---- the report ---------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import psutil

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"cpus": cpus, "model": model, "ram_gib": psutil.virtual_memory().total / 2**30}


def _s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _row(label: str, fig: dict[str, Any] | None, seconds: float, customers: int, note: str = "") -> str:
    if fig is None:
        return (
            f"| {label} | not run | | | | above --online-max: Redis would need about {4 * customers / 1e6:.0f} GB "
            "per store on this 24 GiB machine |"
        )
    rate = customers / seconds if seconds else 0.0
    return (
        f"| {label} | {_s(seconds)} | {rate:,.0f} | {fig['peak_mb']:,.0f} MB | {fig['load']:.1f} | {note} |"
    )


def _rates(runs: dict[int, dict[str, dict[str, Any]]], seconds: Any) -> tuple[float, str]:
    """Customers per second of a step: marginal between the two largest sizes (fixed costs such as JVM and
    worker start-up cancel out), or over the one size measured (fixed costs included)."""
    sizes = sorted(runs)
    if len(sizes) >= 2:
        small, large = sizes[-2], sizes[-1]
        extra = seconds(runs[large]) - seconds(runs[small])
        if extra > 0:
            return (large - small) / extra, f"marginal, {small:,} -> {large:,}"
    return sizes[-1] / max(seconds(runs[sizes[-1]]), 1e-9), f"{sizes[-1]:,} customers, fixed costs included"


def projection(runs: dict[int, dict[str, dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    """Per-step time for ``args.target`` customers on the stated cluster, from the measured rates."""
    cores_here = 2  # local[2]
    cores = args.executors * args.executor_cores
    writer, _ = _rates(runs, lambda f: f["features_spark"]["single_writer_s"])
    spark_steps = {
        "feature tables (3 views, 1 snapshot)": lambda f: (
            f["features_spark"]["compute_s"] - 3 * f["features_spark"]["single_writer_s"]
        ),
        "training frame (get_historical_features)": lambda f: f["frame_spark"]["frame_s"],
        "scoring (mapInPandas)": lambda f: f["score_spark"]["score_s"],
    }
    lines = [
        f"### Projection to {args.target:,} customers on {args.executors} executors x {args.executor_cores} cores "
        f"({cores} cores) -- a projection, not a measurement",
        "",
        f"From the local[2] rates measured above: each Spark step's time (less the one-file writes of the feature "
        f"build) in customers per core-second, spread over {cores} cores; the one-file writes (3 views, one task "
        f"each) at the measured single-task rate ({writer:,.0f} rows/s); the bulk loader (the batch views' "
        "materialization, on the driver) at its measured one-machine rate. Assumes the work per customer stays "
        "constant, even partitions, executors as fast per core as this machine, and shared storage and network no "
        "slower than this machine's local disk. Not projected: the push view's materialization (customers active "
        "in the last day only) and job start-up (seconds to a minute per job).",
        "",
        "| step | rate | from | projected time |",
        "|---|---|---|---|",
    ]
    total = 0.0
    for label, seconds in spark_steps.items():
        rate, basis = _rates(runs, seconds)
        per_core = rate / cores_here
        projected = args.target / (per_core * cores)
        shown = _s(projected)
        if label.startswith("feature tables"):
            serial = 3 * args.target / writer
            shown = f"{_s(projected)} parallel + {_s(serial)} one-file writes"
            projected += serial
        lines.append(f"| {label} | {per_core:,.0f} customers/s per core | {basis} | {shown} |")
        total += projected
    loaded = {size: f for size, f in runs.items() if "materialize_spark" in f}
    loader, basis = _rates(loaded, lambda f: f["materialize_spark"]["loader_s"])
    lines.append(
        f"| materialization (bulk loader, driver) | {loader:,.0f} customers/s, one machine | {basis} | "
        f"{_s(args.target / loader)} |"
    )
    total += args.target / loader
    lines.append(f"| **total** | | | **{_s(total)}** |")
    return lines


def report(
    host: dict[str, Any], runs: dict[int, dict[str, dict[str, Any]]], args: argparse.Namespace, started: float
) -> str:
    import duckdb
    import pyspark

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        SECTION,
        "",
        f"`python benchmarks/bench_cluster.py --sizes {' '.join(str(s) for s in sorted(runs))}` on {day}: "
        f"{host['cpus']} cores ({host['model']}), {host['ram_gib']:.0f} GiB RAM, shared machine (load average "
        f"before each step in the table). DuckDB {duckdb.__version__}, PySpark {pyspark.__version__} "
        f"(local[2], driver memory {SPARK_CONF['spark.driver.memory']}). Each step in a fresh process; peak "
        "memory = resident memory of the process and everything under it (JVM, Python workers). Run time "
        f"{_s(time.perf_counter() - started)}.",
        "",
    ]
    for customers, f in sorted(runs.items()):
        spark_session = f["features_spark"]["session_s"]
        measured = f.get("_measured", {})
        lines += [
            f"### {customers:,} customers, one snapshot ({f['features_duckdb']['rows']:,} customer rows)",
            "",
            f"Measured {measured.get('at', 'in this run')}; 1-minute load average {measured.get('load_before', 0):.1f} "
            f"before and {measured.get('load_after', 0):.1f} after.",
            "",
            "| step | time | customers/s | peak memory | load | |",
            "|---|---|---|---|---|---|",
            _row("features, DuckDB", f["features_duckdb"], f["features_duckdb"]["wall_s"], customers),
            _row(
                "features, Spark",
                f["features_spark"],
                f["features_spark"]["compute_s"],
                customers,
                f"+ {_s(spark_session)} session start; one task rewriting the widest table as one file: "
                f"{_s(f['features_spark']['single_writer_s'])}",
            ),
            _row(
                "training frame, DuckDB offline store",
                f["frame_duckdb"],
                f["frame_duckdb"]["frame_s"],
                customers,
                f"{f['frame_duckdb']['rows']:,} x {f['frame_duckdb']['columns']}",
            ),
            _row(
                "training frame, Spark offline store",
                f["frame_spark"],
                f["frame_spark"]["frame_s"],
                customers,
                f"{f['frame_spark']['rows']:,} x {f['frame_spark']['columns']}, written as Parquet by the executors",
            ),
            _row(
                "materialize, production profile",
                f.get("materialize_duckdb"),
                f.get("materialize_duckdb", {}).get("wall_s", 0.0),
                customers,
                "bulk loader (DuckDB read) + Feast for the push view",
            ),
            _row(
                "materialize, cluster profile",
                f.get("materialize_spark"),
                f.get("materialize_spark", {}).get("wall_s", 0.0),
                customers,
                "bulk loader + Feast on Spark for the push view; incl. session start",
            ),
            _row(
                "Feast materialize on Spark (3 batch views)",
                f.get("materialize_feast_spark"),
                f.get("materialize_feast_spark", {}).get("feast_s", 0.0),
                customers,
                "Feast's own path through the Spark offline store",
            ),
            _row(
                "scoring, one process (Tagger, online store)",
                f.get("score_local"),
                f.get("score_local", {}).get("score_s", 0.0),
                customers,
                "`portrait score --no-spark`",
            ),
            _row(
                "scoring, Spark partitions",
                f["score_spark"],
                f["score_spark"]["score_s"],
                customers,
                f"`portrait score` on the cluster profile, {f['score_spark']['partitions']} partitions",
            ),
            "",
        ]
    lines += projection(runs, args)
    lines += [
        "",
        "On 2 shared cores Spark pays for its JVM, query planning and Python worker start-up, which DuckDB does "
        "not: the local[2] figures are the per-core rates the projection starts from, not an argument for Spark on "
        "one machine.",
    ]
    return "\n".join(lines)


STEPS = (
    "features_duckdb",
    "features_spark",
    "frame_duckdb",
    "frame_spark",
    "materialize_duckdb",
    "materialize_spark",
    "materialize_feast_spark",
    "score_local",
    "score_spark",
)


ONLINE_STEPS = ("materialize_duckdb", "materialize_spark", "materialize_feast_spark", "score_local")
"""Steps that fill (or read) the online store: Redis holds about 4 GB per million customers and store."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        help="Customers per run (rates: the two largest).",
    )
    parser.add_argument("--target", type=int, default=50_000_000, help="Customers of the projection.")
    parser.add_argument("--executors", type=int, default=10, help="Executors of the projected cluster.")
    parser.add_argument("--executor-cores", type=int, default=8, help="Cores per executor of the projection.")
    parser.add_argument("--step-timeout", type=float, default=3600, help="Seconds a step may take.")
    parser.add_argument(
        "--online-max",
        type=int,
        default=2_000_000,
        help="Largest size whose online-store steps run (materializations and scoring over Redis): Redis needs "
        "about 4 GB per million customers and store, and the materializations fill two stores.",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="Where the workspaces go (default: a temp dir)."
    )
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="JSON of the sizes measured so far: read at the start, written after each size, so that a long "
        "curve can be measured in several runs (each size says when it was measured).",
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--env", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        run_child(args)
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "py4j", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from features.spark import java_problem
    from portrait.backends import drop_postgres_database, ensure_postgres_database

    if problem := java_problem():
        raise SystemExit(problem)
    started = time.perf_counter()
    host = machine()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_cluster_"))
    redis_server = PrivateRedis()
    server = os.environ.get("PORTRAIT_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    database = server.rsplit("/", 1)[0] + f"/portrait_bench_{uuid.uuid4().hex[:8]}"
    ensure_postgres_database(database, timeout_s=5)
    env = {"postgres_url": database, "redis_url": redis_server.url, "prefix": f"b{uuid.uuid4().hex[:6]}"}
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    if args.keep and args.keep.exists():
        runs = {int(size): figures for size, figures in json.loads(args.keep.read_text()).items()}
    try:
        logger.info("training the models on %d customers", TRAIN_CUSTOMERS)
        train(root / "train", env)
        for customers in args.sizes:
            work = root / f"n{customers}"
            logger.info("%d customers in %s", customers, work)
            prepare(work, customers, env)
            env_n = {**env, "prefix": f"{env['prefix']}{customers}"}
            register(work, env_n)
            load = os.getloadavg()
            steps = [n for n in STEPS if customers <= args.online_max or n not in ONLINE_STEPS]
            runs[customers] = {name: measure(name, work, env_n, args.step_timeout) for name in steps}
            runs[customers]["_measured"] = {
                "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "load_before": load[0],
                "load_after": os.getloadavg()[0],
            }
            if args.keep:
                args.keep.write_text(json.dumps(runs, indent=1))
            if args.workdir is None:
                shutil.rmtree(work, ignore_errors=True)  # a 5M-customer workspace holds tens of GB
    finally:
        redis_server.stop()
        drop_postgres_database(database)
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    publish(report(host, runs, args, started), SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()

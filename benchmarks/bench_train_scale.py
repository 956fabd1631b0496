"""Training when the frame does not fit: `portrait train churn` with the frame in memory and on the cluster
profile (the frame written by Spark, a sample in the training process, the refit on every row on Dask).

For ``--customers`` synthetic customers (default 1,000,000) the churn model is trained twice on the same
validated data and the same feature tables (built once by DuckDB; ``tests/cluster`` shows Spark builds the
same tables), each in a fresh child process:

1. **in memory** -- the local profile: labels by DuckDB, the whole training frame in the process, the search
   on a sample of it (``training.fit.SEARCH_ROWS``) and the refit on every row in the process;
2. **cluster** -- the cluster profile (``local[2]`` Spark, registry and MLflow on a fresh PostgreSQL database)
   with ``PORTRAIT_DISTRIBUTED_REFIT=true`` and ``PORTRAIT_TRAIN_MEMORY_ROWS`` set to ``--memory-share`` of the
   frame's rows: labels by Spark SQL, the labelled frame written as Parquet by the executors, a sample of
   customers read by the process for the search, calibration and evaluation, and the refit on every row by
   LightGBM on a local Dask cluster of 2 workers.

Reported per run: wall time, the training process's own peak resident memory (the driver: what has to fit
one machine) and the peak of the process tree (with Spark's JVM and the Dask workers, which on a cluster run
elsewhere), the rows held in memory and refitted, and the test AUC (the in-memory run on every test customer,
the cluster run on its sample's). Written to the ``## Training at scale`` section of ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_train_scale.py [--customers 1000000] [--memory-share 0.25] [--trials 4]
[--no-write]``. Needs Java 17 and PostgreSQL (``PORTRAIT_POSTGRES_URL`` or 127.0.0.1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_cluster import SPARK_CONF, TreeMemory, machine  # noqa: E402
from benchmarks.results import publish  # noqa: E402
from portrait.settings import Settings  # noqa: E402

logger = logging.getLogger("bench_train_scale")
SECTION = "## Training at scale"
END = datetime(2025, 1, 1, tzinfo=UTC)
PLAN = {"n_train": 2, "step_days": 60}
RUNS = ("in_memory", "cluster")


def settings_for(run: str, home: Path, env: dict[str, Any]) -> Settings:
    if run == "in_memory":
        return Settings(home=home, profile="local", mlflow_tracking_uri=None, mlflow_artifact_root=None)
    return Settings(
        home=home,
        profile="cluster",
        postgres_url=env["postgres_url"],
        redis_url=env["redis_url"],
        redis_key_prefix=env["prefix"],
        mlflow_tracking_uri=None,
        mlflow_artifact_root=None,
        spark_master="local[2]",
        spark_conf=SPARK_CONF,
        distributed_refit=True,
        dask_workers=2,
        train_memory_rows=env["memory_rows"],
        api_keys={},
    )


def child(run: str, home: Path, env: dict[str, Any]) -> dict[str, Any]:
    """Train churn once in this process; returns the figures."""
    import mlflow

    from training.train import train_named

    settings = settings_for(run, home, env)
    settings.ensure_dirs()
    tree = TreeMemory()
    started = time.perf_counter()
    outcome = train_named(settings, "churn", trials=env["trials"], **PLAN)
    seconds = time.perf_counter() - started
    model = mlflow.pyfunc.load_model(f"models:/churn/{outcome.version}").unwrap_python_model()
    fit = model.metadata["fit"]
    return {
        "wall_s": seconds,
        "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tree_peak_mb": tree.stop() / 2**20,
        "in_memory_rows": sum(outcome.sizes.values()),
        "refit_rows": (fit.get("distributed") or {}).get("rows")
        or outcome.sizes["train"] + outcome.sizes["validation"],
        "test_auc": outcome.metrics["test_auc"],
        "rounds": fit.get("rounds"),
    }


def measure(run: str, home: Path, env: dict[str, Any]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    done = subprocess.run(
        [sys.executable, __file__, "--child", run, "--home", str(home), "--env", json.dumps(env)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    (home / f"{run}.stderr.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{run} failed (stderr in {home / f'{run}.stderr.log'}):\n{done.stderr[-4000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["load_before"] = load
    logger.info("%s: %s", run, figures)
    return figures


def prepare(root: Path, customers: int) -> tuple[Path, Path, int]:
    """The synthetic inputs and DuckDB's feature tables for churn's plan, in two workspaces (in memory,
    cluster); returns them and the number of labelled churn rows."""
    from features.pipeline import compute_features
    from features.synth import SynthConfig
    from portrait.workflow import synthesize
    from training.labels import build_labels
    from training.train import plan_for, resolve

    memory, cluster = root / "in_memory", root / "cluster"
    settings = Settings(home=memory, profile="local")
    settings.ensure_dirs()
    spec, options = resolve(settings, "churn", **PLAN)
    if not (cluster / "data" / "features").exists():  # else kept from an earlier run (--workdir)
        config = SynthConfig(n_customers=customers, seed=11, start=END - timedelta(days=3 * 365), end=END)
        synthesize(settings, config)
        compute_features(settings.clean_dir, settings.features_dir, plan_for(settings, spec, **options).all)
        for folder in ("clean", "features"):
            shutil.copytree(memory / "data" / folder, cluster / "data" / folder)
    plan = plan_for(settings, spec, **options)
    rows = len(build_labels(settings.clean_dir, plan.all, spec.label))
    return memory, cluster, rows


def _mb(value: float) -> str:
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


def report(
    host: dict[str, Any], customers: int, rows: int, runs: dict[str, dict[str, Any]], args: Any
) -> str:
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {host['cpus']} cores ({host['model']}), "
        f"{host['ram_gib']:.0f} GiB; nothing else heavy ran; load average before each run in the table. "
        f"`python benchmarks/bench_train_scale.py --customers {customers} --memory-share {args.memory_share} "
        f"--trials {args.trials}`: churn ({PLAN['n_train']} training snapshots {PLAN['step_days']} days apart "
        f"and the test snapshot), {customers:,} synthetic customers, {rows:,} labelled rows.",
        "",
        "| run | wall | training process peak | whole tree peak (JVM, Dask workers) | rows in the process | "
        "rows refitted | test AUC | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "in_memory": "in memory (local profile)",
        "cluster": f"cluster profile, PORTRAIT_TRAIN_MEMORY_ROWS={runs.get('cluster', {}).get('memory_rows', 0):,}",
    }
    for run in runs:
        fig = runs[run]
        lines.append(
            f"| {names[run]} | {fig['wall_s']:.0f} s | {_mb(fig['driver_peak_mb'])} | {_mb(fig['tree_peak_mb'])} | "
            f"{fig['in_memory_rows']:,} | {fig['refit_rows']:,} | {fig['test_auc']:.3f} | "
            f"{fig['load_before']:.1f} |"
        )
    lines += [
        "",
        "The training process's peak is what must fit the machine that runs `portrait train`; on a cluster the "
        "JVM's executors and the Dask workers are other machines. The cluster run's test AUC is measured on its "
        "sample's test customers.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--memory-share", type=float, default=0.25, help="PORTRAIT_TRAIN_MEMORY_ROWS as a share of the rows."
    )
    parser.add_argument("--trials", type=int, default=4, help="Optuna trials of each run.")
    parser.add_argument("--workdir", type=Path, default=None, help="Where the workspaces go (default: temp).")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    parser.add_argument(
        "--runs", nargs="+", choices=RUNS, default=list(RUNS), help="Which runs (default both)."
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--env", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(child(args.child, Path(args.home), json.loads(args.env))))  # noqa: T201 - parent reads
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from features.spark import java_problem
    from portrait.backends import drop_postgres_database, ensure_postgres_database

    if problem := java_problem():
        raise SystemExit(problem)
    host = machine()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_train_scale_"))
    server = os.environ.get("PORTRAIT_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    database = server.rsplit("/", 1)[0] + f"/portrait_bench_{uuid.uuid4().hex[:8]}"
    ensure_postgres_database(database, timeout_s=5)
    try:
        logger.info("%d customers in %s", args.customers, root)
        memory, cluster, rows = prepare(root, args.customers)
        env = {
            "postgres_url": database,
            "redis_url": os.environ.get("PORTRAIT_REDIS_URL", "redis://127.0.0.1:6379/0"),
            "prefix": f"b{uuid.uuid4().hex[:6]}",
            "memory_rows": max(1000, int(rows * args.memory_share)),
            "trials": args.trials,
        }
        runs = {run: measure(run, memory if run == "in_memory" else cluster, env) for run in args.runs}
        if "cluster" in runs:
            runs["cluster"]["memory_rows"] = env["memory_rows"]
    finally:
        drop_postgres_database(database)
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    publish(report(host, args.customers, rows, runs, args), SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()

"""Feature-pipeline benchmark: one snapshot of 1M customers / 10M transactions / 50M events.

The goal (a benchmark, not a timed test): the three feature tables of one snapshot in at most 20 s on
2 cores, peak memory reported. One run does, on the same machine and under the same load:

1. **Data**: ``--customers`` synthetic customers (``features.synth``, about 10 transactions and 50 events
   each), generated and validated into the workspace's clean dir by ``portrait.workflow.synthesize``
   (the workflow's data step). An existing ``--workdir`` built with the same ``--customers`` and
   ``--seed`` is reused (generating and validating 1M customers takes ~3 minutes).
2. **Features**: ``compute_features(clean_dir, out_dir, [T])`` for the snapshot ``T`` at the end of the
   data, ``--runs`` times.
3. **Baseline**: a plain DuckDB SQL aggregation of the same transactions and events by customer (counts,
   sums and last times over all history and 30/90-day windows, the two joined and written to Parquet),
   ``--runs`` times; the ratio pipeline / baseline is reported: how far the feature definitions are from
   the pace DuckDB itself sets on this machine.
4. **Reference** (optional, ``--reference REV_OR_PATH``): another ``compute_features`` implementation,
   timed once the same way: a Python file, or a git revision whose ``features/pipeline.py`` is used
   (e.g. the pipeline before an optimisation).
5. **Online store (SQLite)**: ``features.repo.apply`` and a full ``features.store.materialize`` of the
   snapshot for all customers (the bulk loader, ``features/bulk_load.py``, writes the batch views and the
   serving vectors; Feast's own materialize the push view's table); and, for comparison, what
   ``materialize`` did before -- Feast's own ``materialize`` of every view, then the serving vectors rebuilt
   from the store -- on the first ``--materialize-customers`` customers (default 100k: all 1M takes half an
   hour on 2 cores), extrapolated linearly to all customers (and labelled so).

Every timed run is a fresh child process (this script with ``--step``), like a ``portrait features
build`` call: its wall time is taken around the call, its CPU time (user + system, DuckDB's threads
included) and peak RSS (``VmHWM``, exact) are the child's own, so runs do not inherit each other's
memory. Figures are printed and written to the ``## Features`` section of ``benchmarks/RESULTS.md``
(only that section is replaced) with the date, the machine and the load average at start: the machine
may be shared, so medians and CPU time (which other processes' load does not inflate) are reported.

Usage: ``python benchmarks/bench_features.py [--customers 1000000] [--runs 3] [--keep]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Features"
TARGET_SECONDS = 20.0
ISSUE_BASELINE_S = 2.5  # "a plain DuckDB windowed aggregation ... takes about 2.5 s on these machines"
INPUTS = ("customers", "transactions", "events")
STEPS = ("features", "baseline", "reference", "materialize", "bulk")

BASELINE_SQL = """
COPY (
    WITH tx AS (
        SELECT customer_id,
               count(*) FILTER (WHERE NOT is_return) AS lines,
               sum(amount) FILTER (WHERE NOT is_return) AS spend,
               sum(amount) FILTER (WHERE NOT is_return AND ts > $cut90) AS spend_90d,
               count(*) FILTER (WHERE ts > $cut90) AS lines_90d,
               max(ts) AS last_tx
        FROM read_parquet($transactions) WHERE ts < $snapshot GROUP BY customer_id
    ), ev AS (
        SELECT customer_id,
               count(*) AS events,
               count(*) FILTER (WHERE ts > $cut30) AS events_30d,
               count(*) FILTER (WHERE ts > $cut90) AS events_90d,
               max(ts) AS last_event
        FROM read_parquet($events) WHERE ts < $snapshot GROUP BY customer_id
    )
    SELECT * FROM tx FULL OUTER JOIN ev USING (customer_id)
) TO $out (FORMAT parquet)
"""


def mb(n_bytes: float) -> float:
    return n_bytes / 2**20


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} minutes"


# ---- the timed steps (run in a child process) ------------------------------------------------------------


def snapshot_of(customers: int, seed: int) -> datetime:
    """The snapshot: the end of the synthetic history (the day after the last activity)."""
    from features.synth import SynthConfig

    return SynthConfig(n_customers=customers, seed=seed).end


def step_features(home: Path, snapshot: datetime, args: argparse.Namespace) -> dict[str, Any]:
    from features.pipeline import compute_features
    from portrait.settings import Settings

    settings = Settings(home=home)
    build = compute_features(settings.clean_dir, settings.features_dir, [snapshot])
    return {"rows": build.rows}


def step_baseline(home: Path, snapshot: datetime, args: argparse.Namespace) -> dict[str, Any]:
    """The plain DuckDB aggregation of transactions and events by customer (default connection)."""
    import duckdb

    clean = home / "data" / "clean"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            BASELINE_SQL,
            {
                "transactions": str(clean / "transactions.parquet"),
                "events": str(clean / "events.parquet"),
                "snapshot": snapshot,
                "cut30": snapshot - timedelta(days=30),
                "cut90": snapshot - timedelta(days=90),
                "out": str(home / "baseline.parquet"),
            },
        )
        threads = con.execute("SELECT current_setting('threads')").fetchone()
    return {"threads": threads[0] if threads else None}


def reference_file(reference: str, home: Path) -> Path:
    """``reference`` if it is a file, else ``features/pipeline.py`` at that git revision (into ``home``)."""
    if Path(reference).is_file():
        return Path(reference)
    repo = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{reference}:features/pipeline.py"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    target = home / f"reference_pipeline_{re.sub(r'[^A-Za-z0-9_.-]', '_', reference)}.py"
    target.write_text(source)
    return target


def step_reference(home: Path, snapshot: datetime, args: argparse.Namespace) -> dict[str, Any]:
    """``compute_features`` of another implementation of the pipeline, loaded from ``--reference``."""
    spec = importlib.util.spec_from_file_location("reference_pipeline", args.reference)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {args.reference}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    started = time.perf_counter()
    module.compute_features(home / "data" / "clean", home / "reference_features", [snapshot])
    return {"seconds": time.perf_counter() - started}


def step_materialize(home: Path, snapshot: datetime, args: argparse.Namespace) -> dict[str, Any]:
    """What ``features.store.materialize`` did before the bulk loader, into SQLite: Feast's own materialize of
    every view of the snapshot, then the serving vectors rebuilt from the store."""
    from features import repo
    from features import store as fs
    from portrait.settings import Settings

    settings = Settings(home=home)
    shutil.rmtree(settings.feast_dir, ignore_errors=True)
    started = time.perf_counter()
    store = repo.apply(settings)
    applied = time.perf_counter()
    views = [v.name for v in store.list_feature_views()]
    store.materialize(start_date=snapshot, end_date=snapshot + timedelta(days=1), feature_views=views)
    vectors = time.perf_counter()
    fs.precompute_vectors(settings, store)
    return {
        "apply_s": applied - started,
        "materialize_s": time.perf_counter() - applied,
        "vectors_s": time.perf_counter() - vectors,
    }


def step_bulk(home: Path, snapshot: datetime, args: argparse.Namespace) -> dict[str, Any]:
    """Apply + a full ``features.store.materialize`` of the snapshot into SQLite (the bulk loader)."""
    from features import repo
    from features import store as fs
    from portrait.settings import Settings

    settings = Settings(home=home)
    shutil.rmtree(settings.feast_dir, ignore_errors=True)
    started = time.perf_counter()
    store = repo.apply(settings)
    applied = time.perf_counter()
    result = fs.materialize(
        settings, start=snapshot, end=snapshot + timedelta(days=1), incremental=False, store=store
    )
    online = settings.feast_dir / "online_store.db"
    return {
        "apply_s": applied - started,
        "materialize_s": time.perf_counter() - applied,
        "loader_s": result["load"]["seconds"]["total"],
        "vectors": result["vectors"],
        "size_mb": sum(p.stat().st_size for p in online.parent.glob(online.name + "*")) / 2**20,
    }


def run_step(args: argparse.Namespace) -> None:
    """Child process: run one step and print its figures as JSON on the last line."""
    steps: dict[str, Callable[[Path, datetime, argparse.Namespace], dict[str, Any]]] = {
        "features": step_features,
        "baseline": step_baseline,
        "reference": step_reference,
        "materialize": step_materialize,
        "bulk": step_bulk,
    }
    snapshot = snapshot_of(args.customers, args.seed)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    extra = steps[args.step](args.workdir, snapshot, args)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_rss": peak_rss(usage), **extra}))


def peak_rss(usage: resource.struct_rusage) -> int:
    """Peak resident memory of this process in bytes (Python, imports and the engine).

    Linux's ``VmHWM`` is the high-water mark of this program's own memory; ``ru_maxrss`` would also count
    the parent's memory at ``fork`` (it survives ``exec``), so it is only the fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return usage.ru_maxrss * 1024  # KiB on Linux


# ---- the parent: data, runs, report ----------------------------------------------------------------------


@dataclass
class Timing:
    """Several runs of one step; medians are reported."""

    label: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(float(r[key]) for r in self.runs)

    @property
    def wall(self) -> float:
        return self.median("wall")

    @property
    def cpu(self) -> float:
        return self.median("cpu")

    @property
    def peak_rss(self) -> int:
        return max(int(r["peak_rss"]) for r in self.runs)

    @property
    def load_text(self) -> str:
        return " / ".join(f"{x:.1f}" for x in self.loads)


def measure(step: str, args: argparse.Namespace, home: Path, runs: int) -> Timing:
    """Run ``step`` ``runs`` times, each in a fresh child process."""
    timing = Timing(step)
    for i in range(runs):
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--step",
            step,
            "--workdir",
            str(home),
            "--customers",
            str(args.customers),
            "--seed",
            str(args.seed),
        ]
        if step == "reference":
            command += ["--reference", str(args.reference_file)]
        timing.loads.append(os.getloadavg()[0])
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        timing.runs.append(result)
        print(
            f"  {step} run {i + 1}/{runs}: {result['wall']:.2f} s wall, {result['cpu']:.2f} s CPU, "
            f"peak RSS {mb(result['peak_rss']):,.0f} MB (load {timing.loads[-1]:.1f} before)",
            flush=True,
        )
    return timing


def prepare_data(home: Path, customers: int, seed: int) -> dict[str, int]:
    """Generate and validate the synthetic inputs (:func:`portrait.workflow.synthesize`) unless the
    workspace already holds them; the accepted rows come from the validation report it writes."""
    from features.synth import SynthConfig
    from features.validate import ValidationReport
    from portrait import workflow
    from portrait.settings import Settings

    settings = Settings(home=home)
    marker = home / "bench_features.json"
    wanted = {"customers": customers, "seed": seed}
    if marker.exists() and all((settings.clean_dir / f"{t}.parquet").exists() for t in INPUTS):
        info = json.loads(marker.read_text())
        if {k: info.get(k) for k in wanted} == wanted:
            print(f"reusing the validated data in {home}")
            return info["rows"]
    settings.ensure_dirs()
    config = SynthConfig(n_customers=customers, seed=seed)
    started = time.perf_counter()
    generated = workflow.synthesize(settings, config).seconds
    validated = time.perf_counter() - started - generated
    report = ValidationReport.model_validate_json((settings.reports_dir / "validation.json").read_text())
    rows = {name: table.accepted for name, table in report.tables.items()}
    print(f"data: generated in {generated:.0f} s, validated in {validated:.0f} s")
    marker.write_text(json.dumps({**wanted, "rows": rows}))
    return rows


def subset_workspace(home: Path, target: Path, snapshot: datetime, customers: int) -> int:
    """A workspace whose feature files are the snapshot's, restricted to the first ``customers`` ids."""
    import duckdb

    from features.pipeline import snapshot_label

    name = f"snapshot={snapshot_label(snapshot)}.parquet"
    source = home / "data" / "features"
    shutil.rmtree(target, ignore_errors=True)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            "CREATE TEMP TABLE keep AS "
            "SELECT customer_id FROM read_parquet($src) ORDER BY customer_id LIMIT $n",
            {"src": str(source / "customer_profile" / name), "n": customers},
        )
        kept = con.execute("SELECT count(*) FROM keep").fetchone()
        views = sorted(p.name for p in source.iterdir() if (p / name).exists())
        for view in views:
            out = target / "data" / "features" / view / name
            out.parent.mkdir(parents=True, exist_ok=True)
            con.execute(
                "COPY (SELECT f.* FROM read_parquet($src) f SEMI JOIN keep USING (customer_id)) "
                "TO $out (FORMAT parquet)",
                {"src": str(source / view / name), "out": str(out)},
            )
    return int(kept[0]) if kept else 0


def machine() -> dict[str, Any]:
    import psutil

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from bench_production import beside

    return {
        "cpus": cpus,
        "model": model,
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "load": os.getloadavg(),
        "beside": beside(),
    }


def report(
    args: argparse.Namespace,
    host: dict[str, Any],
    rows: dict[str, int],
    snapshot: datetime,
    timings: dict[str, Timing],
    materialized: dict[str, Any] | None,
    bulk: Timing | None = None,
) -> str:
    """The ``## Features`` section of RESULTS.md."""
    import duckdb
    import ibis

    load1, load5, load15 = host["load"]
    command = f"python benchmarks/bench_features.py --customers {args.customers} --runs {args.runs}"
    if args.reference:
        command += f" --reference {args.reference}"
    feats, base, reference = timings["features"], timings["baseline"], timings.get("reference")
    idle = feats.cpu / max(1, host["cpus"])
    verdict = "meets" if feats.wall <= TARGET_SECONDS else "misses"
    lines = [
        SECTION,
        "",
        f"`{command}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {host['cpus']} CPUs "
        f"({host['model']}), {host['ram_gib']:.1f} GiB RAM, shared with other work: load average at start "
        f"**{load1:.2f} / {load5:.2f} / {load15:.2f}** (1 / 5 / 15 min; 2.0 means both cores busy); running "
        f"beside it when it started: {'; '.join(host.get('beside') or []) or 'nothing else above 10% CPU'}. "
        f"DuckDB {duckdb.__version__}, Ibis {ibis.__version__}.",
        "",
        f"Data: {rows['customers']:,} customers, {rows['transactions']:,} transactions, "
        f"{rows['events']:,} events (synthetic, seed {args.seed}); one snapshot, {snapshot:%Y-%m-%d} "
        "(the end of the data). Each run is a fresh process; wall and CPU are medians over the runs. "
        "CPU is the process's user + system time, which other processes' load does not inflate: CPU / 2 "
        "is about the wall time on 2 idle cores. Peak RSS is the process's high-water mark (`VmHWM`; "
        "Python and imports included).",
        "",
        "| step | runs | wall s (median) | CPU s (median) | peak RSS MB | load (1 min) before each run |",
        "|---|---:|---:|---:|---:|---|",
    ]
    named = [("`compute_features`: 3 views, 1 snapshot", feats)]
    if reference is not None:
        named.append((f"reference: `compute_features` of `{args.reference}`", reference))
    named.append(("baseline: plain DuckDB SQL aggregation by customer", base))
    for name, t in named:
        lines.append(
            f"| {name} | {len(t.runs)} | {t.wall:.1f} | {t.cpu:.1f} | {mb(t.peak_rss):,.0f} | {t.load_text} |"
        )
    lines += [
        "",
        f"* **compute_features: {feats.wall:.1f} s** median wall under this load ({verdict} the "
        f"{TARGET_SECONDS:.0f} s target as measured); {feats.cpu:.1f} CPU-seconds, i.e. about {idle:.1f} s "
        f"on {host['cpus']} idle cores; peak RSS {mb(feats.peak_rss):,.0f} MB.",
        f"* ratio to the plain DuckDB baseline: **{feats.wall / base.wall:.1f}x** wall, "
        f"**{feats.cpu / base.cpu:.1f}x** CPU (baseline {base.wall:.1f} s wall, {base.cpu:.1f} s CPU, "
        f"peak RSS {mb(base.peak_rss):,.0f} MB). The issue quotes about {ISSUE_BASELINE_S} s for such an "
        f"aggregation on an idle machine of this kind: at the same CPU ratio the pipeline would take about "
        f"{feats.cpu / base.cpu * ISSUE_BASELINE_S:.0f} s there.",
    ]
    if reference is not None:
        lines.append(
            f"* reference -> now: {reference.wall:.1f} s -> {feats.wall:.1f} s wall "
            f"(**{reference.wall / feats.wall:.1f}x**), {reference.cpu:.1f} -> {feats.cpu:.1f} CPU-seconds "
            f"({reference.cpu / feats.cpu:.1f}x), peak RSS {mb(reference.peak_rss):,.0f} -> "
            f"{mb(feats.peak_rss):,.0f} MB."
        )
    if bulk is not None:
        b = bulk.runs[0]
        total = rows["customers"]
        lines.append(
            f"* Online store, local profile (SQLite), all {total:,} customers (3 batch views, one row per "
            f"customer and feature, and the serving vectors): `features.store.materialize` with the bulk loader "
            f"**{b['materialize_s']:.1f} s = {total / b['materialize_s']:,.0f} customers/s** (apply "
            f"{b['apply_s']:.1f} s before it; the loader itself {b['loader_s']:.1f} s, the rest Feast's "
            f"materialize of the push view), {b['vectors']:,} vectors, {b['cpu']:.1f} CPU-seconds, peak RSS "
            f"{mb(b['peak_rss']):,.0f} MB, online store {b['size_mb']:,.0f} MB, load {bulk.load_text} before."
        )
    if materialized is not None:
        m, n, total = materialized["timing"].runs[0], materialized["customers"], rows["customers"]
        rate = n / m["materialize_s"]
        scope = f"{n:,} of the {total:,} customers" if n < total else f"all {total:,} customers"
        text = (
            f"* For comparison, Feast's own materialize (what `materialize` did before), {scope}: "
            f"**{m['materialize_s']:.1f} s = {rate:,.0f} customers/s**, of which {m['vectors_s']:.1f} s rebuild "
            f"the serving vectors from the store, peak RSS {mb(m['peak_rss']):,.0f} MB, load "
            f"{materialized['timing'].load_text} before."
        )
        if n < total:
            text += (
                f" **Extrapolated** linearly to {total:,} customers: about **{duration(total / rate)}** "
                "(measured on a subset to keep the benchmark short)"
                + (f", {total / rate / bulk.runs[0]['materialize_s']:,.0f}x the bulk load." if bulk else ".")
            )
        lines.append(text)
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = RESULTS, *, write: bool = True) -> None:
    """Print the report and replace this benchmark's section of ``path`` (see :func:`results.publish`)."""
    from results import publish

    publish(text, "## Features", write=write, path=path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="Synthetic customers.")
    parser.add_argument("--seed", type=int, default=0, help="Synthetic data seed.")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="Workspace for data and outputs (default: a folder in the temp dir named after --customers "
        "and --seed). Validated data already there is reused.",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the workdir (otherwise removed if this run created it)."
    )
    parser.add_argument("--runs", type=int, default=3, help="Timed runs of the pipeline and of the baseline.")
    parser.add_argument(
        "--materialize-customers",
        type=int,
        default=100_000,
        help="Customers loaded by Feast's own materialize, for comparison (0: skip; >= --customers: all).",
    )
    parser.add_argument(
        "--reference", default=None, help="Another pipeline (a file, or a git revision), timed once."
    )
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        run_step(args)
        return

    host = machine()
    print(f"machine: {host['cpus']} CPUs, {host['ram_gib']:.1f} GiB RAM, load average {host['load']}")
    home = (
        args.workdir or Path(tempfile.gettempdir()) / f"portrait-bench-features-{args.customers}-{args.seed}"
    )
    args.workdir = home
    created = not home.exists()
    try:
        rows = prepare_data(home, args.customers, args.seed)
        snapshot = snapshot_of(args.customers, args.seed)
        runs = max(1, args.runs)
        timings: dict[str, Timing] = {}
        print(f"compute_features, snapshot {snapshot:%Y-%m-%d}:")
        timings["features"] = measure("features", args, home, runs)
        print("DuckDB baseline:")
        timings["baseline"] = measure("baseline", args, home, runs)
        if args.reference:
            args.reference_file = reference_file(args.reference, home)
            print(f"reference {args.reference}:")
            timings["reference"] = measure("reference", args, home, 1)
        print(f"features.store.materialize (bulk loader), {rows['customers']:,} customers:")
        bulk = measure("bulk", args, home, 1)
        materialized = None
        if args.materialize_customers > 0:
            n = min(args.materialize_customers, rows["customers"])
            target = home
            if n < rows["customers"]:
                target = home / f"materialize_{n}"
                n = subset_workspace(home, target, snapshot, n)
            print(f"Feast's own apply + materialize, {n:,} customers:")
            materialized = {"customers": n, "timing": measure("materialize", args, target, 1)}
    finally:
        if created and not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    text = report(args, host, rows, snapshot, timings, materialized, bulk)
    write_section(text, write=not args.no_write)


if __name__ == "__main__":
    main()

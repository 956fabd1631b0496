"""Lookalike benchmark: scale (1M customers), latency, ANN recall, and audience quality vs the baseline.

Three parts, one run; figures are printed and written to the ``## Lookalike`` section of
``benchmarks/RESULTS.md`` (only that section is replaced):

1. **Quality on synthetic segments**: ``--quality-customers`` synthetic customers through the
   workflow's data and feature steps (``portrait.workflow.synthesize`` -> ``build_features``), read
   through Feast ``lookalike_v1``; Optuna-tuned on validation seeds, then seeds of 100 / 1,000 / 10,000
   drawn from each latent segment (at most half of it), audience = the rest of the segment; precision,
   recall and lift of the model vs the baseline (cosine to the seed's mean over standardised features).
   Medians over segments.
2. **Scale**: 1M customers. Building 1M customers' features is slow, so the 1M vectors are the quality
   population's real embeddings resampled with a small jitter (same dimensionality and cluster
   structure; segment labels carried over). Index build time and peak memory; 1,000-seed -> 10,000
   audiences over ``--runs`` seeds: p50/p99 latency per method, and recall of the ANN path against exact
   brute-force scoring of the same similarity.
3. **UCI Online Retail** (when ``<data_dir>/online_retail.parquet`` and ``features.loaders`` exist):
   behavioural segments (top-decile spend, bought from category X, buys mostly category X), half held out.

The lookalike representation includes the category mix (``features/categories.py``); the baseline is the
centroid over the ``lookalike_v1`` features alone, as before, and is also reported with the category mix.
``--skip-scale`` keeps the Scale subsection of the previous run in RESULTS.md (marked as such).

Usage: ``python benchmarks/bench_lookalike.py [--quality-customers 200000] [--scale 1000000] [--runs 20]``
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from portrait.lookalike import ExpansionRequest, LookalikeModel, LookalikeParams
from portrait.settings import Settings
from training.lookalike import (
    PopulationFrame,
    behavioural_segments,
    build_baseline,
    build_lookalike,
    evaluate_cases,
    latest_snapshot,
    load_population,
    make_cases,
    truth_segments,
    tune,
)

logger = logging.getLogger("bench_lookalike")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
END = datetime(2025, 1, 1, tzinfo=UTC)


# ---- helpers ---------------------------------------------------------------------------------------------


class PeakRss:
    """Samples the process's resident memory in a thread; ``peak`` is the highest seen (bytes)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def mb(n_bytes: float) -> float:
    """Bytes as mebibytes."""
    return n_bytes / 2**20


def synthetic_workspace(home: Path, customers: int, seed: int = 0) -> Settings:
    """A synthetic workspace with one feature snapshot at END (reused when already built): the workflow's
    data and feature steps (``synthesize`` -> ``build_features``, Feast apply included)."""
    from features.synth import SynthConfig
    from portrait import workflow

    settings = Settings(home=home)
    marker = settings.features_dir / "customer_profile" / "snapshot=20250101T000000.parquet"
    if marker.exists() and (settings.raw_dir / "truth.parquet").exists():
        logger.info("reusing synthetic workspace %s", home)
        return settings
    settings.ensure_dirs()
    started = time.perf_counter()
    config = SynthConfig(n_customers=customers, seed=seed, start=END - timedelta(days=730), end=END)
    workflow.synthesize(settings, config)  # validated as of config.end = END
    workflow.build_features(settings, [END])
    logger.info("synthetic workspace of %d customers in %.0fs", customers, time.perf_counter() - started)
    return settings


def quality(
    population: PopulationFrame, segments: dict[str, np.ndarray], seed_sizes: list[int], trials: int
) -> tuple[pd.DataFrame, LookalikeParams, dict[str, Any]]:
    """Tune on validation seeds, then model vs baseline on test seeds: medians over segments per seed size."""
    n = len(population.frame)
    val = make_cases(segments, seed_sizes, random_seed=1)
    test = make_cases(segments, seed_sizes, random_seed=2)
    started = time.perf_counter()
    tuned = tune(population, val, trials=trials)
    tune_s = time.perf_counter() - started
    model = build_lookalike(population, tuned.params)
    tuned.params = model.params  # with the effective number of components
    baseline = build_baseline(population)
    ours = evaluate_cases(model, test, n)
    base = evaluate_cases(baseline, test, n)
    # The centroid baseline given the category mix too, for comparison (the headline baseline has none).
    base_taste = evaluate_cases(build_baseline(population, taste=True), test, n) if population.taste else None
    rows = []
    for size in sorted(set(ours.seed_size)):
        a, b = ours[ours.seed_size == size], base[base.seed_size == size]
        row = {"seed": int(size), "segments": len(a), "method": ",".join(sorted(set(a.method)))}
        for metric in ("precision", "recall", "lift"):
            row[metric] = float(a[metric].median())
            row[f"baseline_{metric}"] = float(b[metric].median())
        row["recall_ratio"] = (
            row["recall"] / row["baseline_recall"] if row["baseline_recall"] else float("nan")
        )
        row["wins"] = int((a.recall.to_numpy() > b.recall.to_numpy()).sum())
        row["baseline_taste_recall"] = (
            float(base_taste[base_taste.seed_size == size].recall.median())
            if base_taste is not None
            else float("nan")
        )
        row["expand_ms_median"] = float(a.seconds.median() * 1000)
        rows.append(row)
    info = {"tune_seconds": tune_s, "trials": trials, "params": tuned.params, "population": n,
            "taste": list(population.taste)}  # fmt: skip
    return pd.DataFrame(rows), tuned.params, info


def scale_model(
    population: PopulationFrame,
    params: LookalikeParams,
    target: int,
    labels: dict[str, np.ndarray],
    threads: int,
) -> tuple[LookalikeModel, np.ndarray, dict[str, float]]:
    """``target`` customers: the population's embeddings resampled with jitter; index built and measured."""
    small = build_lookalike(population, params, build_index=False)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, small.population_size, size=target)
    base = small.vectors
    noise = rng.standard_normal((target, base.shape[1]), dtype=np.float32) * (0.05 * base.std(axis=0))
    vectors = (base[rows] + noise).astype(np.float32)
    del noise
    segment_of = np.full(small.population_size, "", dtype=object)
    for name, members in labels.items():
        pos, _ = small.positions(members)
        segment_of[pos] = name
    ids = np.char.add("S", np.char.zfill(np.arange(target).astype(str), 8))
    model = LookalikeModel.from_vectors(small.representation, ids, vectors, params, build_index=False)
    del vectors
    with PeakRss() as rss:
        seconds = model.build_index(threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        folder = model.save(Path(tmp) / "artefact")
        save_s = time.perf_counter() - started
        index_mb = mb((folder / "index.bin").stat().st_size)
        artefact_mb = mb(sum(f.stat().st_size for f in folder.iterdir()))
        started = time.perf_counter()
        LookalikeModel.load(folder)
        load_s = time.perf_counter() - started
    figures = {
        "build_seconds": seconds,
        "rss_before_mb": mb(rss.start),
        "rss_peak_mb": mb(rss.peak),
        "build_extra_mb": mb(rss.peak - rss.start),
        "index_file_mb": index_mb,
        "artefact_mb": artefact_mb,
        "save_seconds": save_s,
        "load_seconds": load_s,
        "dim": model.vectors.shape[1],
        "threads": threads,
    }
    return model, segment_of[rows], figures


def latency(
    model: LookalikeModel, segment_of: np.ndarray, runs: int, seed_size: int, size: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``runs`` seeds (each from one segment, round robin): latency per method and ANN recall vs exact."""
    exact = LookalikeModel.from_vectors(
        model.representation, model.customer_ids, model.vectors, model.params, build_index=False
    )
    names = sorted(set(segment_of.tolist()) - {""})
    rows = []
    recalls = []

    def timed(scorer: LookalikeModel, request: ExpansionRequest, label: str) -> Any:
        started = time.perf_counter()
        result = scorer.expand(request)
        ms = (time.perf_counter() - started) * 1000
        rows.append({"method": label, "used": result.method, "index": result.used_index, "ms": ms})
        return result

    for run in range(runs):
        members = np.flatnonzero(segment_of == names[run % len(names)])
        rng = np.random.default_rng(1000 + run)
        seed = model.customer_ids[rng.choice(members, size=seed_size, replace=False)].tolist()
        for method in ("auto", "similarity", "classifier"):
            request = ExpansionRequest(seed_ids=seed, size=size, method=method)  # type: ignore[arg-type]
            result = timed(model, request, method)
            if method == "similarity":
                truth = timed(exact, request, "similarity (exact, no index)")
                recalls.append(len(set(truth.customer_ids) & set(result.customer_ids)) / size)
    summary = (
        pd.DataFrame(rows)
        .groupby("method", sort=False)
        .agg(used=("used", "first"), index=("index", "first"), p50_ms=("ms", "median"),
             p99_ms=("ms", lambda s: float(np.percentile(s, 99))))
        .reset_index()
    )  # fmt: skip
    return summary, {
        "ann_recall_median": float(np.median(recalls)),
        "ann_recall_min": float(np.min(recalls)),
        "runs": runs,
        "load_average": os.getloadavg()[0],
    }


def retail_population(workdir: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]] | None:
    """UCI Online Retail's lookalike population (loaded, validated and its features built once under
    ``workdir``) and its behavioural segments, or None with the reason logged. Shared with bench_audience."""
    try:
        from features.loaders import load_online_retail
    except ImportError:
        logger.warning("features.loaders is not available: Online Retail skipped")
        return None
    from portrait import workflow

    source_dir = Settings().data_dir
    source = source_dir / "online_retail.parquet" if source_dir else None
    if source is None or not source.exists():
        logger.warning("online_retail.parquet not found (PORTRAIT_DATA_DIR): Online Retail skipped")
        return None
    settings = Settings(home=workdir / "online_retail")
    settings.ensure_dirs()
    if not (settings.clean_dir / "transactions.parquet").exists():
        load_online_retail(source, settings.raw_dir)
        workflow.validate(settings)
        workflow.build_features(settings)  # the serving snapshot: the day after the last activity
    population = load_population(settings, snapshot=latest_snapshot(settings))
    return population, behavioural_segments(population, settings.clean_dir)


def online_retail(
    workdir: Path, seed_sizes: list[int], trials: int
) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """Lookalike quality on UCI Online Retail's behavioural segments, or None with the reason logged."""
    found = retail_population(workdir)
    if found is None:
        return None
    population, segments = found
    table, _, info = quality(population, segments, seed_sizes, trials)
    info["segments"] = {k: len(v) for k, v in segments.items()}
    return table, info


# ---- report ----------------------------------------------------------------------------------------------


def quality_table(table: pd.DataFrame) -> str:
    """A Markdown table of model vs baseline per seed size."""
    lines = [
        "| seed | segments | method | precision | recall | lift | baseline precision | baseline recall "
        "| baseline lift | recall ratio | segments won | baseline + category mix recall |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.itertuples():
        taste = "–" if np.isnan(r.baseline_taste_recall) else f"{r.baseline_taste_recall:.3f}"
        lines.append(
            f"| {r.seed:,} | {r.segments} | {r.method} | {r.precision:.3f} | {r.recall:.3f} | {r.lift:.2f} "
            f"| {r.baseline_precision:.3f} | {r.baseline_recall:.3f} | {r.baseline_lift:.2f} "
            f"| **{r.recall_ratio:.2f}** | {r.wins}/{r.segments} | {taste} |"
        )
    return "\n".join(lines)


TASTE_NOTE = (
    "Representation: the `lookalike_v1` features plus the category mix (`features/categories.py`: share of "
    "spend per top category over the 365 days before the snapshot; {n} categories here). Baseline: cosine "
    "similarity to the seed's mean vector over the standardised `lookalike_v1` features (no category mix), as "
    "before; the last column gives that baseline the category mix too."
)


def previous_scale(path: Path = RESULTS) -> list[str]:
    """The Scale subsection of the current RESULTS.md (kept when a run skips the scale part)."""
    import re

    if not path.exists():
        return []
    found = re.search(r"^### Scale.*?(?=^### |^## |\Z)", path.read_text(), flags=re.S | re.M)
    if not found:
        return []
    text = found.group(0).rstrip()
    section = re.search(r"^## Lookalike\n.*?(?=^## |\Z)", path.read_text(), flags=re.S | re.M)
    when = re.search(r"cores, (\d{4}-\d{2}-\d{2})", section.group(0) if section else "")
    note = f" (from the run of {when.group(1)}, not re-measured here)" if when else " (from an earlier run)"
    return [text.replace("\n", note + "\n", 1), ""]


def report(args: argparse.Namespace, parts: dict[str, Any]) -> str:
    """The ``## Lookalike`` Markdown section from the measured parts."""
    out = ["## Lookalike", ""]
    out.append(
        "`python benchmarks/bench_lookalike.py "
        f"--quality-customers {args.quality_customers} "
        + ("--skip-scale " if args.skip_scale else f"--scale {args.scale} --runs {args.runs} ")
        + ("--skip-retail " if args.skip_retail else "")
        + f"--trials {args.trials}` on {os.cpu_count()} cores, "
        f"{datetime.now(UTC):%Y-%m-%d}. One run; medians over segments (quality) or runs (latency)."
    )
    out.append("")
    if "scale" in parts:
        fig, summary, ann = parts["scale"]
        hnsw = parts["params"]
        out += [
            f"### Scale: {args.scale:,} customers (dim {fig['dim']})",
            "",
            f"Vectors: the {args.quality_customers:,}-customer synthetic population's embeddings "
            f"resampled to {args.scale:,} with a small jitter (building 1M customers' features is slow); "
            "same dimensionality and cluster structure.",
            "",
            f"* hnswlib index build (M={hnsw.hnsw_m}, ef_construction={hnsw.hnsw_ef_construction},"
            f" {fig['threads']} threads): **{fig['build_seconds']:.0f} s**; "
            f"peak RSS {fig['rss_peak_mb']:,.0f} MB "
            f"(+{fig['build_extra_mb']:,.0f} MB during the build, {fig['rss_before_mb']:,.0f} MB before: "
            "vectors, ids, Python)",
            f"* artefact on disk {fig['artefact_mb']:,.0f} MB (index {fig['index_file_mb']:,.0f} MB); "
            f"save {fig['save_seconds']:.1f} s, load {fig['load_seconds']:.1f} s",
            f"* ANN recall vs exact brute-force scoring (similarity, 1,000 seed -> 10,000): median "
            f"**{ann['ann_recall_median']:.4f}**, min {ann['ann_recall_min']:.4f} over {ann['runs']} seeds "
            "(target >= 0.95); the classifier scores every vector, so it is exact by construction",
            "",
            f"Expanding a 1,000 seed to a 10,000 audience out of {args.scale:,} ({ann['runs']} seeds, "
            "one per segment in turn; target p50 <= 300 ms on 2 cores; "
            f"1-minute load average {ann['load_average']:.1f} at the end of the runs):",
            "",
            "| method | scored by | index | p50 ms | p99 ms |",
            "|---|---|---|---:|---:|",
        ]
        for r in summary.itertuples():
            out.append(
                f"| {r.method} | {r.used} | {'yes' if r.index else 'no'} | {r.p50_ms:.0f} | {r.p99_ms:.0f} |"
            )
        out.append("")
    elif "previous_scale" in parts:
        out += parts["previous_scale"]
    if "synthetic" in parts:
        table, info = parts["synthetic"]
        p = info["params"]
        out += [
            f"### Quality on synthetic segments ({info['population']:,} customers, 6 latent segments)",
            "",
            "Seed drawn from a segment, audience = size of the rest of the segment "
            "(so precision = recall); lift = precision / share of the segment among non-seed customers. "
            + TASTE_NOTE.format(n=len(info.get("taste", []))),
            "",
            quality_table(table),
            "",
            f"Tuned on separate validation seeds ({info['trials']} Optuna trials, "
            f"{info['tune_seconds']:.0f} s): n_components={p.n_components}, whiten={p.whiten:.2f}, "
            f"indicator_weight={p.indicator_weight:.2f}, "
            f"l2={p.l2:.3g}, classifier from {p.classifier_min_seed:,} seed ids.",
            "",
        ]
    if "retail" in parts:
        if parts["retail"] is None:
            out += ["### UCI Online Retail", "", "Skipped (dataset or loader not available).", ""]
        else:
            table, info = parts["retail"]
            segs = ", ".join(f"{k} ({v:,})" for k, v in info["segments"].items())
            out += [
                f"### UCI Online Retail ({info['population']:,} customers, behavioural segments)",
                "",
                f"Segments: {segs}. Seeds of up to half a segment, the other half held out. "
                + TASTE_NOTE.format(n=len(info.get("taste", []))),
                "",
                quality_table(table),
                "",
            ]
    return "\n".join(out).rstrip() + "\n"


def write_section(text: str, path: Path = RESULTS, *, write: bool = True) -> None:
    """Print the report and replace this benchmark's section of ``path`` (see :func:`results.publish`)."""
    from results import publish

    publish(text, "## Lookalike", write=write, path=path)


# ---- main ------------------------------------------------------------------------------------------------


def main() -> None:
    """Parse arguments, run the three parts, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quality-customers", type=int, default=200_000, help="Synthetic customers (quality)."
    )
    parser.add_argument("--scale", type=int, default=1_000_000, help="Customers in the scale test.")
    parser.add_argument("--runs", type=int, default=20, help="Seeds in the latency test (>= 20).")
    parser.add_argument("--trials", type=int, default=8, help="Optuna trials.")
    parser.add_argument("--seed-sizes", default="100,1000,10000")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="Index build threads.")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "portrait-bench-lookalike",
        help="Where synthetic workspaces are built (reused across runs).",
    )
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-retail", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    seed_sizes = [int(s) for s in args.seed_sizes.split(",")]

    parts: dict[str, Any] = {}
    settings = synthetic_workspace(args.workdir / f"synth_{args.quality_customers}", args.quality_customers)
    population = load_population(settings)
    segments = truth_segments(settings.raw_dir, population.ids) or {}
    table, params, info = quality(population, segments, seed_sizes, args.trials)
    parts["synthetic"] = (table, info)
    parts["params"] = params
    print(f"\nsynthetic quality ({info['population']:,} customers):\n{table.to_string(index=False)}")

    if args.skip_scale:
        parts["previous_scale"] = previous_scale()
    else:
        model, segment_of, fig = scale_model(population, params, args.scale, segments, args.threads)
        print(f"\nscale {args.scale:,}: {fig}")
        summary, ann = latency(model, segment_of, max(args.runs, 1), 1_000, 10_000)
        print(summary.to_string(index=False), ann)
        parts["scale"] = (fig, summary, ann)
        del model

    if not args.skip_retail:
        parts["retail"] = online_retail(args.workdir, seed_sizes, args.trials)
        if parts["retail"] is not None:
            print(f"\nOnline Retail:\n{parts['retail'][0].to_string(index=False)}")

    text = report(args, parts)
    write_section(text, write=not args.no_write)


if __name__ == "__main__":
    main()

"""Audience benchmark: dry-run sizing and insight over 1M customers, and the lookalike reach curve's accuracy.

Three parts, one run; figures are printed and written to the ``## Audiences`` section of
``benchmarks/RESULTS.md`` (only that section is replaced):

1. **Population of ``--population`` customers** (default 1,000,000). Scoring 1M customers through the tag
   models is the batch export's job (``portrait score``; see Serving): here the population table is the
   ``--quality-customers`` synthetic workspace's real feature rows resampled to that size, with tag columns
   of the served shape (probabilities, tiers, lifecycle stage and RFM segment from ``portrait.lifecycle``)
   derived from the features by fixed formulas. Same columns, types and cardinalities as a served population.
2. **Timings** on it, over ``--runs`` runs: ``dry_run`` of a three-clause filter (size and split by tier, one
   DuckDB scan), and insight of a ``--audience``-customer audience (cold: the population's statistics are
   computed and cached first; warm: cached, as in service).
3. **Reach curve accuracy** on the synthetic segments: a seed of ``--seed-size`` from each latent segment,
   the plan's expected precision at the presets narrow / balanced / broad against the precision realised by
   the lookalike of that size (``method="classifier"``); and the plan's latency at the population size
   (embeddings resampled with jitter, as in bench_lookalike's scale test).

Usage: ``python benchmarks/bench_audience.py [--population 1000000] [--audience 100000] [--quality-customers 100000]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from portrait.audience import AudienceBook, AudienceStore
from portrait.audience.population import Population, write_population
from portrait.lifecycle import lifecycle_stage, rfm_edges, rfm_segment
from portrait.lookalike import PRESETS, ExpansionRequest, LookalikeModel, LookalikeParams
from portrait.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lookalike import synthetic_workspace  # noqa: E402

logger = logging.getLogger("bench_audience")
THREE_CLAUSES = {
    "and": [
        {"field": "churn_tier", "op": "in", "value": ["high", "medium"]},
        {"field": "spend_365d", "op": ">=", "value": 50},
        {"not": {"field": "region", "op": "eq", "value": "north"}},
    ]
}
VIEWS = ("customer_profile", "customer_transactions", "customer_behaviour")


# ---- the population -----------------------------------------------------------------------------------------


def _tiers(score: np.ndarray, shares: tuple[float, float]) -> np.ndarray:
    high, medium = np.quantile(score, [1 - shares[0], 1 - shares[0] - shares[1]])
    return np.where(score >= high, "high", np.where(score >= medium, "medium", "low")).astype(object)


def population_table(settings: Settings, size: int, seed: int = 0) -> pd.DataFrame:
    """The workspace's feature rows resampled to ``size`` customers, with tag columns of the served shape."""
    snapshot = sorted((settings.features_dir / VIEWS[0]).glob("snapshot=*.parquet"))[-1].name
    frame = pd.read_parquet(settings.features_dir / VIEWS[0] / snapshot)
    for view in VIEWS[1:]:
        other = pd.read_parquet(settings.features_dir / view / snapshot)
        frame = frame.merge(other.drop(columns=["event_timestamp", "created_timestamp"]), on="customer_id")
    frame = frame.drop(columns=["event_timestamp", "created_timestamp"])
    rng = np.random.default_rng(seed)
    rows = frame.iloc[rng.integers(0, len(frame), size=size)].reset_index(drop=True)
    rows["customer_id"] = np.char.add("P", np.char.zfill(np.arange(size).astype(str), 8))
    recency = rows["recency_days"].to_numpy(dtype=float)
    orders = rows["orders_365d"].fillna(0).to_numpy(dtype=float)
    spend = rows["spend_365d"].fillna(0).to_numpy(dtype=float)
    noise = rng.normal(0, 0.5, size)
    churn = 1 / (1 + np.exp(-(np.nan_to_num(recency, nan=400) / 120 - orders / 3 - 1 + noise)))
    conversion = 1 / (1 + np.exp(-(orders / 2 - np.nan_to_num(recency, nan=400) / 60 - 1 + noise)))
    value = np.maximum(spend * (0.8 + 0.4 * rng.random(size)), 0)
    edges = rfm_edges(rows[["recency_days", "orders_365d", "spend_365d"]])
    tags = pd.DataFrame(
        {
            "churn_probability": churn,
            "churn_tier": _tiers(churn, (0.2, 0.3)),
            "conversion_probability": conversion,
            "conversion_tier": _tiers(conversion, (0.1, 0.2)),
            "value_predicted": value,
            "value_tier": _tiers(value, (0.1, 0.3)),
        }
    )
    stage_of = {}
    segment_of = {}
    tenure = rows["tenure_days"].to_numpy(dtype=float)
    stages, segments = [], []
    for r, t, o, s, tier in zip(recency, tenure, orders, spend, tags.churn_tier, strict=True):
        key = (None if np.isnan(r) else round(r), round(t), tier)
        if key not in stage_of:
            stage_of[key] = lifecycle_stage(None if np.isnan(r) else r, t, tier)
        stages.append(stage_of[key])
        skey = (key[0], o, round(s, 0))
        if skey not in segment_of:
            segment_of[skey] = rfm_segment(None if np.isnan(r) else r, o, s, edges)[0]
        segments.append(segment_of[skey])
    tags["lifecycle_stage"] = stages
    tags["rfm_segment"] = segments
    return pd.concat([rows[["customer_id"]], tags, rows.drop(columns=["customer_id"])], axis=1)


def timings(pop: Population, root: Path, audience: int, runs: int) -> dict[str, Any]:
    """dry_run of the three-clause filter and insight of an ``audience``-customer audience."""
    book = AudienceBook(AudienceStore(root, root / "audit.jsonl"), lambda: pop)
    dry = []
    for _ in range(runs):
        started = time.perf_counter()
        size, by_tier = book.dry_run(THREE_CLAUSES)
        dry.append(time.perf_counter() - started)
    rng = np.random.default_rng(3)
    ids = pd.read_parquet(pop.path, columns=["customer_id", "orders_365d"])
    weights = ids.orders_365d.fillna(0).to_numpy() + 0.2  # an audience that leans to frequent buyers
    chosen = rng.choice(len(ids), size=audience, replace=False, p=weights / weights.sum())
    members = pd.DataFrame({"customer_id": np.sort(ids.customer_id.to_numpy()[chosen])})
    record = book.create_ranked(members, {"bench": True}, kind="ids", name="bench", creator="bench")
    started = time.perf_counter()
    result = book.insight(record.id)  # cold: the population's statistics are computed and cached
    cold = time.perf_counter() - started
    warm = []
    for _ in range(max(3, runs // 4)):
        started = time.perf_counter()
        result = book.insight(record.id)
        warm.append(time.perf_counter() - started)
    return {
        "dry_size": size,
        "dry_tiers": by_tier,
        "dry_p50_ms": 1000 * float(np.median(dry)),
        "dry_p99_ms": 1000 * float(np.percentile(dry, 99)),
        "insight_cold_s": cold,
        "insight_p50_s": float(np.median(warm)),
        "insight_max_s": float(np.max(warm)),
        "insight_runs": len(warm),
        "tests": result.tests,
        "traits": result.top_traits[:4],
        "columns": len(pop.columns),
        "load": os.getloadavg()[0],
    }


# ---- the reach curve ---------------------------------------------------------------------------------------


def reach_accuracy(settings: Settings, seed_size: int, population_size: int) -> dict[str, Any]:
    """Plan vs realised precision per preset on the synthetic segments; plan latency at ``population_size``."""
    from training.lookalike import build_lookalike, load_population, truth_segments

    population = load_population(settings)
    segments = truth_segments(settings.raw_dir, population.ids) or {}
    model = build_lookalike(population, LookalikeParams(), build_index=False)
    n = model.population_size
    rows = []
    plan_seconds = []
    for name, members in sorted(segments.items()):
        size = min(seed_size, len(members) // 2)
        seed = np.random.default_rng(11).choice(members, size=size, replace=False).tolist()
        target = set(members.tolist()) - set(seed)
        started = time.perf_counter()
        curve = model.reach_curve(seed)
        plan_seconds.append(time.perf_counter() - started)
        for preset, point in curve.presets.items():
            audience = model.expand(ExpansionRequest(seed_ids=seed, size=point.size, method="classifier"))
            realised = sum(c in target for c in audience.customer_ids) / point.size
            rows.append(
                {"segment": name, "seed": size, "preset": preset, "size": point.size,
                 "predicted": point.expected_precision, "realised": realised,
                 "predicted_recall": point.expected_recall, "realised_recall": realised * point.size / len(target)}
            )  # fmt: skip
    table = pd.DataFrame(rows)
    table["error"] = table.predicted - table.realised
    # Latency of a plan at the population size: the embeddings resampled with a small jitter.
    rng = np.random.default_rng(0)
    pick = rng.integers(0, n, size=population_size)
    vectors = model.vectors[pick] + rng.standard_normal(
        (population_size, model.vectors.shape[1]), dtype=np.float32
    ) * (0.05 * model.vectors.std(axis=0))
    ids = np.char.add("S", np.char.zfill(np.arange(population_size).astype(str), 8))
    big = LookalikeModel.from_vectors(model.representation, ids, vectors, model.params, build_index=False)
    del vectors
    first_segment = sorted(segments)[0]
    members_pos, _ = model.positions(segments[first_segment])
    in_segment = np.flatnonzero(np.isin(pick, members_pos))
    big_seed = big.customer_ids[
        rng.choice(in_segment, size=min(seed_size, len(in_segment)), replace=False)
    ].tolist()
    started = time.perf_counter()
    big.reach_curve(big_seed)
    big_seconds = time.perf_counter() - started
    return {
        "table": table,
        "population": n,
        "segments": len(segments),
        "taste": len(population.taste),
        "plan_p50_s": float(np.median(plan_seconds)),
        "big_plan_s": big_seconds,
        "big_population": population_size,
        "load": os.getloadavg()[0],
    }


# ---- report ----------------------------------------------------------------------------------------------------


def report(args: argparse.Namespace, parts: dict[str, Any]) -> str:
    out = [
        "## Audiences",
        "",
        f"`python benchmarks/bench_audience.py --population {args.population} --audience {args.audience} "
        f"--quality-customers {args.quality_customers} --seed-size {args.seed_size} --runs {args.runs}` on "
        f"{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}. One run.",
        "",
    ]
    if "timings" in parts:
        t = parts["timings"]
        out += [
            f"### Selections and insight over {args.population:,} customers ({t['columns']} columns)",
            "",
            f"Population: the {args.quality_customers:,}-customer synthetic workspace's feature rows resampled to "
            f"{args.population:,}, with tag columns of the served shape derived from them (scoring 1M customers is "
            "the batch export's job, see Serving). DuckDB over the cached Parquet table, as in service.",
            "",
            "| what | target | measured |",
            "|---|---:|---:|",
            f"| `dry_run` of a three-clause filter (size {t['dry_size']:,} + split by 3 tiers), p50 over "
            f"{args.runs} | ≤ 500 ms | **{t['dry_p50_ms']:.0f} ms** (p99 {t['dry_p99_ms']:.0f} ms) |",
            f"| insight of {args.audience:,} of {args.population:,} customers ({t['tests']} tests), warm p50 over "
            f"{t['insight_runs']} | ≤ 2 s | **{t['insight_p50_s']:.2f} s** (max {t['insight_max_s']:.2f} s) |",
            f"| the same, cold (population statistics computed once, then cached) | | {t['insight_cold_s']:.2f} s |",
            "",
            f"1-minute load average {t['load']:.1f} at the end. Top traits found: "
            + "; ".join(f"“{x}”" for x in t["traits"]),
            "",
        ]
    if "reach" in parts:
        r = parts["reach"]
        table = r["table"]
        out += [
            f"### Reach curve: planned against realised precision ({r['population']:,} synthetic customers, "
            f"{r['segments']} latent segments)",
            "",
            f"A seed of {args.seed_size:,} from each segment (at most half of it); the plan's expected precision at "
            "each preset against the precision of the lookalike of that size (the classifier's ranking; lookalike "
            f"representation with the category mix of {r['taste']} categories, default parameters). "
            "Target: within 0.05 at each preset.",
            "",
            "| preset | size | mean predicted | mean realised | mean abs error | max abs error | "
            "segments within 0.05 | mean abs recall error |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for preset in PRESETS:
            part = table[table.preset == preset]
            within = int((part.error.abs() <= 0.05).sum())
            recall_error = (part.predicted_recall - part.realised_recall).abs().mean()
            out.append(
                f"| {preset} | {int(part['size'].iloc[0]):,} | {part.predicted.mean():.3f} | {part.realised.mean():.3f} "
                f"| **{part.error.abs().mean():.3f}** | {part.error.abs().max():.3f} | {within}/{len(part)} "
                f"| {recall_error:.3f} |"
            )
        worst = table.loc[table.error.abs().idxmax()]
        out += [
            "",
            f"Worst case: {worst.segment} at {worst.preset} (predicted {worst.predicted:.3f}, realised "
            f"{worst.realised:.3f}). Recall (share of the segment reached) is estimated without bias from the "
            "held-out seed members; precision also needs how many customers are like the seed, which the seed "
            "alone identifies only where the top of the ranking is pure: where a segment overlaps others, it is "
            "over- or underestimated (see `LookalikeModel.reach_curve`).",
            "",
            f"Plan latency (5-fold cross-fitting): {r['plan_p50_s']:.2f} s p50 at {r['population']:,} customers; "
            f"{r['big_plan_s']:.1f} s at {r['big_population']:,} (embeddings resampled with jitter). 1-minute load "
            f"average {r['load']:.1f}.",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=1_000_000)
    parser.add_argument("--audience", type=int, default=100_000)
    parser.add_argument("--quality-customers", type=int, default=100_000)
    parser.add_argument("--seed-size", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "portrait-bench-lookalike",
        help="Where synthetic workspaces are built (shared with bench_lookalike, reused across runs).",
    )  # fmt: skip
    parser.add_argument("--skip-reach", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = synthetic_workspace(args.workdir / f"synth_{args.quality_customers}", args.quality_customers)
    parts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "audiences"
        started = time.perf_counter()
        frame = population_table(settings, args.population)
        pop = write_population(root, "bench", frame, snapshot="bench", versions={})
        del frame
        logger.info("population of %d customers written in %.0fs", pop.size, time.perf_counter() - started)
        parts["timings"] = timings(pop, root, args.audience, args.runs)
        print(parts["timings"])
    if not args.skip_reach:
        parts["reach"] = reach_accuracy(settings, args.seed_size, args.population)
        print(parts["reach"]["table"].to_string(index=False))
    from results import publish

    publish(report(args, parts), "## Audiences", write=not args.no_write)


if __name__ == "__main__":
    main()

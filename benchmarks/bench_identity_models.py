"""What identity resolution is worth to the models: churn AUC and CLV Gini on the same synthetic people.

One synthetic population (``features.synth``: people with their purchases and sessions), spread over
identity records by ``features.synth_identity`` (noise on; every order and session goes to one of its
person's records, and the truth ``record_id -> person_id`` is kept). Three workspaces from the same
people and the same activity:

* **truth**: every record keyed by its true person (the ceiling: perfect identity resolution);
* **stitched**: the records stitched into OneIDs by the identity step (``stitch_workspace``: strong
  links with the guards, then Splink), the clean tables keyed by OneID;
* **unstitched**: every record a customer of its own (what Portrait did before identity resolution).

Each goes through the same workflow (``portrait.workflow``: validate, features, train ``churn`` and
``clv`` with the same trial budget and snapshot plan). Each workspace's registered models then score
**all** of its customers at the common out-of-time test snapshot, and the scores are mapped back to the
true persons (:func:`features.identity.metrics.person_scores`):

* **most active** (the headline): a person gets the score of the customer holding most of her orders
  before the snapshot (then sessions): the profile a team would act on when it cannot tell that several
  customers are one person. For the truth workspace that is the person; stitched, her OneID (or, when
  stitching left her split, the OneID with most of her activity).
* **aggregate** (shown beside it, it needs the truth to know which fragments to add up): the sum of the
  predicted values of every customer holding one of her records, and for churn the product of their
  churn probabilities (she churns only if every fragment does).

Metrics are computed against the **truth person's labels** (the truth workspace's labels at the test
snapshot: churn over the people who bought in the year before it, value over everyone signed up),
so all three are measured on the same people and the same outcomes.

Usage: ``python benchmarks/bench_identity_models.py [--people 25000] [--trials 3]``; figures go to the
``## Identity (OneID): what it is worth to the models`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

SECTION = "## Identity (OneID): what it is worth to the models"
MODELS = ("churn", "clv")
WORKSPACES = ("truth", "stitched", "unstitched")
END = datetime(2025, 1, 1, tzinfo=UTC)

logger = logging.getLogger("bench_identity_models")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def busy_processes(limit: int = 6) -> str:
    """The processes using most CPU beside this one (what ran beside the benchmark)."""
    out = subprocess.run(
        ["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[1:]
    rows = []
    for line in out:
        parts = line.split(None, 2)
        if len(parts) < 3 or int(parts[0]) == os.getpid() or float(parts[1]) < 20:
            continue
        rows.append(f"{parts[1]}% {parts[2][:70]}")
        if len(rows) == limit:
            break
    return "; ".join(rows) or "nothing above 20 % CPU"


def copy_inputs(source: Path, raw: Path, names: tuple[str, ...]) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(source / f"{name}.parquet", raw / f"{name}.parquet")


def build(kind: str, home: Path, inputs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One workspace: validate (and stitch), then train churn and clv; returns timings and outcomes."""
    from portrait import workflow
    from portrait.settings import Settings

    settings = Settings(home=home)
    settings.ensure_dirs()
    tables = ("customers", "transactions", "events")
    copy_inputs(inputs, settings.raw_dir, (*tables, "identities") if kind == "stitched" else tables)
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    workflow.validate(settings, now=END)
    seconds["validate"] = time.perf_counter() - began
    report = None
    if kind == "stitched":
        from features.identity import stitch_workspace

        began = time.perf_counter()
        report = stitch_workspace(settings, now=END)
        seconds["stitch"] = time.perf_counter() - began
    began = time.perf_counter()
    outcomes = workflow.train(
        settings, list(MODELS), trials=args.trials, n_train=args.n_train, step_days=args.step_days
    )
    seconds["train"] = time.perf_counter() - began
    return {"settings": settings, "seconds": seconds, "outcomes": outcomes, "stitch": report}


def score_all(settings: Any, outcomes: dict[str, Any]) -> tuple[dict[str, datetime], dict[str, Any]]:
    """Every customer of the workspace scored at each model's test snapshot by its registered version."""
    import mlflow
    import pandas as pd

    from features import store as fs
    from training.tracking import configure

    configure(settings)
    customers = pd.read_parquet(settings.clean_dir / "customers.parquet", columns=["customer_id"])
    scores: dict[str, Any] = {}
    tests: dict[str, datetime] = {}
    for name in MODELS:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{outcomes[name].version}").unwrap_python_model()
        tests[name] = datetime.fromisoformat(model.metadata["plan"]["test"])
        entity = customers.assign(event_timestamp=pd.Timestamp(tests[name]))
        frame = fs.historical_features(settings, name, entity)
        scores[name] = pd.Series(model.score(frame), index=frame.customer_id.to_numpy(), name=name)
    return tests, scores


def record_activity(inputs: Path, snapshot: datetime) -> Any:
    """Per identity record: orders (then sessions, as a tie-break) before the snapshot."""
    import duckdb

    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(
            f"""
            WITH o AS (SELECT customer_id, count(*) AS n FROM read_parquet('{inputs}/transactions.parquet')
                       WHERE NOT is_return AND ts < $t GROUP BY 1),
                 e AS (SELECT customer_id, count(DISTINCT session_id) AS n FROM read_parquet('{inputs}/events.parquet')
                       WHERE ts < $t GROUP BY 1)
            SELECT t.record_id, t.person_id, coalesce(o.n, 0) * 1000000 + coalesce(e.n, 0) AS activity
            FROM read_parquet('{inputs}/identity_truth.parquet') t
            LEFT JOIN o ON o.customer_id = t.record_id LEFT JOIN e ON e.customer_id = t.record_id
            """,
            {"t": snapshot},
        ).df()


def evaluate(
    kind: str, settings: Any, scores: dict[str, Any], activity: dict[str, Any], labels: dict[str, Any]
) -> dict[str, float]:
    """Each model's person-level metric (see the module doc) for one workspace."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from features.identity import identity_dir
    from features.identity.metrics import person_scores
    from training.evaluate import normalized_gini

    oneids = None
    if kind == "stitched":
        oneids = pd.read_parquet(identity_dir(settings) / "oneid_map.parquet", columns=["record_id", "oneid"])
    out: dict[str, float] = {}
    for how in ("most_active", "aggregate"):
        for name in MODELS:
            records = activity[name].copy()
            if kind == "truth":
                records["customer_id"] = records.person_id
            elif oneids is not None:
                records = records.merge(oneids, on="record_id", how="left")
                records = records.rename(columns={"oneid": "customer_id"})
            else:
                records["customer_id"] = records.record_id
            combine = "all_churn" if name == "churn" else "sum"
            person = person_scores(records, scores[name], how=how, combine=combine)
            y = labels[name].set_index("customer_id").label
            joined = pd.concat([y.rename("y"), person], axis=1, join="inner")
            missing = len(y) - len(joined)
            if name == "churn":
                out[f"{name}_{how}"] = float(roc_auc_score(joined.y, joined.score))
            else:
                out[f"{name}_{how}"] = float(normalized_gini(joined.y.to_numpy(), joined.score.to_numpy()))
            out[f"{name}_missing"] = float(missing)
    out["customers"] = float(len(scores["churn"]))
    return out


def main() -> None:
    import numpy as np
    from results import publish

    from features.synth import SynthConfig, generate
    from features.synth_identity import IdentitySynthConfig, generate_identities, spread_activity
    from training.labels import build_labels
    from training.specs import spec_for

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=20_000, help="Synthetic people.")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the people and their activity.")
    parser.add_argument("--identity-seed", type=int, default=5, help="Seed of the identity records.")
    parser.add_argument("--trials", type=int, default=3, help="Optuna trials per model (each workspace).")
    parser.add_argument("--n-train", type=int, default=2, help="Training snapshots per model.")
    parser.add_argument("--step-days", type=int, default=60, help="Days between training snapshots.")
    parser.add_argument("--workdir", type=Path, default=None, help="Folder (default: a temporary one).")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("splink", "feast", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    started = datetime.now(UTC)
    load_start, beside_start = load(), busy_processes()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{started:%Y-%m-%d %H:%M} UTC, {cpus} CPUs, load average {load_start}; beside: {beside_start}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_identity_models_"))
    shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter()
    try:
        people_dir, spread_dir = work / "people", work / "spread"
        began = time.perf_counter()
        generate(
            SynthConfig(
                n_customers=args.people, seed=args.seed, start=END - timedelta(days=3 * 365), end=END
            ),
            people_dir,
        )
        import pyarrow.parquet as pq

        customers = pq.read_table(people_dir / "customers.parquet", columns=["customer_id", "region"])
        identities = generate_identities(
            customers.column("customer_id").to_pylist(),
            IdentitySynthConfig(seed=args.identity_seed),
            regions=customers.column("region").to_pylist(),
        )
        counts = spread_activity(people_dir, identities, spread_dir)
        data_s = time.perf_counter() - began
        print(f"data in {data_s:.0f} s: {counts}")

        built: dict[str, dict[str, Any]] = {}
        for kind in WORKSPACES:
            began = time.perf_counter()
            built[kind] = build(kind, work / kind, people_dir if kind == "truth" else spread_dir, args)
            print(f"{kind}: built in {time.perf_counter() - began:.0f} s {built[kind]['seconds']}")
        snapshots, scores = {}, {}
        for kind in WORKSPACES:
            snapshots[kind], scores[kind] = score_all(built[kind]["settings"], built[kind]["outcomes"])
        tests = snapshots["truth"]
        if any(snapshots[kind] != tests for kind in WORKSPACES):
            raise RuntimeError(f"the workspaces' test snapshots differ: {snapshots}")
        truth_clean = built["truth"]["settings"].clean_dir
        labels = {name: build_labels(truth_clean, [tests[name]], spec_for(name).label) for name in MODELS}
        activity = {name: record_activity(spread_dir, tests[name]) for name in MODELS}
        results = {
            kind: evaluate(kind, built[kind]["settings"], scores[kind], activity, labels)
            for kind in WORKSPACES
        }
        for kind in WORKSPACES:
            print(kind, results[kind])
        stitch = built["stitched"]["stitch"]
        from features.identity import identity_dir, pairwise_scores

        pairwise = pairwise_scores(
            identity_dir(built["stitched"]["settings"]) / "oneid_map.parquet", identities.truth
        )
        own = {kind: {name: built[kind]["outcomes"][name].metrics for name in MODELS} for kind in WORKSPACES}
        minutes = (time.perf_counter() - wall) / 60
        load_end, beside_end = load(), busy_processes()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    people = args.people
    churn_people = len(labels["churn"])
    clv_people = len(labels["clv"])
    churn_rate = float(np.mean(labels["churn"].label))

    def cell(kind: str, key: str) -> str:
        return f"{results[kind][key]:.3f}"

    rows = []
    names = {
        "truth": "truth-keyed (ceiling: every record keyed by its person)",
        "stitched": "stitched OneIDs (`stitch_workspace`)",
        "unstitched": "unstitched (every record its own customer)",
    }
    for kind in WORKSPACES:
        customers_n = int(results[kind]["customers"])
        rows.append(
            f"| {names[kind]} | {customers_n:,} | **{cell(kind, 'churn_most_active')}** | {cell(kind, 'churn_aggregate')} "
            f"| **{cell(kind, 'clv_most_active')}** | {cell(kind, 'clv_aggregate')} "
            f"| {own[kind]['churn'].get('test_auc', float('nan')):.3f} | {own[kind]['clv'].get('test_normalized_gini', float('nan')):.3f} |"
        )
    lost = {
        name: (results["truth"][f"{name}_most_active"] - results["unstitched"][f"{name}_most_active"])
        for name in MODELS
    }
    won = {
        name: (results["stitched"][f"{name}_most_active"] - results["unstitched"][f"{name}_most_active"])
        for name in MODELS
    }
    table = "\n".join(rows)
    text = f"""{SECTION}

`benchmarks/bench_identity_models.py --people {people:,} --trials {args.trials} --n-train {args.n_train} --step-days {args.step_days} --seed {args.seed} --identity-seed {args.identity_seed}`,
run {started:%Y-%m-%d %H:%M} UTC on {cpus} CPUs, {minutes:.1f} min in all; load average (1/5/15 min) {load_start} at the
start, {load_end} at the end. Beside it at the start: {beside_start}; at the end: {beside_end}.

{people:,} synthetic people (`features.synth`, 3 years to {END:%Y-%m-%d}) spread over {counts["identities"]:,} identity
records (`features.synth_identity`, default noise; {counts["transactions"]:,} order lines and {counts["events"]:,}
events, each order and session on one of its person's records). Stitching: {stitch.people:,} OneIDs, pairwise precision
{pairwise.precision:.4f}, recall {pairwise.recall:.4f} (stitched and keyed in {built["stitched"]["seconds"]["stitch"]:.1f} s). The same
workflow in each workspace (validate, features, `churn` and `clv`: {args.trials} Optuna trials, {args.n_train} training
snapshots {args.step_days} days apart); every customer scored by the registered model at its common test
snapshot ({", ".join(f"{n} {t:%Y-%m-%d}" for n, t in tests.items())}); scores mapped to the true persons and measured against **the person's labels**:
churn AUC over the {churn_people:,} people who bought in the year before its snapshot (churn rate
{churn_rate:.1%}), CLV normalised Gini over the {clv_people:,} people signed up before its snapshot.

| workspace | customers | churn AUC, most active | churn AUC, aggregate | CLV Gini, most active | CLV Gini, aggregate | own test AUC | own test Gini |
|---|---|---|---|---|---|---|---|
{table}

*Most active* (the headline): a person gets the score of the customer holding most of her orders before the
snapshot (then sessions): the profile a team would act on when it cannot tell several customers are one
person. *Aggregate* needs the truth to know which customers to add up (sum of predicted values; product of
churn probabilities, as if the fragments were independent: she churns only if every fragment does); it is
shown so that the headline does not hang on the mapping, not as something Portrait could do without
identity resolution. *Own test*: each workspace's test metric on its own customers (fragments or OneIDs)
with their own labels, as `portrait train` reports it; for unstitched data a fragment "churns" when the
person buys on another record, so these are not comparable with the person-level columns.

Identity resolution is worth, against unstitched data (most active): churn AUC {won["churn"]:+.3f} and CLV Gini
{won["clv"]:+.3f}; the truth-keyed ceiling is {lost["churn"]:+.3f} and {lost["clv"]:+.3f} above unstitched data.
"""
    publish(text, SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()

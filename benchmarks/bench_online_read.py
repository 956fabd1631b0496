"""Feast online reads of 1,000 customers: the SQLite store against Redis, same features, one run.

The ``/v1/tags`` goal for a 1,000-customer request is 150 ms; this measures the part of it that is Feast's
``get_online_features`` alone, on both online stores. It takes an existing local workspace (``--home``,
e.g. the one ``bench_serving.py`` builds, with the SQLite online store materialized), registers the same
Feast repo in the production profile (SQL registry in a fresh PostgreSQL database, Redis under its own
key prefix), publishes the newest snapshot into Redis (``portrait.workflow.publish``), then times
``get_online_features`` for the FeatureService of catalogue model ``--model`` (default ``churn``:
``churn_v1``) on random batches of ``--batch`` known customers, alternating the stores call
by call so load on the shared machine hits both alike. The Redis keys and the database are removed
afterwards.

Usage: ``python benchmarks/bench_online_read.py --home /tmp/serve_bench/ws_100000 [--reps 20]``
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Online reads, 1,000 customers"


def main() -> None:
    import pandas as pd
    from results import publish

    from features import repo
    from features import store as fs
    from portrait import catalogue, workflow
    from portrait.backends import drop_postgres_database, ensure_postgres_database
    from portrait.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="A local workspace, SQLite store loaded.")
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/portrait_bench_read"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--key-prefix", default="bench_read", help="Feast project suffix in Redis.")
    parser.add_argument(
        "--model", default="churn", choices=catalogue.names(), help="Catalogue model whose service is read."
    )
    parser.add_argument("--batch", type=int, default=1000, help="Customers per read.")
    parser.add_argument("--reps", type=int, default=20, help="Timed reads per store (after 2 warm-up reads).")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")

    load_start = os.getloadavg()
    local = Settings(home=args.home, profile="local")
    prod = Settings(
        home=args.home,
        profile="production",
        postgres_url=args.postgres_url,
        redis_url=args.redis_url,
        redis_key_prefix=args.key_prefix,
    )
    ensure_postgres_database(prod.postgres_url)
    try:
        repo.apply(prod)  # register only: workflow.build_features would also recompute the features
        started = time.perf_counter()
        workflow.publish(prod, max(fs.snapshots_on_disk(local)))  # materialize up to the day after it
        materialize_s = time.perf_counter() - started
        view_dir = args.home / "data" / "features" / "customer_transactions"
        ids = pd.read_parquet(
            sorted(view_dir.glob("*.parquet"))[-1], columns=["customer_id"]
        ).customer_id.tolist()
        stores = {"sqlite": fs.feature_store(local), "redis": fs.feature_store(prod)}
        service_name = catalogue.get(args.model).feature_service
        service = stores["sqlite"].get_feature_service(service_name)
        refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
        rng = random.Random(0)
        times: dict[str, list[float]] = {name: [] for name in stores}
        found: dict[str, int] = dict.fromkeys(stores, 0)
        for i in range(args.reps + 2):
            batch = rng.sample(ids, args.batch)
            for name in ("sqlite", "redis") if i % 2 else ("redis", "sqlite"):
                started = time.perf_counter()
                response = stores[name].get_online_features(features=refs, entity_rows={"customer_id": batch})
                elapsed = time.perf_counter() - started
                if i >= 2:
                    times[name].append(1000 * elapsed)
                    values = response.to_dict()[refs[0].split(":", 1)[1]]
                    found[name] += sum(v is not None for v in values)
    finally:
        import redis

        client = redis.Redis.from_url(args.redis_url)
        project = prod.feast_project_name.encode()
        for key in client.scan_iter(count=10_000):
            if key.endswith(project):  # Feast's Redis key: serialized entity key + project name
                client.delete(key)
        drop_postgres_database(prod.postgres_url)
    load_end = os.getloadavg()
    expected = args.reps * args.batch
    lines = [
        SECTION,
        "",
        f"`python benchmarks/bench_online_read.py --home {args.home} --reps {args.reps}"
        f"{'' if args.model == 'churn' else f' --model {args.model}'}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {os.cpu_count()} CPUs, 1/5/15-min load average "
        f"{'/'.join(f'{x:.1f}' for x in load_start)} at the start, {'/'.join(f'{x:.1f}' for x in load_end)} "
        "at the end (shared machine).",
        "",
        f"Feast `get_online_features` of the `{service_name}` FeatureService ({len(refs)} features, 3 views) for "
        f"{args.batch:,} random known customers of the {len(ids):,} in the workspace, {args.reps} reads per "
        "store after 2 warm-up reads, the stores alternating call by call. Redis: the shared local server, "
        f"loaded by a full materialization of the same snapshot first ({materialize_s:.1f} s).",
        "",
        "| online store | median ms | min ms | max ms | customers found |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in times.items():
        lines.append(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} "
            f"| {found[name]:,} / {expected:,} |"
        )
    ratio = statistics.median(times["sqlite"]) / statistics.median(times["redis"])
    lines += [
        "",
        f"* Redis is {ratio:.2f}x the speed of SQLite here. Either way Feast's read alone is well over the "
        "150 ms that the whole 1,000-customer `/v1/tags` request may take: the time goes to Feast's per-value "
        "Python work on the response, the same for both stores (profiles: the Serving and Production sections).",
    ]
    publish("\n".join(lines) + "\n", SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()

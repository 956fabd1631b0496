"""Serving benchmark: the real ``/v1/tags`` over HTTP next to a trivial BentoML service, in one run.

Builds (or reuses) a synthetic workspace of ``--customers`` customers with all four models trained and
promoted and the SQLite online store materialized, then, on the same machine and in the same run:

1. starts the real service (``bentoml serve serving.service:Portrait``) and a trivial BentoML service
   (``benchmarks/trivial_service.py``: the same BentoML settings, APIs that echo a list of strings) as
   subprocesses on 127.0.0.1;
2. single-customer ``POST /v1/tags``, sequential on one keep-alive connection, **interleaved** request by
   request with the trivial ``/v1/echo`` (plain) and ``/v1/echo_batch`` (batchable like ``/v1/tags``) so
   the load of the shared machine hits all of them alike: p50/p99 and p50(tags) / p50(echo)
   (goals: ratio <= 2.0, p99 <= 20 ms);
3. 1,000-customer ``/v1/tags`` requests (random known ids), interleaved with a 1,000-string echo: p50
   (goal <= 150 ms);
4. sustained throughput with ``--concurrency`` closed-loop single-customer clients (asyncio +
   ``httpx.AsyncClient``) for ``--duration`` seconds each (bounded in time and count): customers per
   second, p50/p99, and the mean adaptive-batch size BentoML reports on ``/metrics``;
5. the batch export, ``portrait score --out FILE``, timed for the workspace; for ``--export-customers``
   (1M) it is measured only when such a workspace exists or ``--export-build`` builds one (models shared
   with the main workspace), otherwise extrapolated from the measured size and labelled so;
6. an in-process breakdown with :class:`serving.tagger.Tagger` for 1 and 1,000 customers: Feast
   ``get_online_features`` vs ``TagModel.explain`` vs building the pydantic response.

Every request goes to 127.0.0.1 and every loop is bounded in count and time; the server subprocesses are
always terminated. Figures are printed and written to the ``## Serving`` section of
``benchmarks/RESULTS.md`` (only that section is replaced) with the date, the machine and its load.

``--compare-root DIR`` also serves ``serving.service:Portrait`` from another checkout of the project (e.g. a
``git worktree`` of the previous commit, run with this Python) on the same workspace, and interleaves it
request by request with the others in the single-customer and 1,000-customer loops: a before/after of a code
change side by side.

Usage: ``python benchmarks/bench_serving.py [--customers 100000] [--workdir DIR] [--trials 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import pickle
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's packages come from the checkout
    sys.path.insert(0, str(ROOT))

from portrait.model import leaf_positions, tree_sums  # noqa: E402
from portrait.settings import Settings  # noqa: E402

logger = logging.getLogger("bench_serving")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Serving"
END = datetime(2025, 1, 1, tzinfo=UTC)
SNAPSHOT = END + timedelta(days=1)
READY_MARKER = "bench_serving_ready.json"
JSON_HEADERS = {"content-type": "application/json"}
GOAL_RATIO = 2.0
GOAL_P99_MS = 20.0
GOAL_BIG_P50_MS = 150.0
READ_STAGE = "Feast read of pre-computed vectors -> known-row columns (Tagger.read_known)"
VIEWS_STAGE = "reference, fallback path: Feast get_online_features per view"
FRAME_STAGE = "reference, fallback path: response -> columns (response_columns)"
BUILD_STAGE = "response build + pydantic validation (tags - _score, same call)"


# ---- small helpers ---------------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return seconds * 1000.0


def pctl(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else math.nan


@dataclass
class Latency:
    """Latencies (seconds) of one kind of request."""

    label: str
    seconds: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    sample_error: str = ""

    def fail(self, status: str, body: str) -> None:
        self.errors += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.sample_error = self.sample_error or f"{status}: {body[:300]}"

    @property
    def n(self) -> int:
        return len(self.seconds)

    def p(self, q: float) -> float:
        """Percentile in milliseconds."""
        return ms(pctl(self.seconds, q))


def errors_of(lat: Latency) -> str:
    if not lat.errors:
        return "0"
    return f"{lat.errors:,} (" + ", ".join(f"{k}: {v:,}" for k, v in sorted(lat.statuses.items())) + ")"


def load_avg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {
        "nproc": cpus,
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "load": load_avg(),
        "python": sys.version.split()[0],
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for subprocesses: no inherited ``PORTRAIT_*`` settings, the workspace's home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    env["PORTRAIT_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


# ---- workspace -------------------------------------------------------------------------------------------


def has_trained_workspace(home: Path) -> bool:
    return (home / "data" / "feast" / "online_store.db").exists() and (home / "mlruns" / "mlflow.db").exists()


def build_workspace(home: Path, customers: int, trials: int, train_snapshots: int) -> dict[str, float]:
    """Synthetic data -> features -> Feast -> every catalogue model -> online store
    (``portrait.workflow.build_workspace``); seconds per step."""
    from features.synth import SynthConfig
    from portrait.workflow import build_workspace as build

    settings = Settings(home=home)
    steps: dict[str, float] = {}
    current: list[Any] = [None, time.perf_counter()]

    def step(title: str | None) -> None:
        now = time.perf_counter()
        if current[0] is not None:
            steps[current[0]] = now - current[1]
            logger.info(
                "workspace %s: %s in %.0fs (load %s)", home.name, current[0], steps[current[0]], load_avg()
            )
        current[:] = [title, now]

    config = SynthConfig(n_customers=customers, seed=11, start=END - timedelta(days=3 * 365), end=END)
    build(settings, synth=config, trials=trials, snapshot=SNAPSHOT, n_train=train_snapshots, step=step)
    step(None)
    return steps


def workspace(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The trained workspace: ``--workdir`` itself when it holds one, else ``<workdir>/ws_<customers>``."""
    if has_trained_workspace(args.workdir) and not (args.workdir / READY_MARKER).exists():
        return args.workdir, {"reused": True, "steps": {}}
    home = args.workdir / f"ws_{args.customers}"
    marker = home / READY_MARKER
    if marker.exists() and has_trained_workspace(home):
        info = json.loads(marker.read_text())
        logger.info("reusing workspace %s (built %s)", home, info.get("built"))
        return home, {**info, "reused": True}
    if home.exists() and any(home.iterdir()):
        raise SystemExit(f"{home} holds an incomplete workspace: remove it or pick another --workdir")
    steps = build_workspace(home, args.customers, args.trials, args.train_snapshots)
    info = {
        "customers": args.customers,
        "trials": args.trials,
        "train_snapshots": args.train_snapshots,
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "steps": steps,
    }
    marker.write_text(json.dumps(info, indent=2))
    return home, {**info, "reused": False}


def served_ids(settings: Settings) -> list[str]:
    """The customer ids of the newest snapshot (what ``portrait score`` exports and the store serves)."""
    import pandas as pd

    from features.store import snapshots_on_disk

    snaps = snapshots_on_disk(settings)
    if not snaps:
        raise SystemExit(f"no feature snapshot in {settings.features_dir}")
    latest = settings.features_dir / "customer_profile" / f"snapshot={snaps[-1]:%Y%m%dT%H%M%S}.parquet"
    return [str(x) for x in pd.read_parquet(latest, columns=["customer_id"])["customer_id"].tolist()]


# ---- servers ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A ``bentoml serve`` subprocess in its own session (so its workers are stopped with it)."""

    name: str
    target: str
    port: int
    env: dict[str, str]
    log: Path
    extra: list[str] = field(default_factory=list)
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float = math.nan
    _fh: IO[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "bentoml", "serve", self.target, *self.extra]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        self._fh = self.log.open("wb")
        self._started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=self.env, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=5).status_code == 200:
                    self.ready_s = time.perf_counter() - self._started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f}s; see {self.log}")

    def stop(self) -> None:
        """SIGTERM to the server's own process group (the server and its workers), SIGKILL if it lingers."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the server's pid
        for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.perf_counter() + wait_s
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None and not _group_alive(pgid):
                    break
                time.sleep(0.2)
            else:
                continue
            break
        if self.proc.poll() is None:
            self.proc.wait(5)
        if self._fh is not None:
            self._fh.close()

    def metrics(self) -> str:
        try:
            return httpx.get(f"{self.base}/metrics", timeout=10).text
        except httpx.HTTPError:
            return ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


BATCH_METRIC = re.compile(r"^(\w*adaptive_batch_size)_(sum|count)\{([^}]*)\}\s+([0-9.eE+-]+)$", re.M)


def batch_stats(text: str, endpoint: str) -> tuple[float, float]:
    """(sum, count) of BentoML's adaptive batch-size histogram for ``endpoint``'s method."""
    total = {"sum": 0.0, "count": 0.0}
    for _name, kind, labels, value in BATCH_METRIC.findall(text):
        if f'method_name="{endpoint}"' in labels:
            total[kind] += float(value)
    return total["sum"], total["count"]


# ---- HTTP load -------------------------------------------------------------------------------------------


@dataclass
class Target:
    label: str
    client: httpx.Client
    path: str
    batch: int


def body_for(ids: Sequence[str]) -> bytes:
    return json.dumps({"customer_ids": list(ids)}).encode()


def sequential(
    targets: Sequence[Target],
    ids: Sequence[str],
    requests: int,
    warmup: int,
    budget_s: float,
    seed: int,
) -> dict[str, Latency]:
    """One request per target per round, rotating the order; ``requests`` rounds or ``budget_s``."""
    rng = random.Random(seed)
    out = {t.label: Latency(t.label) for t in targets}
    deadline = time.perf_counter() + budget_s
    for i in range(warmup + requests):
        if time.perf_counter() > deadline:
            logger.warning("sequential loop stopped by its %.0fs budget after %d rounds", budget_s, i)
            break
        batch = rng.sample(ids, max(t.batch for t in targets))
        shift = i % len(targets)
        for target in [*targets[shift:], *targets[:shift]]:
            content = body_for(batch[: target.batch])
            started = time.perf_counter()
            response = target.client.post(target.path, content=content, headers=JSON_HEADERS)
            elapsed = time.perf_counter() - started
            if i < warmup:
                continue
            if response.status_code != 200:
                out[target.label].fail(str(response.status_code), response.text)
                continue
            out[target.label].seconds.append(elapsed)
    return out


def check_tags(client: httpx.Client, ids: Sequence[str]) -> dict[str, Any]:
    response = client.post("/v1/tags", content=body_for(ids[:2]), headers=JSON_HEADERS)
    response.raise_for_status()
    body = response.json()
    if not all(b["found"] for b in body):
        raise RuntimeError(f"known ids came back unknown: {body}")
    return body[0]


@dataclass
class LoadResult:
    label: str
    concurrency: int
    seconds: float
    latency: Latency
    customers: int
    client_cpu: float  # share of one core the load generator used
    mean_batch: float = math.nan

    @property
    def rate(self) -> float:
        return self.customers / self.seconds if self.seconds else math.nan


async def _closed_loop(
    base: str, path: str, ids: Sequence[str], concurrency: int, duration_s: float, max_requests: int
) -> LoadResult:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latency = Latency(path)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        # Open the connections first (not timed).
        await asyncio.gather(
            *(client.post(path, content=body_for([ids[i]]), headers=JSON_HEADERS) for i in range(concurrency))
        )
        sent = 0
        deadline = time.perf_counter() + duration_s

        async def worker(w: int) -> None:
            nonlocal sent
            rng = random.Random(w)
            while sent < max_requests and time.perf_counter() < deadline:
                sent += 1
                content = body_for([ids[rng.randrange(len(ids))]])
                started = time.perf_counter()
                try:
                    response = await client.post(path, content=content, headers=JSON_HEADERS)
                except httpx.HTTPError as exc:
                    latency.fail(type(exc).__name__, str(exc))
                    continue
                if response.status_code == 200:
                    latency.seconds.append(time.perf_counter() - started)
                else:
                    latency.fail(str(response.status_code), response.text)

        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return LoadResult(path, concurrency, seconds, latency, latency.n, cpu / seconds if seconds else math.nan)


def concurrent_load(
    server: Server, path: str, endpoint: str, ids: Sequence[str], concurrency: int, duration_s: float
) -> LoadResult:
    before = batch_stats(server.metrics(), endpoint)
    result = asyncio.run(
        _closed_loop(server.base, path, ids, concurrency, duration_s, max_requests=int(4000 * duration_s))
    )
    after = batch_stats(server.metrics(), endpoint)
    batches = after[1] - before[1]
    result.mean_batch = (after[0] - before[0]) / batches if batches > 0 else math.nan
    result.label = f"{server.name} {path}"
    return result


# ---- batch export ----------------------------------------------------------------------------------------


def time_export(home: Path, out_dir: Path, timeout_s: float, env_extra: dict[str, str]) -> dict[str, Any]:
    """Wall time of ``portrait score --out FILE`` (a fresh process, as an operator would run it)."""
    import pyarrow.parquet as pq

    out = out_dir / f"tags_{home.name}.parquet"
    env = clean_env(home, **env_extra)
    log = out_dir / f"score_{home.name}.log"
    peak = 0
    started = time.perf_counter()
    with log.open("wb") as fh:
        proc = psutil.Popen(
            [sys.executable, "-m", "portrait.cli", "score", "--out", str(out)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        deadline = started + timeout_s
        try:
            while proc.poll() is None:
                if time.perf_counter() > deadline:
                    proc.kill()
                    proc.wait(30)
                    raise TimeoutError(f"portrait score exceeded {timeout_s:.0f}s; see {log}")
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, proc.memory_info().rss)
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"portrait score failed ({proc.returncode}): {log.read_text()[-2000:]}")
    rows = pq.ParquetFile(out).metadata.num_rows
    size = out.stat().st_size
    out.unlink()
    return {"seconds": seconds, "rows": rows, "bytes": size, "peak_rss": peak}


def time_offline_read(settings: Settings) -> tuple[float, int]:
    """Seconds to read every feature view's newest snapshot from Parquet and join them by customer."""
    import pandas as pd

    from features.store import snapshots_on_disk

    name = f"snapshot={snapshots_on_disk(settings)[-1]:%Y%m%dT%H%M%S}.parquet"
    started = time.perf_counter()
    frame: pd.DataFrame | None = None
    for path in sorted(settings.features_dir.glob(f"*/{name}")):
        part = pd.read_parquet(path)
        if frame is None:
            frame = part
        else:
            frame = frame.merge(
                part.drop(columns=["event_timestamp", "created_timestamp"], errors="ignore"), on="customer_id"
            )
    assert frame is not None
    return time.perf_counter() - started, len(frame.columns)


def time_startup(home: Path, env_extra: dict[str, str]) -> float:
    """Wall time of a process that only imports what ``portrait score`` needs and loads the Tagger."""
    code = (
        "from portrait.settings import get_settings\n"
        "from serving.tagger import Tagger\n"
        "import pandas, pyarrow.parquet\n"
        "t = Tagger(get_settings())\n"
        "assert t.models, t.load_errors\n"
    )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean_env(home, **env_extra), check=True, timeout=300
    )
    return time.perf_counter() - started


def build_export_workspace(home: Path, customers: int, tracking_uri: str) -> dict[str, float]:
    """``customers`` synthetic customers' features in an online store; models from ``tracking_uri``."""
    from features import repo
    from features import store as fs
    from features.pipeline import compute_features
    from features.synth import SynthConfig, generate
    from features.validate import validate_workspace

    settings = Settings(home=home, mlflow_tracking_uri=tracking_uri)
    settings.ensure_dirs()
    steps: dict[str, float] = {}
    for name, fn in (
        (
            "synth",
            lambda: generate(
                SynthConfig(n_customers=customers, seed=13, start=END - timedelta(days=3 * 365), end=END),
                settings.raw_dir,
            ),
        ),
        ("validate", lambda: validate_workspace(settings, now=END)),
        ("features", lambda: compute_features(settings.clean_dir, settings.features_dir, [SNAPSHOT])),
        ("apply", lambda: repo.apply(settings)),
        ("materialize", lambda: fs.materialize(settings, end=SNAPSHOT + timedelta(days=1))),
    ):
        started = time.perf_counter()
        fn()
        steps[name] = time.perf_counter() - started
        logger.info("export workspace: %s in %.0fs", name, steps[name])
    (home / READY_MARKER).write_text(json.dumps({"customers": customers, "steps": steps}))
    return steps


# ---- in-process breakdown --------------------------------------------------------------------------------


def breakdown(
    settings: Settings, ids: Sequence[str], sizes: Sequence[int], reps: dict[int, int], budget_s: float
) -> tuple[dict[int, dict[str, float]], dict[str, Any]]:
    """Median milliseconds per stage of ``Tagger.tags`` for each request size (no HTTP)."""
    from pydantic import TypeAdapter

    from serving.schemas import CustomerTags
    from serving.tagger import Tagger, freeze_startup_objects, response_columns

    started = time.perf_counter()
    tagger = Tagger(settings)
    info: dict[str, Any] = {"tagger_load_s": time.perf_counter() - started}
    freeze_startup_objects()  # as the service and `portrait score` do after loading
    if tagger.load_errors or tagger.store_error:
        raise RuntimeError(f"Tagger not ready: {tagger.load_errors} {tagger.store_error}")
    store = tagger.store
    assert store is not None
    refs = tagger._refs  # noqa: SLF001 - the exact feature references the service reads
    info["features_read"] = len(refs)
    info["feature_views"] = len({r.split(":", 1)[0] for r in refs})
    info["models"] = {
        name: {"trees": m.booster.num_trees(), "features": len(m.features)}
        for name, m in tagger.models.items()
    }
    adapter = TypeAdapter(list[CustomerTags])
    # Time Tagger._score inside Tagger.tags (this instance only), so the rest of tags() -- building the
    # pydantic response -- comes from the same call.
    score_times: list[float] = []
    original_score = tagger._score  # noqa: SLF001

    def timed_score(customer_ids: Sequence[str]) -> Any:
        started = time.perf_counter()
        result = original_score(customer_ids)
        score_times.append(time.perf_counter() - started)
        return result

    tagger._score = timed_score  # type: ignore[method-assign]
    rng = random.Random(3)
    out: dict[int, dict[str, float]] = {}
    for n in sizes:
        tagger.tags(rng.sample(ids, n))  # warm-up (lazy booster and leaf-path tables)
        stages: dict[str, list[float]] = defaultdict(list)
        deadline = time.perf_counter() + budget_s
        for _ in range(reps[n]):
            if time.perf_counter() > deadline:
                break
            batch = rng.sample(ids, n)
            t = time.perf_counter()
            known, _ = tagger.read_known(batch)
            stages[READ_STAGE].append(time.perf_counter() - t)
            t = time.perf_counter()
            response = store.get_online_features(features=refs, entity_rows={"customer_id": batch})
            stages[VIEWS_STAGE].append(time.perf_counter() - t)
            t = time.perf_counter()
            response_columns(response, tagger._names, tagger._view_firsts)  # noqa: SLF001
            stages[FRAME_STAGE].append(time.perf_counter() - t)
            results = {}
            for name, model in tagger.models.items():
                t = time.perf_counter()
                results[name] = model.explain(known)
                stages[f"{name}.explain"].append(time.perf_counter() - t)
                t = time.perf_counter()
                x = model.matrix(known)
                t1 = time.perf_counter()
                leaves = model.leaf_indices(x)
                t2 = time.perf_counter()
                table, _ = model.paths.serving_tables(len(model.features))
                contrib = tree_sums(leaf_positions(leaves, model.paths.feature.shape[1]), table)
                t3 = time.perf_counter()
                model._reasons(known, contrib, 3)  # noqa: SLF001 - timing the reasons step alone
                t4 = time.perf_counter()
                stages["explain parts: matrix (3 models)"].append(t1 - t)
                stages["explain parts: leaf look-up, LightGBM (3 models)"].append(t2 - t1)
                stages["explain parts: contributions from the leaves (3 models)"].append(t3 - t2)
                stages["explain parts: reasons + describe (3 models)"].append(t4 - t3)
            score_times.clear()
            t = time.perf_counter()
            tags = tagger.tags(batch)
            tags_s = time.perf_counter() - t
            score_s = score_times[0]
            stages["Tagger._score (Feast + frame + 3 explains)"].append(score_s)
            stages["Tagger.tags total"].append(tags_s)
            stages[BUILD_STAGE].append(tags_s - score_s)
            t = time.perf_counter()
            adapter.dump_json(tags)
            stages["JSON serialisation of the response"].append(time.perf_counter() - t)
            t = time.perf_counter()
            tagger.tags_frame(batch)
            stages["Tagger.tags_frame (export path)"].append(time.perf_counter() - t)
        sums = ("explain parts:",)
        rows: dict[str, float] = {}
        for key, values in stages.items():
            if key.startswith(sums):  # three models appended per rep: sum them per rep
                per_rep = np.asarray(values).reshape(-1, len(tagger.models)).sum(axis=1)
                rows[key] = ms(float(np.median(per_rep)))
            else:
                rows[key] = ms(float(np.median(values)))
        rows["reps"] = float(len(stages["Tagger.tags total"]))
        out[n] = rows
        logger.info(
            "breakdown %d customers: tags %.1f ms (load %s)", n, rows["Tagger.tags total"], load_avg()
        )
    return out, info


# ---- report ----------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def report(args: argparse.Namespace, parts: dict[str, Any]) -> str:
    from serving.service import BATCH_MAX_LATENCY_MS

    m = parts["machine"]
    ws = parts["workspace"]
    lines = [
        SECTION,
        "",
        f"`python benchmarks/bench_serving.py --customers {args.customers} --trials {args.trials} "
        f"--requests {args.requests} --concurrency {args.concurrency}` on {parts['date']}: nproc {m['nproc']}, "
        f"RAM {m['ram_gib']:.0f} GiB, Python {m['python']}; 1/5/15-min load average **{m['load']}** at start, "
        f"{parts['load_end']} at the end. The machine is shared with other jobs, so absolute latencies are "
        "noisy; the comparisons below come from requests interleaved one by one in the same run, and the "
        "load generator runs on the same 2 cores.",
        "",
    ]
    built = "reused" if ws.get("reused") else "built in " + f"{sum(ws.get('steps', {}).values()):.0f} s"
    models = ", ".join(
        f"{k} {v['trees']} trees / {v['features']} features" for k, v in parts["info"]["models"].items()
    )
    lines += [
        f"Workspace: {parts['n_ids']:,} synthetic customers (SQLite online store, local profile), {built}; "
        f"Optuna trials {ws.get('trials', args.trials)}. Models: {models}. One online read fetches "
        f"{parts['info']['features_read']} features from {parts['info']['feature_views']} feature views. "
        f"Server start to ready: Portrait {parts['ready']['portrait']:.1f} s, trivial {parts['ready']['trivial']:.1f} s"
        + (
            f", Portrait before {parts['ready']['portrait before']:.1f} s"
            if "portrait before" in parts["ready"]
            else ""
        )
        + ".",
        "",
    ]
    seq: dict[str, Latency] = parts["sequential"]
    tags, echo, echo_b = seq["tags"], seq["echo"], seq["echo_batch"]
    ratio = tags.p(50) / echo.p(50)
    ratio_b = tags.p(50) / echo_b.p(50)
    lines += [
        "### Single customer, sequential (one keep-alive connection, loopback)",
        "",
        "| endpoint | requests | errors | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [
        (tags, f"Portrait `POST /v1/tags` (1 id, batchable, max_latency_ms={BATCH_MAX_LATENCY_MS:,})"),
        (echo, "trivial `POST /v1/echo` (1 string)"),
        (echo_b, "trivial `POST /v1/echo_batch` (1 string, batchable)"),
    ]
    if "tags_before" in seq:
        rows.append((seq["tags_before"], f"Portrait **before**: {before_label(args)}"))
    if "tags_variant" in seq:
        rows.append((seq["tags_variant"], f"Portrait variant, max_latency_ms={args.variant_latency_ms}"))
    for lat, label in rows:
        lines.append(
            f"| {label} | {lat.n:,} | {errors_of(lat)} | {lat.p(50):.2f} | {lat.p(90):.2f} | {lat.p(99):.2f} "
            f"| {lat.p(100):.1f} |"
        )
    lines += [
        "",
        f"* p50(tags) / p50(trivial echo) = **{ratio:.2f}** (goal <= {GOAL_RATIO}: {verdict(ratio <= GOAL_RATIO)}); "
        f"against the batchable echo: {ratio_b:.2f}.",
        f"* p99(tags) = **{tags.p(99):.1f} ms** (goal <= {GOAL_P99_MS:.0f} ms: "
        f"{verdict(tags.p(99) <= GOAL_P99_MS)}).",
        *(
            [
                f"* before: p50 {seq['tags_before'].p(50):.2f} ms, p99 {seq['tags_before'].p(99):.2f} ms, "
                f"p50 / p50(echo) = {seq['tags_before'].p(50) / echo.p(50):.2f}; after / before p50 = "
                f"**{tags.p(50) / seq['tags_before'].p(50):.3f}**, p99 = {tags.p(99) / seq['tags_before'].p(99):.3f}."
            ]
            if "tags_before" in seq
            else []
        ),
        "",
    ]
    big_tags, big_echo = parts["big"]["tags"], parts["big"]["echo"]
    lines += [
        "### 1,000 customers per request (random known ids)",
        "",
        "| endpoint | requests | errors | p50 ms | p90 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
        f"| Portrait `POST /v1/tags` (1,000 ids) | {big_tags.n} | {errors_of(big_tags)} | {big_tags.p(50):.1f} "
        f"| {big_tags.p(90):.1f} | {big_tags.p(99):.1f} |",
        f"| trivial `POST /v1/echo` (1,000 strings) | {big_echo.n} | {errors_of(big_echo)} | {big_echo.p(50):.1f} "
        f"| {big_echo.p(90):.1f} | {big_echo.p(99):.1f} |",
        *(
            [
                f"| Portrait **before** `POST /v1/tags` (1,000 ids) | {b.n} | {errors_of(b)} | {b.p(50):.1f} "
                f"| {b.p(90):.1f} | {b.p(99):.1f} |",
                "",
                f"* after / before p50 = **{big_tags.p(50) / b.p(50):.3f}**.",
            ]
            if (b := parts["big"].get("tags_before")) is not None
            else []
        ),
        "",
        f"* p50 = **{big_tags.p(50):.0f} ms** (goal <= {GOAL_BIG_P50_MS:.0f} ms: "
        f"{verdict(big_tags.p(50) <= GOAL_BIG_P50_MS)}); response ~{parts['big_bytes'] / 1e6:.1f} MB of JSON.",
        "",
        f"### Sustained load: closed-loop single-customer clients, {args.duration:.0f} s each",
        "",
        "| endpoint | clients | requests | errors | customers/s | p50 ms | p99 ms | mean batch | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in parts["load"]:
        lines.append(
            f"| {res.label} | {res.concurrency} | {res.latency.n:,} | {errors_of(res.latency)} | {res.rate:,.0f} "
            f"| {res.latency.p(50):.1f} | {res.latency.p(99):.1f} | "
            f"{'-' if math.isnan(res.mean_batch) else f'{res.mean_batch:.1f}'} | {res.client_cpu:.0%} |"
        )
    samples = [
        f"{r.label} x{r.concurrency}: `{r.latency.sample_error}`" for r in parts["load"] if r.latency.errors
    ]
    lines += [
        "",
        "Requests: answered with 200 (their latencies are the percentiles); customers/s counts only those. "
        "Mean batch: BentoML's adaptive-batch-size histogram (`/metrics`) over the run; client CPU: the "
        "load generator's share of one core (it competes with the server for the same 2 cores).",
        "",
        *[f"* first error, {x}" for x in samples],
        "",
        "### Batch export (`portrait score --out FILE.parquet`, a fresh process, 10,000 ids per online read)",
        "",
        "| customers | wall s | customers/s | how |",
        "|---:|---:|---:|---|",
    ]
    for row in parts["export"]:
        lines.append(f"| {row['customers']:,} | {row['seconds']:.0f} | {row['rate']:,.0f} | {row['how']} |")
    lines += ["", *[f"* {note}" for note in parts["export_notes"]], ""]
    bd: dict[int, dict[str, float]] = parts["breakdown"]
    sizes = sorted(bd)
    if not sizes:
        return "\n".join(lines).rstrip() + "\n"
    lines += [
        "### In-process breakdown (`Tagger`, no HTTP; median ms per call)",
        "",
        "| stage | " + " | ".join(f"{n:,} customer{'s' if n > 1 else ''}" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    keys = [k for k in bd[sizes[0]] if k != "reps"]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{bd[n].get(key, math.nan):.2f}" for n in sizes) + " |")
    lines.append("| repetitions | " + " | ".join(f"{bd[n]['reps']:.0f}" for n in sizes) + " |")
    lines += [
        "",
        "Explain rows are each model's `explain` (matrix + leaf look-up + contributions + reasons); the "
        "'parts' rows are the same four steps timed separately, summed over the three models. `Tagger` reads "
        "one Feast `PrecomputedFeatureVector` per customer (FeatureService `tags_v1`, written after each "
        "materialization, numeric features packed in one float64 block) and decodes it to columns; the two "
        "'reference' rows time Feast's per-view "
        "`get_online_features` and its conversion, which the service uses only for customers without a "
        "current vector (same values). "
        "The process froze its start-up objects out of the garbage collector, as the service does.",
        "",
    ]
    for n in sizes:
        row = bd[n]
        total = row["Tagger.tags total"]
        feast = row[READ_STAGE]
        explain = sum(row[f"{name}.explain"] for name in parts["info"]["models"])
        lines.append(
            f"* {n:,} customer{'s' if n > 1 else ''}: `Tagger.tags` {total:.1f} ms = Feast vector read "
            f"{feast:.1f} ms ({feast / total:.0%}; per-view read + conversion would be "
            f"{row[VIEWS_STAGE] + row[FRAME_STAGE]:.1f} ms), 3x explain {explain:.1f} ms "
            f"({explain / total:.0%}), response build "
            f"{row[BUILD_STAGE]:.1f} ms ({row[BUILD_STAGE] / total:.0%}); stages are medians of "
            "separate calls, so they need not add up exactly."
        )
    return "\n".join(lines).rstrip() + "\n"


def write_section(text: str, path: Path = RESULTS, *, write: bool = True) -> None:
    """Print the report and replace this benchmark's section of ``path`` (see :func:`results.publish`)."""
    from results import publish

    publish(text, "## Serving", write=write, path=path)


# ---- main ------------------------------------------------------------------------------------------------


def run_http(
    args: argparse.Namespace, home: Path, ids: list[str], parts: dict[str, Any], scratch: Path
) -> None:
    bench_dir = ["--working-dir", str(Path(__file__).resolve().parent)]
    env = clean_env(home, BENTOML_HOME=str(scratch / "bentoml_home"), BENTOML_DO_NOT_TRACK="True")
    portrait = Server("portrait", "serving.service:Portrait", free_port(), env, scratch / "portrait.log")
    trivial = Server(
        "trivial", "trivial_service:Trivial", free_port(), env, scratch / "trivial.log", bench_dir
    )
    servers = [portrait, trivial]
    before: Server | None = None
    if args.before_env and not args.compare_root:
        args.compare_root = ROOT
    if args.compare_root:
        root = args.compare_root.resolve()
        before_env = {
            **env,
            "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p),
            **dict(item.split("=", 1) for item in args.before_env),
        }
        before = Server(
            "portrait before",
            "serving.service:Portrait",
            free_port(),
            before_env,
            scratch / "before.log",
            cwd=root,
        )
        servers.append(before)
    variant: Server | None = None
    if args.variant_latency_ms:
        variant_env = {**env, "BENCH_TAGS_MAX_LATENCY_MS": str(args.variant_latency_ms)}
        variant = Server(
            f"portrait max_latency_ms={args.variant_latency_ms}",
            "portrait_variant:PortraitVariant",
            free_port(),
            variant_env,
            scratch / "variant.log",
            bench_dir,
        )
        servers.append(variant)
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(args.ready_timeout)
        parts["ready"] = {s.name: s.ready_s for s in servers}
        logger.info("servers ready: %s", {s.name: round(s.ready_s, 1) for s in servers})
        clients = [httpx.Client(base_url=s.base, timeout=60) for s in servers]
        try:
            pc, tc = clients[0], clients[1]
            parts["sample_tags"] = check_tags(pc, ids)
            targets = [
                Target("tags", pc, "/v1/tags", 1),
                Target("echo", tc, "/v1/echo", 1),
                Target("echo_batch", tc, "/v1/echo_batch", 1),
            ]
            by_server = {s.name: c for s, c in zip(servers, clients, strict=True)}
            if before is not None:
                targets.append(Target("tags_before", by_server[before.name], "/v1/tags", 1))
            if variant is not None:
                targets.append(Target("tags_variant", by_server[variant.name], "/v1/tags", 1))
            seq = sequential(
                targets,
                ids,
                args.requests,
                warmup=max(args.requests // 10, 20),
                budget_s=args.budget,
                seed=1,
            )
            parts["sequential"] = seq
            logger.info(
                "sequential: tags p50 %.2f p99 %.2f ms; echo p50 %.2f ms (load %s)",
                seq["tags"].p(50),
                seq["tags"].p(99),
                seq["echo"].p(50),
                load_avg(),
            )
            big = sequential(
                [
                    Target("tags", pc, "/v1/tags", 1000),
                    Target("echo", tc, "/v1/echo", 1000),
                    *(
                        [Target("tags_before", by_server[before.name], "/v1/tags", 1000)]
                        if before is not None
                        else []
                    ),
                ],
                ids,
                max(args.big_requests, 20),
                warmup=3,
                budget_s=args.budget,
                seed=2,
            )
            parts["big"] = big
            parts["big_bytes"] = len(
                pc.post("/v1/tags", content=body_for(ids[:1000]), headers=JSON_HEADERS).content
            )
            logger.info("1,000 ids: tags p50 %.1f ms (load %s)", big["tags"].p(50), load_avg())
        finally:
            for client in clients:
                client.close()
        results = []
        runs = [(portrait, "/v1/tags", "tags"), (trivial, "/v1/echo_batch", "echo_batch")]
        if variant is not None:
            runs.insert(1, (variant, "/v1/tags", "tags"))
        for concurrency in args.concurrency_levels:
            for server, path, endpoint in runs:
                res = concurrent_load(server, path, endpoint, ids, concurrency, args.duration)
                logger.info(
                    "%s x%d: %.0f customers/s, p50 %.1f p99 %.1f ms, mean batch %.1f, errors %s (load %s)",
                    res.label,
                    concurrency,
                    res.rate,
                    res.latency.p(50),
                    res.latency.p(99),
                    res.mean_batch,
                    errors_of(res.latency),
                    load_avg(),
                )
                results.append(res)
        parts["load"] = results
    finally:
        for server in servers:
            server.stop()


def run_export(
    args: argparse.Namespace, home: Path, n_ids: int, parts: dict[str, Any], scratch: Path
) -> None:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    measured = time_export(home, scratch, args.export_timeout, {})
    rate = measured["rows"] / measured["seconds"]
    rows.append(
        {"customers": measured["rows"], "seconds": measured["seconds"], "rate": rate, "how": "measured"}
    )
    startup = time_startup(home, {})
    per_customer = max(measured["seconds"] - startup, 0.0) / max(measured["rows"], 1)
    notes.append(
        f"{measured['rows']:,} customers: {measured['seconds']:.1f} s wall, of which ~{startup:.1f} s is process "
        f"start (imports + loading the Tagger, timed separately); output {measured['bytes'] / 1e6:.1f} MB; "
        f"peak RSS of the process {measured['peak_rss'] / 2**30:.2f} GiB (sampled every 0.1 s)."
    )
    offline_s, columns = time_offline_read(Settings(home=home))
    feast_per_1000 = parts.get("breakdown", {}).get(1000, {})
    feast_ms = feast_per_1000.get(READ_STAGE, math.nan)
    notes.append(
        f"For comparison: reading the newest snapshot of every feature view from Parquet and joining them "
        f"({n_ids:,} customers, {columns} columns) takes {offline_s:.1f} s in-process, where the Feast online "
        f"reads alone cost ~{feast_ms * n_ids / 1000 / 1000:.0f} s at the breakdown's 1,000-customer rate "
        f"({feast_ms:.0f} ms per 1,000)."
    )
    target = args.export_customers
    if target > n_ids:
        export_home = args.workdir / f"export_{target}"
        tracking = f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"
        extra = {"PORTRAIT_MLFLOW_TRACKING_URI": tracking}
        if not (export_home / READY_MARKER).exists() and args.export_build:
            steps = build_export_workspace(export_home, target, tracking)
            notes.append(
                f"{target:,}-customer export workspace built in {sum(steps.values()):.0f} s "
                f"({', '.join(f'{k} {v:.0f} s' for k, v in steps.items())}); models shared with the main one."
            )
        if (export_home / READY_MARKER).exists():
            big = time_export(export_home, scratch, args.export_timeout, extra)
            rows.append(
                {
                    "customers": big["rows"],
                    "seconds": big["seconds"],
                    "rate": big["rows"] / big["seconds"],
                    "how": "measured (workspace sharing the main one's models)",
                }
            )
        else:
            estimate = startup + per_customer * target
            rows.append(
                {
                    "customers": target,
                    "seconds": estimate,
                    "rate": target / estimate,
                    "how": f"**extrapolated** linearly from the {measured['rows']:,} measured (not run)",
                }
            )
            notes.append(
                f"{target:,} customers not measured: building such a workspace (synthetic data, features and a "
                "full SQLite materialization) takes far longer than the ~10 minutes budgeted on this shared "
                "2-core machine (`bench_features.py` puts the 1M materialization alone at 15-20 min). "
                f"Estimate = start-up {startup:.1f} s + {ms(per_customer):.3f} ms/customer x {target:,}: "
                "`portrait score` works in fixed 10,000-id batches, so the scoring cost is linear in the "
                "number of batches; a bigger SQLite file (lookups O(log n)) and a 10x larger in-memory "
                "frame before the Parquet write make it a lower bound. `--export-build` measures it."
            )
    parts["export"] = rows
    parts["export_notes"] = notes


def before_label(args: argparse.Namespace) -> str:
    """What the 'before' server is: the label given, else its checkout and environment."""
    if args.before_label:
        return args.before_label
    env = f" with {', '.join(args.before_env)}" if args.before_env else ""
    return f"from {args.compare_root}{env}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--customers", type=int, default=100_000, help="Synthetic customers in the workspace."
    )
    parser.add_argument(
        "--export-customers", type=int, default=1_000_000, help="Customers for the batch-export figure."
    )
    parser.add_argument(
        "--export-build",
        action="store_true",
        help="Build a workspace of --export-customers customers to measure the export (slow: ~30 min).",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "portrait-bench-serving",
        help="Where the workspace is built (reused when it already holds a trained one).",
    )
    parser.add_argument("--trials", type=int, default=2, help="Optuna trials per model when building.")
    parser.add_argument(
        "--train-snapshots", type=int, default=3, help="Training snapshots per model when building."
    )
    parser.add_argument("--requests", type=int, default=1000, help="Sequential single-customer requests.")
    parser.add_argument("--big-requests", type=int, default=30, help="1,000-customer requests (>= 20).")
    parser.add_argument("--concurrency", default="8,32", help="Concurrent clients, comma separated.")
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds per concurrent load run.")
    parser.add_argument("--budget", type=float, default=300.0, help="Time cap of each sequential loop (s).")
    parser.add_argument("--breakdown-reps", type=int, default=200, help="In-process reps for 1 customer.")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="Seconds to wait for a server.")
    parser.add_argument("--export-timeout", type=float, default=900.0, help="Cap on one `portrait score`.")
    parser.add_argument(
        "--variant-latency-ms",
        type=int,
        default=0,
        help="Also serve Portrait with this /v1/tags max_latency_ms (benchmarks/portrait_variant.py); 0: off.",
    )
    parser.add_argument(
        "--compare-root",
        type=Path,
        help="Also serve serving.service:Portrait from this checkout (e.g. a git worktree of HEAD), interleaved.",
    )
    parser.add_argument(
        "--before-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Environment of the 'before' server (with no --compare-root: this checkout), e.g. "
        "PORTRAIT_REALTIME_TAGS=false to compare /v1/tags without the real-time read.",
    )
    parser.add_argument("--before-label", default="", help="What the 'before' server is, for the tables.")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--skip-breakdown", action="store_true", help="Only load the Tagger (model sizes).")
    parser.add_argument("--build-only", action="store_true", help="Build (or check) the workspace and stop.")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    parser.add_argument("--rerender", type=Path, help=argparse.SUPPRESS)  # a bench_serving_last.pickle
    args = parser.parse_args()
    if args.rerender:
        with args.rerender.open("rb") as fh:
            saved = pickle.load(fh)  # noqa: S301 - our own file
        finish(argparse.Namespace(**{**saved["args"], "no_write": args.no_write}), saved["parts"])
        return
    args.concurrency_levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "urllib3", "httpx", "bentoml"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for key in [k for k in os.environ if k.startswith("PORTRAIT_")]:
        del os.environ[key]  # the benchmark's settings are explicit

    parts: dict[str, Any] = {
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    logger.info("machine %s", parts["machine"])
    args.workdir.mkdir(parents=True, exist_ok=True)
    home, ws = workspace(args)
    parts["workspace"] = ws
    settings = Settings(home=home)
    ids = served_ids(settings)
    parts["n_ids"] = len(ids)
    logger.info("workspace %s: %d customers", home, len(ids))
    if args.build_only:
        return

    parts["breakdown"], parts["info"] = breakdown(
        settings,
        ids,
        [] if args.skip_breakdown else [1, 1000],
        {1: args.breakdown_reps, 1000: max(args.breakdown_reps // 10, 20)},
        budget_s=args.budget,
    )
    with tempfile.TemporaryDirectory(prefix="bench-serving-", dir=args.workdir) as tmp:
        scratch = Path(tmp)
        try:
            run_http(args, home, ids, parts, scratch)
        except Exception:
            for log in ("portrait.log", "trivial.log"):
                path = scratch / log
                if path.exists():
                    print(
                        f"--- {log} (tail) ---\n{path.read_text(errors='replace')[-3000:]}", file=sys.stderr
                    )
            raise
        if args.skip_export:
            parts["export"], parts["export_notes"] = [], ["skipped (--skip-export)"]
        else:
            run_export(args, home, len(ids), parts, scratch)
    parts["load_end"] = load_avg()
    with (args.workdir / "bench_serving_last.pickle").open("wb") as fh:
        pickle.dump({"args": vars(args), "parts": parts}, fh)  # raw figures, to re-render the report
    finish(args, parts)


def finish(args: argparse.Namespace, parts: dict[str, Any]) -> None:
    text = report(args, parts)
    write_section(text, write=not args.no_write)


if __name__ == "__main__":
    main()

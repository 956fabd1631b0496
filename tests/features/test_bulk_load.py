"""The bulk loader (features/bulk_load.py) on the SQLite online store.

* It writes what Feast's own materialize writes: 10,000 synthetic customers loaded both ways into two projects
  give the same ``get_online_features`` answers value for value, the same SQLite rows byte for byte, the same
  serving vectors (but their ``precomputed_at``) and the same registry intervals.
* Incremental loads write only the customers whose rows changed, and remove those who left.
* Serving does not notice a load: concurrent readers on serving's own read path (``Tagger.read_known``) see no
  error and, per request, either the previous load or the new one; a load killed with SIGKILL midway leaves the
  previous values served, and the next load finishes the job.
* The store carries a marker of its load: without it readiness fails, and the next load writes everything.

The helpers at the top are shared with tests/production/test_bulk_load_redis.py.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.core.PrecomputedFeatureVector_pb2 import PrecomputedFeatureVector
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from features import bulk_load as bl
from features import feast_internals as fi
from features import repo
from features import store as fs
from features.pipeline import compute_features
from features.synth import SynthConfig
from portrait.settings import Settings
from portrait.workflow import synthesize
from serving.tagger import Tagger

REPO = Path(__file__).resolve().parents[2]
END = datetime(2025, 1, 1, tzinfo=UTC)
SNAPSHOT = END + timedelta(days=1)
LOAD_END = SNAPSHOT + timedelta(days=1)
VIEWS = ("customer_profile", "customer_transactions", "customer_behaviour")


# ---- shared helpers ----------------------------------------------------------------------------------------


def build_features(home: Path, customers: int, seed: int = 11) -> Path:
    """A workspace with validated synthetic inputs and two feature snapshots (30 days apart)."""
    settings = Settings(home=home)
    settings.ensure_dirs()
    synthesize(
        settings, SynthConfig(n_customers=customers, seed=seed, start=END - timedelta(days=365), end=END)
    )
    compute_features(settings.clean_dir, settings.features_dir, [END - timedelta(days=30), SNAPSHOT])
    return home


def copy_features(source: Path, home: Path) -> Path:
    shutil.copytree(source / "data" / "features", home / "data" / "features")
    return home


def snapshot_file(home: Path, view: str, when: datetime = SNAPSHOT) -> Path:
    return home / "data" / "features" / view / f"snapshot={when:%Y%m%dT%H%M%S}.parquet"


def customers(home: Path) -> list[str]:
    return pd.read_parquet(
        snapshot_file(home, "customer_profile"), columns=["customer_id"]
    ).customer_id.tolist()


def rewrite(home: Path, view: str, change: Any, when: datetime = SNAPSHOT) -> None:
    """Rewrite one snapshot's feature file with ``change(frame)`` applied (the pipeline recomputing it)."""
    path = snapshot_file(home, view, when)
    frame = pd.read_parquet(path)
    change(frame)
    frame.to_parquet(path, index=False)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


def assert_same_online_features(one: FeatureStore, other: FeatureStore, ids: list[str]) -> int:
    """Every service's ``get_online_features`` (with event timestamps) equal value for value; returns the count."""
    compared = 0
    rows = [{"customer_id": cid} for cid in ids]
    for service in one.list_feature_services():
        a = one.get_online_features(features=one.get_feature_service(service.name), entity_rows=rows)
        b = other.get_online_features(features=other.get_feature_service(service.name), entity_rows=rows)
        left, right = a.to_dict(include_event_timestamps=True), b.to_dict(include_event_timestamps=True)
        assert left.keys() == right.keys()
        for name, values in left.items():
            for i, value in enumerate(values):
                assert same(value, right[name][i]), (service.name, name, ids[i], value, right[name][i])
                compared += 1
    return compared


def vectors_without_time(store: FeatureStore, ids: list[str]) -> list[bytes | None]:
    """The serving vectors of ``ids`` as serving reads them, ``precomputed_at`` cleared."""
    out: list[bytes | None] = []
    for blob in fs.read_vectors(store, [fs.entity_key(cid) for cid in ids]):
        if blob is None:
            out.append(None)
            continue
        vector = PrecomputedFeatureVector.FromString(blob)
        vector.ClearField("precomputed_at")
        out.append(vector.SerializeToString())
    return out


def serving_reader(settings: Settings) -> Tagger:
    """A Tagger reading the store exactly as serving does (``read_known``: the serving vectors, and Feast's
    per-view read for what they lack), standing in a tag model that draws on the serving service: models need
    MLflow, which these tests do not exercise."""
    offline = settings.model_copy(update={"mlflow_tracking_uri": "http://127.0.0.1:1"})
    tagger = Tagger(offline)
    tagger.models = {"reader": SimpleNamespace(feature_service=fs.SERVING_SERVICE)}  # type: ignore[dict-item]
    tagger._resolve_features(tagger._open_store())  # noqa: SLF001 - what start-up does once models are loaded
    return tagger


def read_tenure(tagger: Tagger, ids: list[str]) -> list[float]:
    known, found = tagger.read_known(ids)
    assert found.all()
    return [float(v) for v in known["tenure_days"]]


def feast_materialize(settings: Settings, store: FeatureStore) -> None:
    """What `portrait features materialize` did before the bulk loader: Feast's own materialize of every view
    from the earliest snapshot, then the serving vectors rebuilt from the store."""
    first = fs.earliest_snapshot(settings)
    assert first is not None
    views = [v.name for v in store.list_feature_views()]
    store.materialize(start_date=first - timedelta(seconds=1), end_date=LOAD_END, feature_views=views)
    fs.precompute_vectors(settings, store)


KILL_SCRIPT = """
import sys, time
from datetime import datetime
from pathlib import Path
from features import store as fs
from portrait.settings import Settings

settings = Settings.model_validate_json(Path(sys.argv[1]).read_text())
batches = []

def progress(done, total):
    batches.append(done)
    if len(batches) == 2:
        print("midway", flush=True)
        time.sleep(600)

fs.materialize(settings, end=datetime.fromisoformat(sys.argv[2]), progress=progress)
print("finished", flush=True)
"""


def kill_midway(settings: Settings, tmp_path: Path) -> None:
    """Run `materialize` in a child process and SIGKILL it once two batches are written."""
    config = tmp_path / "settings.json"
    config.write_text(settings.model_dump_json())
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(config), LOAD_END.isoformat()],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "midway", (line, child.stderr.read() if child.stderr else "")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


class Readers:
    """Threads reading the same customers through serving's read path until stopped."""

    def __init__(self, tagger: Tagger, ids: list[str], threads: int = 4) -> None:
        self.tagger, self.ids = tagger, ids
        self.errors: list[BaseException] = []
        self.seen: list[tuple[float, ...]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def _run(self, k: int) -> None:
        ids = self.ids[k::2] if k % 2 else self.ids
        while not self.stop.is_set():
            try:
                tenure = tuple(read_tenure(self.tagger, ids))
                self.seen.append(tenure if ids is self.ids else ())
            except BaseException as exc:  # noqa: BLE001 - every failure is a finding
                self.errors.append(exc)

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


# ---- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def features_10k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_features(tmp_path_factory.mktemp("bulk10k"), 10_000)


@pytest.fixture(scope="module")
def features_2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_features(tmp_path_factory.mktemp("bulk2k"), 2_000, seed=5)


@pytest.fixture
def loaded(features_2k: Path, tmp_path: Path) -> tuple[Settings, FeatureStore]:
    """A private workspace whose SQLite online store holds one bulk load (small batches: several per load)."""
    settings = Settings(home=copy_features(features_2k, tmp_path / "ws"), online_load_batch=500)
    store = repo.apply(settings)
    assert fs.materialize(settings, end=LOAD_END, store=store)["mode"] == "full"
    return settings, store


# ---- column-wise serialization -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "value_type"),
    [
        (pa.array([1.5, -0.0, 0.0, float("nan"), 1e16, 1e-5, 123.0, None, 2.0**-1074]), ValueType.DOUBLE),
        (pa.array([0, -1, 1, 127, 128, 2**40, -(2**40), None]), ValueType.INT64),
        (pa.array([0, -1, 2**40]), ValueType.INT64),
        (pa.array([0, 3, -7]), ValueType.DOUBLE),
        (pa.array([2.9, -2.9, float("nan"), 0.0]), ValueType.INT64),
        (pa.array([0, -5, 300], type=pa.int32()), ValueType.INT32),
        (pa.array([0.1, 3.5, None]), ValueType.FLOAT),
        (pa.array([True, False, None]), ValueType.BOOL),
        (pa.array(["a", "", None, "é" * 200]), ValueType.STRING),
        (pa.array(["a", "", None, "b"]).dictionary_encode(), ValueType.STRING),
        (pa.array(["x", None, "yy"]).slice(1), ValueType.STRING),
        (pa.array([b"\x00\xff", None, b""]), ValueType.BYTES),
        (pa.array([1, 2, None], type=pa.int64()).slice(1), ValueType.INT64),
        (pa.array([1_700_000_000, None]), ValueType.UNIX_TIMESTAMP),  # no vectorised path: Feast's own
    ],
)
def test_columns_serialize_as_feast_does(array, value_type):
    """Each value's bytes and SQLite's value_text column as Feast's materialize makes them."""
    column = bl.encode(array, value_type)
    protos = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)
    assert column.values.tolist() == [p.SerializeToString() for p in protos]
    assert column.text() == [fi.sqlite_text(p) for p in protos]


def test_byte_string_helpers():
    from google.protobuf.internal.encoder import _VarintBytes

    values = np.array([0, 1, 127, 128, 300, 2**35, 2**63 - 1, -1, -300], dtype=np.int64)
    assert bl.varint(values).tolist() == [_VarintBytes(int(v) & (2**64 - 1)) for v in values]
    assert bl.decimal(np.array([0, 9, 10, 99, 100, 123456])).tolist() == [
        b"0",
        b"9",
        b"10",
        b"99",
        b"100",
        b"123456",
    ]
    a = bl.Blobs.from_list([b"a", b"", b"ccc"])
    b = bl.Blobs.from_list([b"", b"xy", b"z"])
    assert bl.concat(a, bl.Blobs.const(b"-", 3), b).tolist() == [b"a-", b"-xy", b"ccc-z"]
    assert a.take(np.array([2, 0])).tolist() == [b"ccc", b"a"]
    assert a.take(np.array([2, 0])).expand(np.array([1, 3]), 4).tolist() == [b"", b"ccc", b"", b"a"]
    assert bl.delimited(0x12, a).tolist() == [b"\x12\x01a", b"\x12\x00", b"\x12\x03ccc"]


def test_customers_are_in_the_order_of_feasts_serialized_keys(features_2k: Path, tmp_path: Path):
    """The order SQLite keeps rows in, so that a rebuilt table is written by appends only."""
    settings = Settings(home=copy_features(features_2k, tmp_path / "ws"))
    store = repo.apply(settings)
    specs = [bl.ViewSpec.of(v) for v in store.list_feature_views() if bl.bulk_loadable(v)]
    target = bl.read_target(specs, END - timedelta(days=400), LOAD_END)
    ids = target.ids.to_pylist()
    keys = [serialize_entity_key(fs.entity_key(cid), entity_key_serialization_version=3) for cid in ids]
    assert keys == sorted(keys) and set(ids) == set(customers(settings.home))
    chunk = bl.encode_chunk(target, specs, np.arange(len(ids)), fi.entity_key_prefix("customer_id"))
    assert chunk.keys.tolist() == keys


# ---- what gets written ---------------------------------------------------------------------------------------


def _rows(con: sqlite3.Connection, table: str) -> list[tuple]:
    return con.execute(
        f'SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM "{table}" ORDER BY 1, 2'
    ).fetchall()


def test_bulk_load_reads_back_what_feasts_materialize_writes(features_10k: Path, tmp_path: Path):
    home = copy_features(features_10k, tmp_path / "ws")
    bulk, feast_ = Settings(home=home, feast_project="bulk"), Settings(home=home, feast_project="feast")
    bulk_store, feast_store = repo.apply(bulk), repo.apply(feast_)
    result = fs.materialize(bulk, end=LOAD_END, store=bulk_store)
    feast_materialize(feast_, feast_store)
    ids = fs.feature_table_ids(bulk)
    assert len(ids) == 10_000 and result["vectors"] == 10_000
    assert result["load"]["written"] == 10_000 and result["load"]["mode"] == "full"

    assert assert_same_online_features(bulk_store, feast_store, [*ids, "nobody"]) > 10_000 * 50
    assert vectors_without_time(bulk_store, ids) == vectors_without_time(feast_store, ids)
    for view in bulk_store.list_feature_views():
        assert (
            view.materialization_intervals
            == feast_store.get_feature_view(view.name).materialization_intervals
        )
    # The tables themselves, byte for byte (value_text and created_ts included).
    with sqlite3.connect(fi.sqlite_path(bulk_store)) as con:
        for view in VIEWS:
            assert _rows(con, f"bulk_{view}") == _rows(con, f"feast_{view}"), view
        schemas = con.execute(
            "SELECT name, sql FROM sqlite_master WHERE name LIKE 'bulk_%' OR name LIKE 'feast_%'"
        )
        ddl = {name: sql for name, sql in schemas}
        for view in VIEWS:  # the same schema and index, under Feast's names
            assert ddl[f"bulk_{view}"].replace("bulk_", "") == ddl[f"feast_{view}"].replace("feast_", "")
            assert ddl[f"bulk_{view}_ek"].replace("bulk_", "") == ddl[f"feast_{view}_ek"].replace(
                "feast_", ""
            )
        leftovers = [n for n in ddl if n.endswith((bl.STAGE_SUFFIX, bl.OLD_SUFFIX))]
        assert leftovers == []
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # The loader's connection does not zero freed pages (2 = FAST; 1, a build default, made drops slow).
    with closing(bl._connect(fi.sqlite_path(bulk_store))) as con:
        assert con.execute("PRAGMA secure_delete").fetchone()[0] == 2
    # Feast keeps working on the loaded tables: its own materialize writes into them.
    feast_store_on_bulk = fs.feature_store(bulk)
    feast_store_on_bulk.materialize_incremental(end_date=LOAD_END + timedelta(days=1))
    assert assert_same_online_features(feast_store_on_bulk, feast_store, ids[:200]) > 0


def test_incremental_load_writes_only_the_changed_customers(loaded, tmp_path: Path):
    settings, store = loaded
    ids = customers(settings.home)
    changed, gone, kept = ids[:25], ids[25:30], ids[30]

    def bump(frame: pd.DataFrame) -> None:
        frame.loc[frame.customer_id.isin(changed), "spend_lifetime"] += 1.0

    rewrite(settings.home, "customer_transactions", bump)
    for view in (*VIEWS, "customer_realtime"):  # five customers leave the feature tables altogether
        for when in (END - timedelta(days=30), SNAPSHOT):
            if snapshot_file(settings.home, view, when).exists():
                rewrite(
                    settings.home,
                    view,
                    lambda f: f.drop(f.index[f.customer_id.isin(gone)], inplace=True),
                    when,
                )
    key = serialize_entity_key(fs.entity_key(kept), entity_key_serialization_version=3)
    con = sqlite3.connect(fi.sqlite_path(store))
    table = fi.sqlite_table(store, store.get_feature_view("customer_transactions"))
    rowids_before = con.execute(f'SELECT rowid FROM "{table}" WHERE entity_key = ?', (key,)).fetchall()

    result = fs.materialize(settings, end=LOAD_END, store=store)
    assert result["mode"] == "incremental"
    assert (result["load"]["written"], result["load"]["deleted"], result["vectors"]) == (25, 5, 25)
    assert result["load"]["switch"] == "one transaction"
    # An unchanged customer's rows were not rewritten; the changed ones read the new values, the others none.
    assert (
        con.execute(f'SELECT rowid FROM "{table}" WHERE entity_key = ?', (key,)).fetchall() == rowids_before
    )
    offline = pd.read_parquet(snapshot_file(settings.home, "customer_transactions")).set_index("customer_id")
    online = fs.online_features(store, "clv", [*changed, *gone])
    assert online["spend_lifetime"][:25] == offline.loc[changed, "spend_lifetime"].tolist()
    assert online["spend_lifetime"][25:] == [None] * 5
    assert fs.read_vectors(store, [fs.entity_key(c) for c in gone]) == [None] * 5
    tagger = serving_reader(settings)
    known, found = tagger.read_known([*changed, *gone])
    assert found.tolist() == [True] * 25 + [False] * 5
    assert known["spend_lifetime"].tolist() == offline.loc[changed, "spend_lifetime"].tolist()
    con.close()
    # Nothing changed since: nothing written.
    again = fs.materialize(settings, end=LOAD_END, store=store)
    assert (again["mode"], again["load"]["written"], again["load"]["deleted"]) == ("incremental", 0, 0)


def test_a_materialization_outside_the_loader_makes_the_next_load_full(loaded):
    settings, store = loaded
    store.materialize_incremental(end_date=LOAD_END + timedelta(days=1))  # `feast materialize`
    result = fs.materialize(settings, end=LOAD_END + timedelta(days=1), store=store)
    assert result["mode"] == "full" and "registry" in result["load"]["why"]
    assert result["load"]["written"] == 2_000


def test_a_store_that_lost_its_marker_is_unready_and_the_next_load_writes_everything(loaded):
    settings, store = loaded
    tagger = serving_reader(settings)
    assert tagger.check_store() is None and fs.load_marker(store)["generation"] == 0
    with sqlite3.connect(fi.sqlite_path(store)) as con:
        con.execute(f'DELETE FROM "{fi.sqlite_table(store, fs.load_view())}"')
    reason = tagger.check_store()
    assert reason is not None and "marker" in reason and "portrait features materialize" in reason
    result = fs.materialize(settings, end=LOAD_END, store=store)
    assert result["mode"] == "full" and "marker is missing" in result["load"]["why"]
    assert result["load"]["written"] == 2_000
    assert tagger.check_store() is None


# ---- serving does not notice ---------------------------------------------------------------------------------


def _add_tenure(home: Path, days: float) -> None:
    def change(frame: pd.DataFrame) -> None:
        frame["tenure_days"] += days

    rewrite(home, "customer_profile", change)


def test_a_load_under_concurrent_reads_gives_no_errors(loaded):
    settings, store = loaded
    ids = customers(settings.home)[::10]
    tagger = serving_reader(settings)
    before = tuple(read_tenure(tagger, ids))
    _add_tenure(settings.home, 1000.0)  # every customer changes: the tables are rebuilt and swapped in
    with Readers(tagger, ids) as readers:
        while len(readers.seen) < 5:
            time.sleep(0.01)
        result = fs.materialize(settings, end=LOAD_END, store=store)
        time.sleep(0.3)
    after = tuple(read_tenure(tagger, ids))
    assert result["load"]["switch"].startswith("tables rebuilt")
    assert readers.errors == []
    assert after == tuple(t + 1000.0 for t in before)
    full_reads = [seen for seen in readers.seen if seen]
    assert len(full_reads) > 10
    assert {seen for seen in full_reads} <= {before, after}  # every request saw one load, never a mix


@pytest.mark.parametrize("changed", ["everyone", "a few"])
def test_a_load_killed_midway_leaves_the_previous_values_served(loaded, tmp_path: Path, changed: str):
    settings, store = loaded
    ids = customers(settings.home)
    sample = ids[::7]
    tagger = serving_reader(settings)
    before, marker = read_tenure(tagger, sample), fs.load_marker(store)
    if changed == "everyone":
        _add_tenure(settings.home, 500.0)  # rebuilt beside the live tables
    else:
        few = set(ids[:40])  # updated in place, in one transaction (two batches of 500 customers written...)

        def change(frame: pd.DataFrame) -> None:
            frame.loc[frame.customer_id.isin(few), "tenure_days"] += 500.0

        rewrite(settings.home, "customer_profile", change)
        settings = settings.model_copy(update={"online_load_batch": 10})  # ...so small batches here
    kill_midway(settings, tmp_path)

    reader = serving_reader(settings)
    assert read_tenure(reader, sample) == before
    assert fs.load_marker(store) == marker and reader.check_store() is None
    with sqlite3.connect(fi.sqlite_path(store)) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    result = fs.materialize(settings, end=LOAD_END, store=store)
    assert result["load"]["generation"] == marker["generation"] + 1
    moved = set(ids) if changed == "everyone" else set(ids[:40])
    expected = [t + 500.0 if cid in moved else t for cid, t in zip(sample, before, strict=True)]
    assert read_tenure(serving_reader(settings), sample) == expected
    with sqlite3.connect(fi.sqlite_path(store)) as con:
        names = [n for (n,) in con.execute("SELECT name FROM sqlite_master")]
    assert not [n for n in names if n.endswith((bl.STAGE_SUFFIX, bl.OLD_SUFFIX))]

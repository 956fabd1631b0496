"""The Feast feature store, configured from settings.

* local profile (default): file registry and SQLite online store under ``<home>/data/feast``,
  DuckDB over the Parquet feature tables as the offline store -- no server needed;
* production profile: SQL registry on PostgreSQL (the database is created if missing) and the Redis
  online store, both keyed by the Feast project (``settings.feast_project_name``) so deployments can
  share the servers. Redis calls are bounded by ``settings.redis_timeout_s``, with one quick retry on a
  broken connection (none on a timeout), so a dead or frozen Redis fails fast and a restarted one is
  picked up again without restarting the process.

The configuration is a real Feast repository in the workspace: :func:`feature_store` and :func:`apply`
write ``<feast_dir>/feature_store.yaml`` (from the settings, atomically, when it changed) and a repo file
(``portrait_repo.py``) exposing Portrait's entity, feature views and services, and the store is opened
from that same yaml. So Feast's CLI works on a workspace: ``feast -c <home>/data/feast plan`` (or
``apply``, ``ui``, ``serve``), run with the project's Python environment. Secrets are not written: on
the production profile the yaml refers to them as ``${VAR}``, which Feast fills in from the environment,
so the CLI needs

* ``PORTRAIT_FEAST_POSTGRES_PASSWORD``: the PostgreSQL password as written in ``PORTRAIT_POSTGRES_URL``
  (percent-encoded where the URL needs it), when that URL has one;
* ``PORTRAIT_FEAST_REDIS_PASSWORD``: the Redis password (decoded), when ``PORTRAIT_REDIS_URL`` has one.

Portrait itself fills them in from its settings. Feast substitutes them into the yaml text, inside single
quotes: a password with a ``'`` or a line break cannot go through the CLI.

Training reads point-in-time frames with :func:`historical_features` and serving reads with
:func:`online_features`; both take a model's FeatureService, so their feature lists cannot drift.
:func:`materialize` loads the online store with :mod:`features.bulk_load` (Feast's own layout, written
column-wise, switched in without serving noticing, with a marker that readiness checks:
:func:`load_marker`). Everything that relies on Feast internals goes through :mod:`features.feast_internals`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
import sqlite3
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import yaml
from feast import FeatureService, FeatureStore, FeatureView, RepoConfig
from feast.protos.feast.core.PrecomputedFeatureVector_pb2 import (
    FeatureViewTimestamp,
    PrecomputedFeatureVector,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from features import feast_internals as fi
from features.feast_repo.feature_services import MODEL_SERVICES, SERVING_SERVICE
from portrait.backends import ensure_postgres_database, redis_connection_string
from portrait.files import temp_beside, write_text_atomic
from portrait.quiet import quiet_third_party
from portrait.settings import Settings

logger = logging.getLogger(__name__)

# ---- the Feast repository in the workspace ---------------------------------------------------------------

FEAST_YAML = "feature_store.yaml"
REPO_FILE = "portrait_repo.py"
"""The repo file Feast's CLI imports (a unique module name: Feast imports it by its file name)."""
POSTGRES_PASSWORD_VAR = "PORTRAIT_FEAST_POSTGRES_PASSWORD"
REDIS_PASSWORD_VAR = "PORTRAIT_FEAST_REDIS_PASSWORD"
_SECRET_HELP = {
    POSTGRES_PASSWORD_VAR: "the PostgreSQL password, as written in PORTRAIT_POSTGRES_URL",
    REDIS_PASSWORD_VAR: "the Redis password (decoded)",
}
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class FeastYaml:
    """``feature_store.yaml`` for a profile: its text (secrets as ``${VAR}``) and the variables' values."""

    text: str
    secrets: dict[str, str]

    def expanded(self) -> dict[str, Any]:
        """The yaml's content with the variables filled in (after parsing, so any password is safe)."""
        return _fill(yaml.safe_load(self.text), self.secrets)


class _Quoted(str):
    """A yaml string written in single quotes (it holds a ``${VAR}`` that Feast replaces in the text)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Quoted, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="'")
)


def _fill(node: Any, secrets: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _fill(value, secrets) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(value, secrets) for value in node]
    if isinstance(node, str):
        return _PLACEHOLDER.sub(lambda m: secrets.get(m[1], m[0]), node)
    return node


def _hide(text: str, patterns: Sequence[str], var: str, secrets: dict[str, str]) -> str:
    """``text`` with the secret matched by ``patterns`` (group 2) replaced by ``${var}``; records its value."""
    for pattern in patterns:
        match = re.search(pattern, text)
        if match is None:
            continue
        value = match[2]
        if secrets.setdefault(var, value) != value:
            raise ValueError(f"two different passwords in one URL; {var} can only hold one")
        text = text[: match.start(2)] + "${" + var + "}" + text[match.end(2) :]
    return text


SPARK_STORE_TYPE = "features.spark.PortraitSparkOfflineStore"
"""The cluster profile's offline store: Feast's Spark offline store over the feature tables
(:mod:`features.spark`, which Feast imports by this name when it opens the store)."""
SPARK_DEFAULTS: dict[str, str] = {
    # Feature times are UTC instants; the pipeline's literals and Feast's timestamp filters assume UTC.
    "spark.sql.session.timeZone": "UTC",
    # Parquet timestamps as DuckDB and pyarrow write them (INT96 is Spark's legacy default).
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}
"""Portrait's Spark configuration, before ``settings.spark_conf``."""


def spark_conf(settings: Settings) -> dict[str, str]:
    """The cluster profile's Spark configuration: :data:`SPARK_DEFAULTS`, the application name and the
    master (unless Spark Connect is used), then ``settings.spark_conf``."""
    conf = {**SPARK_DEFAULTS, "spark.app.name": settings.spark_app_name}
    if not settings.spark_connect_url and settings.spark_master:
        conf["spark.master"] = settings.spark_master
    return conf | dict(settings.spark_conf)


def offline_store_config(settings: Settings) -> dict[str, Any]:
    """The ``offline_store`` section: DuckDB over the Parquet feature tables, or on the cluster profile
    Feast's Spark offline store over the same tables (with the session's configuration)."""
    if settings.profile != "cluster":
        return {"type": "duckdb"}
    config: dict[str, Any] = {"type": SPARK_STORE_TYPE, "spark_conf": spark_conf(settings)}
    if settings.spark_connect_url:
        config["spark_connect_url"] = settings.spark_connect_url
    return config


def feast_yaml(settings: Settings) -> FeastYaml:
    """Feast's configuration for the settings' profile, as ``feature_store.yaml``.

    Local: file registry and SQLite online store in the yaml's folder (paths relative to it), DuckDB
    offline store. Production: SQL registry on PostgreSQL and the Redis online store, passwords as
    ``${VAR}`` (see the module docstring). Cluster: as production, with Feast's Spark offline store
    (:func:`offline_store_config`).
    """
    secrets: dict[str, str] = {}
    registry: dict[str, Any]
    online: dict[str, Any]
    if settings.servers:
        # registry_type "sql" makes Feast build the SqlRegistryConfig SqlRegistry insists on.
        registry = {
            "registry_type": "sql",
            "path": _Quoted(
                _hide(
                    settings.postgres_url,
                    (r"^([^:/]+://[^:@/]*:)([^@/]*)@", r"([?&]password=)([^&]*)"),
                    POSTGRES_PASSWORD_VAR,
                    secrets,
                )
            ),
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {
                "echo": False,
                "pool_pre_ping": True,
                "connect_args": {"connect_timeout": settings.postgres_connect_timeout_s},
            },
            # Materializing flips views to MATERIALIZING in the shared registry; without this, every
            # server reading that registry would refuse online reads until the load finishes.
            "serve_features_while_materializing": True,
        }
        connection = redis_connection_string(settings.redis_url, timeout_s=settings.redis_timeout_s)
        online = {
            "type": "redis",
            "connection_string": _Quoted(
                _hide(connection, (r"(^|,)password=([^,]*)",), REDIS_PASSWORD_VAR, secrets)
            ),
        }
    else:
        registry = {"registry_type": "file", "path": "registry.db", "cache_ttl_seconds": 60}
        online = {"type": "sqlite", "path": "online_store.db"}
    content = {
        "project": settings.feast_project_name,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": offline_store_config(settings),
        # By default Feast converts and writes a whole view in one batch, so memory grows with customers.
        "materialization": {"online_write_batch_size": settings.materialize_batch_rows},
        "entity_key_serialization_version": 3,
    }
    header = [
        f"# Feast configuration of a Portrait workspace (profile: {settings.profile}), written by",
        "# features/store.py from Portrait's settings whenever it opens the store: edits are overwritten.",
        "# Feast CLI: feast -c <this folder> plan | apply | ui | serve (objects: portrait_repo.py).",
    ]
    if secrets:
        header.append("# Set before running the feast CLI (Feast substitutes ${VAR} from the environment):")
        header += [f"#   {var}: {_SECRET_HELP[var]}" for var in secrets]
    body = yaml.dump(content, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return FeastYaml("\n".join(header) + "\n" + body, secrets)


def repo_config(settings: Settings) -> RepoConfig:
    """Feast's configuration for the settings' profile: the ``feature_store.yaml`` that
    :func:`write_repo` writes, parsed as Feast parses it, with the passwords from the settings."""
    config = RepoConfig(**feast_yaml(settings).expanded())
    config.repo_path = settings.feast_dir
    return config


def repo_file(settings: Settings) -> str:
    """The repo file Feast's CLI imports: Portrait's objects, as module attributes, for its workspace."""
    try:
        depth = len(settings.feast_dir.relative_to(settings.home).parts)
        home = f"Path(__file__).absolute().parents[{depth}]"
    except ValueError:  # a feast_dir outside the workspace: name the workspace
        home = f"Path({str(settings.home.absolute())!r})"
    return f'''"""Portrait's Feast objects for the feast CLI (``feast -c <this folder> plan | apply | ui | serve``).

Written by features/store.py beside feature_store.yaml whenever Portrait opens the store: edits are
overwritten. The entity, feature views and services are Portrait's own (``features.repo.definitions``),
built from the settings of the workspace that holds this folder.
"""

from pathlib import Path

from features.repo import definitions
from portrait.settings import Settings

WORKSPACE = {home}

for _obj in definitions(Settings(home=WORKSPACE)):
    globals()[_obj.name] = _obj
del _obj
'''


def _write_if_changed(target: Path, text: str) -> bool:
    """Write ``text`` to ``target`` atomically unless it already holds it."""
    with contextlib.suppress(OSError):
        if target.read_text() == text:
            return False
    write_text_atomic(target, text)
    return True


def write_repo(settings: Settings) -> Path:
    """Write the workspace's Feast repository (``feature_store.yaml`` and the repo file); returns its folder."""
    folder = settings.feast_dir
    folder.mkdir(parents=True, exist_ok=True)
    _write_if_changed(folder / REPO_FILE, repo_file(settings))
    if _write_if_changed(folder / FEAST_YAML, feast_yaml(settings).text):
        logger.info("wrote %s", folder / FEAST_YAML)
    return folder


def write_repo_or_warn(settings: Settings) -> None:
    """:func:`write_repo`, logging instead of failing when the workspace is read-only."""
    try:
        write_repo(settings)
    except OSError as exc:  # a read-only workspace: the store still opens, the feast CLI cannot
        logger.warning("could not write the Feast repository in %s: %s", settings.feast_dir, exc)


def feature_store(settings: Settings) -> FeatureStore:
    """The Feast store for the settings' profile, opened from the workspace's ``feature_store.yaml``.

    Writes the yaml and the repo file first (:func:`write_repo`), then opens the store from that yaml's
    content (:func:`repo_config`; not by reading the file back, which another process with other
    settings may have just rewritten).
    Production: creates the registry database if it is missing and raises
    :class:`~portrait.backends.BackendUnavailable` (URL redacted) when PostgreSQL cannot be reached.
    Redis is not contacted here; its client is only configured (see :func:`bound_redis_client`). A file
    registry is written atomically (:func:`features.feast_internals.atomic_registry_writes`).
    """
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    write_repo_or_warn(settings)
    if settings.servers:
        ensure_postgres_database(settings.postgres_url, timeout_s=settings.postgres_connect_timeout_s)
    quiet_third_party()  # again: importing Feast put its own DeprecationWarning filter first
    store = FeatureStore(repo_path=str(settings.feast_dir), config=repo_config(settings))
    fi.atomic_registry_writes(store)  # a reader never sees a half-written registry file
    if settings.servers:
        bound_redis_client(store)
    return store


def bound_redis_client(store: FeatureStore) -> None:
    """Replace redis-py's default retry policy on the store's Redis client with one quick retry, on
    connection errors only.

    redis-py (>= 6) retries a failed command 3 times with exponential backoff of up to 10 s, so a
    request against a stopped Redis takes 7-9 s to fail. One retry without backoff still replaces a
    pooled connection that a Redis restart has broken (a ``ConnectionError``), so reads recover as soon as
    Redis is back. A *timeout* is not retried: a Redis that accepts connections but does not answer (frozen,
    overloaded) would otherwise cost every command twice ``redis_timeout_s``; so a command waits at most
    ``redis_timeout_s`` (the socket timeout of :func:`portrait.backends.redis_connection_string`).
    Feast creates the client lazily and keeps it; it is created here (no connection is opened).
    """
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry

    client = fi.redis_client(store)
    if client is None:  # a Feast version with other internals: keep its defaults
        logger.warning("could not configure the Redis client's retries; a dead Redis may fail slowly")
        return
    client.set_retry(Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError, ConnectionResetError)))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _feast_prints() -> Any:
    """Feast's ``materialize`` prints its progress ("Materializing 1 feature views from ... into the sqlite online
    store.", with terminal colour codes) to stdout, where a command's own output goes: log it instead (debug;
    Feast's ``[WARNING]`` lines as warnings)."""
    import io

    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        for line in _ANSI.sub("", captured.getvalue()).splitlines():
            if line.strip():
                (logger.warning if "[WARNING]" in line else logger.debug)("feast: %s", line.strip())


def materialize(
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    incremental: bool = True,
    store: FeatureStore | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Load the newest feature rows into the online store, with the serving vectors.

    Incremental (default): each view continues from where its last materialization ended; a view never
    materialized starts at ``start`` or, by default, at the earliest snapshot on disk. ``incremental=False``
    reloads ``[start, end)`` in full.

    Portrait's batch views go through :func:`features.bulk_load.load`, which writes Feast's own online layout
    column-wise, builds the serving vectors in the same pass, writes only the customers that changed since the
    load the store holds, switches the load in without serving noticing, and records the intervals in the
    registry as Feast's materialize does. Other views (a push source's, or all of them when the store's options
    change Feast's layout) go through Feast's own materialize; the vectors are then rebuilt from the store
    (:func:`precompute_vectors`, ``progress(done, total)`` after each batch).
    """
    from features import bulk_load

    store = store or feature_store(settings)
    end = end or datetime.now(UTC)
    views = store.list_feature_views()
    if not views:
        raise RuntimeError("no feature views are registered: run `portrait features apply` first")
    first = start or earliest_snapshot(settings) or (end - timedelta(days=1))
    full = not incremental or any(not v.materialization_intervals for v in views)
    unsupported = fi.bulk_unsupported(store)
    if unsupported:
        logger.warning(
            "the online store's options change Feast's layout (%s): using Feast's materialize", unsupported
        )
    bulk = [v for v in views if unsupported is None and bulk_load.bulk_loadable(v)]
    rest = [v.name for v in views if v not in bulk]
    started = time.perf_counter()
    loaded = None
    if bulk:
        window = first - timedelta(seconds=1)
        if not full:
            window = min(interval[0] for v in bulk for interval in v.materialization_intervals)
        intervals = {
            v.name: first - timedelta(seconds=1) if full else (v.most_recent_end_time or window) for v in bulk
        }
        loaded = bulk_load.load(
            settings, store, bulk, start=window, end=end, intervals=intervals, full=full, progress=progress
        )
    if rest:
        with _feast_prints():
            if full:
                store.materialize(start_date=first - timedelta(seconds=1), end_date=end, feature_views=rest)
            else:
                store.materialize_incremental(end_date=end, feature_views=rest)
    vectors, vectors_started = (loaded.vectors if loaded else 0), time.perf_counter()
    built_in_load = loaded is not None and loaded.vector_service is not None
    if not built_in_load and SERVING_SERVICE in _service_names(store):
        vectors = precompute_vectors(settings, store, progress=progress)
    return {
        "mode": loaded.mode if loaded else ("full" if full else "incremental"),
        "views": [v.name for v in views],
        "start": first,
        "end": end,
        "vectors": vectors,
        "vectors_seconds": (loaded.seconds.get("vectors", 0.0) if built_in_load and loaded else 0.0)
        + (0.0 if built_in_load else time.perf_counter() - vectors_started),
        "seconds": time.perf_counter() - started,
        "load": dataclasses.asdict(loaded) if loaded else None,
    }


# ---- pre-computed serving vectors ------------------------------------------------------------------------
#
# Feast (>= 0.62) can keep one serialized ``PrecomputedFeatureVector`` per entity and FeatureService, stored
# as the single Bytes feature ``vector`` of a synthetic view ``__precomputed__<service>`` (see
# ``OnlineStore.write_precomputed_vector`` / ``read_precomputed_vectors``). Reading 1,000 customers' vectors
# costs one value per customer instead of one per feature (that many times fewer rows, timestamps and
# protobuf parses).
# Feast's own ``FeatureStore.precompute_feature_service`` only scans Redis and writes one entity per call,
# so the vectors are written by Portrait, through the same view and message: by the bulk loader in the same
# pass as the feature rows (:mod:`features.bulk_load`), or by :func:`precompute_vectors` from the store after
# writes the loader did not make. Their values are packed (:class:`VectorLayout`): every numeric feature in
# one float64 block, the rest as one Feast ``Value`` each, and the feature names once, in a sentinel entity
# that also records which materialization the vectors were built from. A reader that finds another
# materialization (a ``feast materialize`` run outside Portrait, an interrupted precompute) or another layout
# does not trust them. On Redis the vectors live in one of two slots (:data:`VECTOR_SLOTS`), so that a load
# switches serving from one complete set to the next in one step; :func:`read_vectors` follows the switch.

VECTOR_FEATURE = fi.VECTOR_FEATURE
VECTOR_BATCH = 2_000
SIGNATURE_ID = "__portrait_vectors__"
"""The entity whose vector holds the layout and the materialization signature (no customer id can be empty or
start so)."""
VECTOR_FORMAT = "portrait-packed-f64/1"
"""Bumped whenever the packing changes: vectors written in another format are not trusted."""
_NUMERIC_TYPES = frozenset({"Int32", "Int64", "Float32", "Float64"})


@dataclass(frozen=True)
class VectorLayout:
    """How a service's pre-computed vectors hold its features.

    A customer's ``PrecomputedFeatureVector`` has ``values[0].bytes_val`` = the numeric features, in
    :attr:`numeric` order, as little-endian float64 (NaN where the online store has no value; integers as
    floats, as a DataFrame of the per-view read holds them), then one Feast ``Value`` per :attr:`other`
    feature, and its views' ``fv_timestamps``; no feature names (they are in the sentinel). Decoding 1,000
    customers is then one ``numpy.frombuffer`` instead of ~47,000 protobuf value reads.
    """

    numeric: tuple[str, ...]  # Feast's ``<view>__<feature>`` names
    other: tuple[str, ...]

    @classmethod
    def of(cls, service: FeatureService) -> VectorLayout:
        numeric: list[str] = []
        other: list[str] = []
        for projection in service.feature_view_projections:
            for feature in projection.features:
                name = f"{projection.name_to_use()}__{feature.name}"
                (numeric if str(feature.dtype) in _NUMERIC_TYPES else other).append(name)
        return cls(tuple(numeric), tuple(other))

    @property
    def names(self) -> list[str]:
        """Every feature, in vector order (numeric first)."""
        return [*self.numeric, *self.other]

    def marker(self, signature: str) -> PrecomputedFeatureVector:
        """The sentinel's vector: the format, the layout and the materialization signature."""
        return PrecomputedFeatureVector(
            feature_names=self.names,
            values=[
                ValueProto(string_val=VECTOR_FORMAT),
                ValueProto(string_val=signature),
                ValueProto(int64_val=len(self.numeric)),
            ],
        )

    def signature_of(self, marker: PrecomputedFeatureVector) -> str | None:
        """The signature a sentinel records, or None when it describes another format or layout."""
        values = marker.values
        if (
            len(values) != 3
            or values[0].string_val != VECTOR_FORMAT
            or values[2].int64_val != len(self.numeric)
            or list(marker.feature_names) != self.names
        ):
            return None
        return values[1].string_val

    def pack(self, numbers: Sequence[ValueProto], others: list[ValueProto]) -> list[ValueProto]:
        """A customer's ``values``: its numeric Feast values packed, then the others as they are."""
        floats = [math.nan if (k := v.WhichOneof("val")) is None else getattr(v, k) for v in numbers]
        return [ValueProto(bytes_val=np.asarray(floats, dtype="<f8").tobytes()), *others]


def _service_names(store: FeatureStore) -> set[str]:
    return {s.name for s in store.list_feature_services()}


def vector_view(service: str = SERVING_SERVICE) -> FeatureView:
    """Feast's synthetic view holding a service's pre-computed vectors (the same one Feast reads): slot "a"."""
    return fi.precomputed_view(service)


VECTOR_SLOTS = ("a", "b")
"""The two places a service's vectors can live. A load writes the slot not in use and switches serving to it
in one step (see :mod:`features.bulk_load`); SQLite loads switch tables instead and always use slot "a"."""
_SLOT_VIEWS: dict[tuple[str, str], FeatureView] = {}
_LIVE_SLOTS: weakref.WeakKeyDictionary[FeatureStore, dict[str, str]] = weakref.WeakKeyDictionary()


def vector_slot_view(service: str = SERVING_SERVICE, slot: str = "a") -> FeatureView:
    """The synthetic view of one vector slot: ``__precomputed__<service>`` (slot "a", Feast's own) or
    ``__precomputed__<service>__b``."""
    if slot not in VECTOR_SLOTS:
        raise ValueError(f"no vector slot {slot!r}")
    if (service, slot) not in _SLOT_VIEWS:
        name = f"{fi.PRECOMPUTED_VIEW_PREFIX}{service}" + ("" if slot == "a" else f"__{slot}")
        _SLOT_VIEWS[service, slot] = fi.synthetic_view(name, VECTOR_FEATURE)
    return _SLOT_VIEWS[service, slot]


def _slot_service(view: FeatureView) -> str | None:
    """The service whose vector slot ``view`` is (None for any other view)."""
    if not view.name.startswith(fi.PRECOMPUTED_VIEW_PREFIX):
        return None
    service = view.name.removeprefix(fi.PRECOMPUTED_VIEW_PREFIX)
    return service.removesuffix("__b") if service.endswith("__b") else service


def live_slot(store: FeatureStore, service: str = SERVING_SERVICE) -> str:
    """The vector slot serving reads, as the store's load marker records it ("a" without a marker)."""
    marker = load_marker(store)
    slot = str((marker or {}).get("slot", "a"))
    return slot if slot in VECTOR_SLOTS else "a"


def _retired_for(blob: bytes | None) -> str | None:
    """The slot a retired sentinel points to (None when ``blob`` is not a retired sentinel)."""
    if blob is None:
        return None
    with contextlib.suppress(Exception):
        values = PrecomputedFeatureVector.FromString(blob).values
        if len(values) == 2 and values[0].string_val == "retired":
            return values[1].string_val
    return None


def read_vectors(
    store: FeatureStore, keys: Sequence[EntityKeyProto], view: FeatureView | None = None
) -> list[bytes | None]:
    """The serialized vectors of ``keys`` (None where there is none), from the slot serving reads.

    Reads with ``OnlineStore.online_read`` on a view built once (Feast's own helper builds a FeatureView per
    call, ~0.1 ms, and turns a store error into "no vectors"; here the store's error is raised). ``view`` names
    the service (any of its slots). The sentinel entity is read in the same call (callers usually put it
    first): when a load has switched to the other slot since the last read, its old sentinel says so, and the
    keys are read again from the new slot; so one call never mixes two loads' vectors.
    """
    view = view or vector_view()
    service = _slot_service(view)
    if service is None:
        return _vector_blobs(store, view, keys)
    sentinel = entity_key(SIGNATURE_ID)
    with_sentinel = bool(keys) and keys[0] == sentinel
    asked = list(keys) if with_sentinel else [sentinel, *keys]
    slots = _LIVE_SLOTS.setdefault(store, {})
    slot = slots.get(service, "a")
    blobs = _vector_blobs(store, vector_slot_view(service, slot), asked)
    moved = _retired_for(blobs[0])
    if moved is None and blobs[0] is None:
        moved = live_slot(store, service)  # no sentinel here: the marker says where the vectors are
    if moved in VECTOR_SLOTS and moved != slot:
        slots[service] = moved
        blobs = _vector_blobs(store, vector_slot_view(service, moved), asked)
    return blobs if with_sentinel else blobs[1:]


def _vector_blobs(
    store: FeatureStore, view: FeatureView, keys: Sequence[EntityKeyProto]
) -> list[bytes | None]:
    rows = fi.online_read(store, view, keys, [VECTOR_FEATURE])
    return [
        values[VECTOR_FEATURE].bytes_val if values and values[VECTOR_FEATURE].HasField("bytes_val") else None
        for _, values in rows
    ]


# ---- the load marker -------------------------------------------------------------------------------------

LOAD_VIEW = "__portrait_load__"
LOAD_FEATURE = "marker"


def load_view() -> FeatureView:
    """The synthetic view of the load marker (one row, for the sentinel entity; see :mod:`features.bulk_load`)."""
    if ("", LOAD_VIEW) not in _SLOT_VIEWS:
        _SLOT_VIEWS["", LOAD_VIEW] = fi.synthetic_view(LOAD_VIEW, LOAD_FEATURE)
    return _SLOT_VIEWS["", LOAD_VIEW]


def load_marker(store: FeatureStore) -> dict[str, Any] | None:
    """The marker of the load the online store holds, or None when it holds none (never loaded by Portrait's
    loader, or it lost its data, such as a Redis that restarted empty). The store's own errors are raised."""
    try:
        ((_, values),) = fi.online_read(store, load_view(), [entity_key(SIGNATURE_ID)], [LOAD_FEATURE])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    value = values.get(LOAD_FEATURE) if values else None
    if value is None or not value.HasField("bytes_val"):
        return None
    try:
        marker = json.loads(value.bytes_val)
    except ValueError:
        return None
    return marker if isinstance(marker, dict) else None


def _vector_row(
    key: EntityKeyProto, vector: PrecomputedFeatureVector, written: datetime
) -> tuple[EntityKeyProto, dict[str, ValueProto], datetime, None]:
    """One row of the vector view for :func:`features.feast_internals.online_write`."""
    return key, {VECTOR_FEATURE: ValueProto(bytes_val=vector.SerializeToString())}, written, None


def entity_key(customer_id: str) -> EntityKeyProto:
    return EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(string_val=customer_id)])


def materialization_signature(
    store: FeatureStore, service: FeatureService, *, allow_cache: bool = True
) -> str:
    """What the online store holds for the service's views: each view's materialized intervals (count, end)."""
    parts = []
    for projection in service.feature_view_projections:
        view = store.registry.get_feature_view(projection.name, store.project, allow_cache=allow_cache)
        intervals = view.materialization_intervals
        end = intervals[-1][1].isoformat() if intervals else "-"
        parts.append(f"{projection.name}:{len(intervals)}:{end}")
    return ";".join(parts)


def feature_table_ids(settings: Settings) -> list[str]:
    """Every customer id in the feature tables on disk (the entities a materialization can have loaded)."""
    files = sorted((settings.features_dir / "customer_profile").glob("snapshot=*.parquet"))
    if not files:
        return []
    ids = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["customer_id"]).column(0)
    return pc.unique(ids).to_pylist()


def precompute_vectors(
    settings: Settings,
    store: FeatureStore | None = None,
    *,
    service_name: str = SERVING_SERVICE,
    customer_ids: Sequence[str] | None = None,
    batch_size: int = VECTOR_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write the service's pre-computed vector of every customer from the online store; returns how many.

    Reads each view of the service with ``OnlineStore.online_read`` (what ``get_online_features`` reads) and
    writes one ``PrecomputedFeatureVector`` per customer in the service's :class:`VectorLayout`, into the vector
    slot serving reads. :func:`materialize` builds the vectors in its load instead; this rebuilds them after
    writes it did not make (Feast's own materialize, a push). The sentinel
    is first overwritten with a marker no reader trusts and written last with the layout and the signature of
    the materialization the vectors reflect, so a partial run is never trusted. Customers without any online
    row get no vector (they are unknown to serving either way).
    """
    store = store or feature_store(settings)
    service = store.get_feature_service(service_name)
    target = vector_slot_view(service_name, live_slot(store, service_name))
    fi.create_online_table(store, target)
    sentinel = entity_key(SIGNATURE_ID)
    pending = PrecomputedFeatureVector(values=[ValueProto(string_val="writing")])
    fi.online_write(store, target, [_vector_row(sentinel, pending, datetime.now(UTC))])
    signature = materialization_signature(store, service, allow_cache=False)
    layout = VectorLayout.of(service)
    views = [
        (store.get_feature_view(p.name), p.name_to_use(), [f.name for f in p.features])
        for p in service.feature_view_projections
    ]
    # Where each feature of the views' concatenation goes: the numeric block or the other values.
    numeric = set(layout.numeric)
    order = [f"{view_name}__{feature}" in numeric for _, view_name, features in views for feature in features]
    ids = list(customer_ids) if customer_ids is not None else feature_table_ids(settings)
    written = 0
    for lo in range(0, len(ids), batch_size):
        keys = [entity_key(cid) for cid in ids[lo : lo + batch_size]]
        # A copy of the feature list each time: Redis' online_read appends its timestamp field to it.
        rows = [fi.online_read(store, view, keys, list(features)) for view, _, features in views]
        now = Timestamp()
        now.GetCurrentTime()
        written_at = now.ToDatetime(UTC)
        batch = []
        for i, key in enumerate(keys):
            values: list[ValueProto] = []
            stamps: list[FeatureViewTimestamp] = []
            for (_, view_name, features), view_rows in zip(views, rows, strict=True):
                ts, found = view_rows[i]
                if ts is not None:
                    stamp = Timestamp()
                    stamp.FromDatetime(ts)
                    stamps.append(FeatureViewTimestamp(feature_view_name=view_name, event_timestamp=stamp))
                values += [found[f] if found and f in found else ValueProto() for f in features]
            if not stamps:
                continue
            numbers = [v for v, is_number in zip(values, order, strict=True) if is_number]
            others = [v for v, is_number in zip(values, order, strict=True) if not is_number]
            vector = PrecomputedFeatureVector(
                values=layout.pack(numbers, others), fv_timestamps=stamps, precomputed_at=now
            )
            batch.append(_vector_row(key, vector, written_at))
        fi.online_write(store, target, batch)
        written += len(batch)
        if progress is not None:
            progress(min(lo + batch_size, len(ids)), len(ids))
    fi.online_write(store, target, [_vector_row(sentinel, layout.marker(signature), datetime.now(UTC))])
    logger.info("pre-computed %d vectors of %s (%s)", written, service_name, signature)
    return written


def earliest_snapshot(settings: Settings) -> datetime | None:
    files = sorted((settings.features_dir / "customer_profile").glob("snapshot=*.parquet"))
    if not files:
        return None
    label = files[0].stem.split("=", 1)[1]
    return datetime.strptime(label, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def snapshots_on_disk(settings: Settings) -> list[datetime]:
    files = sorted((settings.features_dir / "customer_profile").glob("snapshot=*.parquet"))
    return [datetime.strptime(f.stem.split("=", 1)[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC) for f in files]


def service_for(store: FeatureStore, model: str) -> FeatureService:
    return store.get_feature_service(MODEL_SERVICES[model])


def feature_names(store: FeatureStore, model: str) -> list[str]:
    """The model's feature columns, in FeatureService order (as they come back from Feast)."""
    service = service_for(store, model)
    return [f.name for projection in service.feature_view_projections for f in projection.features]


def historical_features(
    settings: Settings, model: str, entity_df: pd.DataFrame, store: FeatureStore | None = None
) -> pd.DataFrame:
    """Point-in-time training frame: ``entity_df`` has ``customer_id`` and ``event_timestamp``."""
    store = store or feature_store(settings)
    job = store.get_historical_features(entity_df=entity_df, features=service_for(store, model))
    if hasattr(job, "to_spark_df"):  # Feast's Spark offline store (the cluster profile)
        import shutil

        folder = _write_job(job, settings)
        try:
            return ds.dataset(folder, format="parquet").to_table().to_pandas().reset_index(drop=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return job.to_df()


def historical_features_on_disk(
    settings: Settings, model: str, entity_df: Any, store: FeatureStore | None = None
) -> Path:
    """:func:`historical_features` of a Spark DataFrame of entities (the cluster profile), left on disk: the
    folder of Parquet files the executors wrote (see :func:`_write_job`); the caller removes it."""
    store = store or feature_store(settings)
    job = store.get_historical_features(entity_df=entity_df, features=service_for(store, model))
    if not hasattr(job, "to_spark_df"):
        raise ValueError("a training frame on disk needs the cluster profile (Feast's Spark offline store)")
    return _write_job(job, settings)


def _write_job(job: Any, settings: Settings) -> Path:
    """A Spark retrieval job's frame, written as Parquet by the executors under ``<home>/data/feast/frames``
    (the cluster profile requires ``PORTRAIT_HOME`` to be one path shared by the driver and every executor).

    ``to_df()`` collects the frame through one Arrow stream into the driver: at 1,000,000 customers the JVM's
    ``serve-Arrow`` thread ran out of heap (4 GB driver) and died, and the Python side waited for its result
    for ever. Feast's own ``staging_location`` does the same write but never removes what it wrote. The
    folder is a :func:`portrait.files.temp_beside` one, so a killed process's is removed at the next start.
    """
    import shutil

    folder = temp_beside(settings.feast_dir / "frames" / "frame", directory=True)
    try:
        job.to_spark_df().write.mode("overwrite").parquet(str(folder))  # into the new, empty folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def online_features(
    store: FeatureStore, model: str, customer_ids: Sequence[str], service: FeatureService | None = None
) -> dict[str, list[Any]]:
    """Online feature vectors for ``customer_ids`` (columns as lists, in request order)."""
    service = service or service_for(store, model)
    response = store.get_online_features(
        features=service, entity_rows=[{"customer_id": cid} for cid in customer_ids]
    )
    return response.to_dict()

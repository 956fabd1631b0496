"""What the service does, without HTTP: load the champions, read online features, build tags.

Kept free of BentoML so it can be called directly (batch export, tests). The service in
``serving/service.py`` wraps one :class:`Tagger` per worker.
"""

from __future__ import annotations

import atexit
import gc
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.online_response import OnlineResponse
from feast.protos.feast.core.PrecomputedFeatureVector_pb2 import PrecomputedFeatureVector
from feast.type_map import feast_value_type_to_python_type
from mlflow.exceptions import MlflowException
from pydantic import TypeAdapter

from features import realtime
from features import store as fs
from portrait import audit, catalogue
from portrait import tags as flat_tags
from portrait.backends import BackendUnavailable
from portrait.lifecycle import lifecycle_stage, rfm_segment
from portrait.lookalike import ExpansionRequest, ExpansionResult, LookalikeModel
from portrait.model import CORES, PARALLEL_ROWS, TagModel
from portrait.registry import CHAMPION, TrackingUnavailable, connect
from portrait.settings import Settings
from serving.schemas import CustomerTags, ModelInfo

logger = logging.getLogger(__name__)

_TAGS = TypeAdapter(list[CustomerTags])
SIGNATURE_TTL_S = 5.0
"""How long the registry's materialization signature is trusted before it is read again."""
STORE_ERROR_FRESH_S = 1.0
"""How long readiness reuses the online store's last failure instead of probing again: the 503 that
follows a failed read asks readiness for its reasons, and a second probe of a frozen Redis would double
the caller's wait (``redis_timeout_s`` each)."""
SIGNATURE_REFRESH_S = 1.0
"""How often, at most, a sentinel naming another materialization makes the registry be read past its cache."""
HEADLINE_METRICS = (
    "test_auc",
    "test_average_precision",
    "test_normalized_gini",
    "test_spearman",
    "test_mae",
    "recall_at_size",
    "lift_at_size",
)


class ServingError(Exception):
    """An error with an HTTP status and a message meant for the caller."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unavailable(ServingError):
    status = 503


class Tagger:
    """Champion models + the Feast online store.

    A store outage (Redis down, or the PostgreSQL registry unreachable at start-up) makes calls fail
    fast with :class:`Unavailable` and readiness report the reason; once the server is back, the next
    call succeeds without a new Tagger (the Redis client reconnects by itself, see
    :func:`features.store.bound_redis_client`; a registry that was unreachable is opened then).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, TagModel] = {}
        self.lookalike: LookalikeModel | None = None
        self.infos: dict[str, ModelInfo] = {}
        self.load_errors: dict[str, str] = {}
        self.unregistered: set[str] = set()  # catalogue models without a champion (not an error by default)
        self.store_error = None  # a property: the time of a failure is kept with it
        self.store: FeatureStore | None = None
        self._refs: list[str] = []
        self._realtime_view: Any = None  # the registered real-time view (features.realtime), if any
        self._names: list[str] = []  # the refs' feature names (unique across views)
        self._view_firsts: list[str] = []  # one feature per view: a view's features share its timestamp
        self._vector_index: list[int] | None = None  # each ref's position in the pre-computed vectors
        self._layout: fs.VectorLayout | None = None  # how the vectors hold them
        self._trusted_marker: bytes | None = None  # the sentinel last found current
        self._vector_view = fs.vector_view()
        self._signature: tuple[str, float] | None = None
        self._stale_warned = ""
        self._pool = ThreadPoolExecutor(max_workers=CORES, thread_name_prefix="portrait-leaves")
        self._load_models()
        self.identity = _load_identity(settings)
        try:
            self._open_store()
        except Unavailable:
            logger.warning("not ready: %s", self.store_error)

    def open_store(self) -> FeatureStore:
        """The Feast store (opened on first use); :class:`Unavailable` when its registry cannot be reached."""
        return self._open_store()

    def _open_store(self) -> FeatureStore:
        """The Feast store, opened on first use (and the models' feature references resolved)."""
        try:
            if self.store is None:
                self.store = fs.feature_store(self.settings)
            if self.models and not self._refs:
                self._resolve_features(self.store)
        except BackendUnavailable as exc:
            self.store_error = f"feature registry unavailable: {exc}"
            raise Unavailable(self.store_error) from exc
        return self.store

    # -- start-up ---------------------------------------------------------------------------------
    def _load_models(self) -> None:
        try:
            client = connect(self.settings)
        except TrackingUnavailable as exc:
            self.load_errors = {name: str(exc) for name in catalogue.names()}
            return
        for name in catalogue.names():
            try:
                mv = client.get_model_version_by_alias(name, CHAMPION)
            except MlflowException:
                self.load_errors[name] = (
                    f"no champion version of model '{name}' is registered (run `portrait data check {name}`, "
                    f"then `portrait train {name}`)"
                )
                self.unregistered.add(name)
                continue
            try:
                model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}").unwrap_python_model()
            except Exception as exc:  # noqa: BLE001 - report any load failure as "not ready"
                self.load_errors[name] = f"champion v{mv.version} of '{name}' failed to load: {exc}"
                continue
            metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            self.infos[name] = ModelInfo(
                name=name,
                version=str(mv.version),
                feature_service=getattr(model, "feature_service", None)
                or catalogue.get(name).feature_service,
                metrics={k: float(v) for k, v in metrics.items() if k in HEADLINE_METRICS},
                run_id=mv.run_id,
            )
            if catalogue.get(name).kind == "lookalike":
                self.lookalike = model
            else:
                model.paths.leaf_table(len(model.columns))  # build the explain tables now, not per request
                self.models[name] = model
            logger.info("loaded %s v%s", name, mv.version)

    def _resolve_features(self, store: FeatureStore) -> None:
        """The union of the tag models' FeatureServices (fetched in one online read) and, when the
        serving service covers them, where each sits in its pre-computed vectors."""
        refs: list[str] = []
        for model in self.models.values():
            service = store.get_feature_service(model.feature_service)
            for projection in service.feature_view_projections:
                for feature in projection.features:
                    ref = f"{projection.name_to_use()}:{feature.name}"
                    if ref not in refs:
                        refs.append(ref)
        self._names = [r.split(":", 1)[1] for r in refs]
        firsts: dict[str, str] = {}
        for ref in refs:
            view, name = ref.split(":", 1)
            firsts.setdefault(view, name)
        self._view_firsts = list(firsts.values())
        try:
            serving = store.get_feature_service(fs.SERVING_SERVICE)
        except Exception:  # noqa: BLE001 - a registry applied before the service existed
            logger.info("no %s service registered: reading the feature views", fs.SERVING_SERVICE)
        else:
            layout = fs.VectorLayout.of(serving)
            position = {name.replace("__", ":", 1): i for i, name in enumerate(layout.names)}
            if all(r in position for r in refs):
                self._vector_index = [position[r] for r in refs]
                self._layout = layout
        self._refs = refs
        try:
            self._realtime_view = (
                store.get_feature_view(realtime.VIEW) if self.settings.realtime_tags else None
            )
        except Exception:  # noqa: BLE001 - a registry applied before the real-time view existed
            self._realtime_view = None

    @property
    def store_error(self) -> str | None:
        """Why the online store failed last (None: it answered since)."""
        return self._store_error

    @store_error.setter
    def store_error(self, value: str | None) -> None:
        self._store_error = value
        self._store_failed_at = time.monotonic() if value else None

    @property
    def versions(self) -> dict[str, str]:
        return {name: info.version for name, info in self.infos.items()}

    # -- readiness ------------------------------------------------------------------------------------
    def check_store(self) -> str | None:
        """None when the online store answers and holds a load, else the reason.

        A store without the marker of a load (:func:`features.store.load_marker`) has lost its data (a Redis
        that restarted empty) or was never loaded: it answers, but every customer would be unknown.
        A failure recorded less than :data:`STORE_ERROR_FRESH_S` ago is returned without a new probe.
        """
        failed_at = self._store_failed_at
        if self._store_error and failed_at is not None and time.monotonic() - failed_at < STORE_ERROR_FRESH_S:
            return self._store_error
        try:
            store = self._open_store()
            if self._refs:
                store.get_online_features(features=self._refs[:1], entity_rows=[{"customer_id": "__probe__"}])
            else:
                fs.online_features(
                    store, "", ["__probe__"], store.get_feature_service(catalogue.SERVING_SERVICE)
                )
            self.store_error = None
            marker = fs.load_marker(store)
        except Unavailable:
            return self.store_error  # store_error says why
        except Exception as exc:  # noqa: BLE001 - any store failure means "not ready"
            self.store_error = f"online store unavailable: {type(exc).__name__}: {exc}"
            return self.store_error
        if marker is None:
            return (
                "online store holds no features: the marker of its last load is missing (the store lost its "
                "data, e.g. a Redis that restarted empty, or was never loaded); run `portrait features materialize`"
            )
        return None

    def required(self) -> list[str]:
        """The models that must be loaded for readiness: ``settings.required_models``, else every catalogue
        model with a champion (a model never trained is reported, not required)."""
        if self.settings.required_models is not None:
            return list(self.settings.required_models)
        return [n for n in catalogue.names() if n not in self.unregistered]

    def missing(self) -> dict[str, str]:
        """Catalogue models not being served, with the reason."""
        return {n: self.load_errors[n] for n in catalogue.names() if n in self.load_errors}

    def readiness(self) -> list[str]:
        """Reasons the service cannot answer (empty when ready): a required model is not loaded, no tag
        model is loaded at all, or the online store does not answer."""
        reasons = [
            self.load_errors.get(n, f"required model '{n}' is not in the catalogue")
            for n in self.required()
            if n in self.load_errors or n not in catalogue.names()
        ]
        if not self.models and not reasons:
            reasons.append(
                "no tag model has a champion: run `portrait data check`, then `portrait train all`"
            )
        store = self.check_store()
        if store:
            reasons.append(store)
        trail = audit.problem(self.settings.audit_log)  # privileged calls are refused while it fails
        if trail:
            reasons.append(trail)
        return reasons

    # -- tags ----------------------------------------------------------------------------------------
    def _online_read(self, customer_ids: Sequence[str]) -> OnlineResponse:
        """One Feast ``get_online_features`` call for the union of the models' FeatureServices."""
        store = self._ready_store()
        try:
            response = store.get_online_features(
                features=self._refs, entity_rows={"customer_id": list(customer_ids)}
            )
        except Exception as exc:  # noqa: BLE001 - the store's own errors vary by backend
            self.store_error = f"online store unavailable: {type(exc).__name__}: {exc}"
            raise Unavailable(self.store_error) from exc
        self.store_error = None
        return response

    def _ready_store(self) -> FeatureStore:
        if not self.models:
            raise Unavailable(
                "; ".join(self.load_errors.get(e.name, "") for e in catalogue.tag_models())
                or "no tag model loaded"
            )
        return self._open_store()

    def online_frame(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        """Feast's online response as a frame (``OnlineResponse.to_dict`` with event timestamps)."""
        return pd.DataFrame(self._online_read(customer_ids).to_dict(include_event_timestamps=True))

    def _score(
        self, customer_ids: Sequence[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, list[str], list[Any]]], np.ndarray]:
        """Online features of the known customers and each model's ``(scores, tiers, reasons)``.

        Unknown customers are dropped before any per-row work, and no DataFrame is built.
        """
        known, found = self.read_known(customer_ids)
        n_known = len(known["customer_id"])
        results = {}
        matrices: dict[Any, np.ndarray] = {}  # models with the same features and codes share one matrix
        for model in self.models.values() if n_known else ():
            key = model.matrix_key()
            if key not in matrices:
                matrices[key] = model.matrix(known)
        # Many rows: every model's numeric part (LightGBM's leaf look-up and the contribution product, both
        # releasing the GIL) is cut into one slice of rows per core, and all slices start at once on the
        # worker threads, one thread each, the smallest model first, while this thread turns the finished
        # models into scores and reasons (Python), in the same order: the small models' reasons are built
        # while the largest model's slices still run. See benchmarks/RESULTS.md (Serving) for the gain.
        pending: dict[str, list[Future[tuple[np.ndarray, np.ndarray]]]] = {}
        if n_known >= PARALLEL_ROWS:
            slices = np.array_split(np.arange(n_known), CORES)
            for name, model in sorted(self.models.items(), key=lambda item: item[1].booster.num_trees()):
                x = matrices[model.matrix_key()]
                pending[name] = [
                    self._pool.submit(model.scores_and_contributions, x[rows], 1) for rows in slices
                ]
        for name in (pending or self.models) if n_known else ():  # as submitted
            model = self.models[name]
            parts = None
            if name in pending:
                done = [future.result() for future in pending[name]]
                parts = (np.concatenate([raw for raw, _ in done]), np.concatenate([c for _, c in done]))
            results[name] = model.explain_columns(known, x=matrices[model.matrix_key()], parts=parts)
        return known, {name: results[name] for name in self.models if name in results}, found

    def read_known(self, customer_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The known customers' columns (features, ``customer_id``, ``_features_ts``) and the found mask.

        Reads the pre-computed vectors of :data:`features.store.SERVING_SERVICE` (one value per customer)
        and, for customers without a usable vector, Feast's per-view read; both give the same values.
        """
        self._ready_store()
        read = self._read_vectors(customer_ids)
        if read is None:
            columns, found, stamps = self._read_views(customer_ids)
        else:
            columns, found, stamps = read
            missing = np.flatnonzero(~found)
            if len(missing):
                more, more_found, more_stamps = self._read_views([customer_ids[i] for i in missing])
                for name, column in columns.items():
                    if column.dtype != more[name].dtype:
                        columns[name] = column = column.astype(object)
                    column[missing] = more[name]
                found[missing] = more_found
                stamps[missing] = more_stamps
        keep = np.flatnonzero(found)
        known: dict[str, np.ndarray] = {"customer_id": np.asarray(customer_ids, dtype=object)[keep]}
        known.update({name: col[keep] for name, col in columns.items()})
        known["_features_ts"] = stamps[keep]
        self._apply_realtime(known)
        return known, found

    def _apply_realtime(self, known: dict[str, Any]) -> None:
        """Read the known customers' real-time rows (``known["_realtime"]``) and make the batch recency
        features fresher where an event, add-to-cart or purchase arrived since (``features.realtime``)."""
        n = len(known["customer_id"])
        if self._realtime_view is None or self.store is None or not n:
            known["_realtime"] = np.full(n, None, dtype=object)
            return
        try:
            rows = realtime.read_online(self.store, self._realtime_view, known["customer_id"].tolist())
        except Exception as exc:  # noqa: BLE001 - the store's own errors vary by backend
            self.store_error = f"online store unavailable: {type(exc).__name__}: {exc}"
            raise Unavailable(self.store_error) from exc
        column = np.empty(n, dtype=object)
        column[:] = rows
        known["_realtime"] = column  # a column like the others (read_known's callers slice and compare them)
        now = datetime.now(UTC)
        stamps = known["_features_ts"]
        copied: set[str] = set()
        for i, row in enumerate(rows):
            if row is None:
                continue
            batch = {f: known[f][i] for f in realtime.FRESH_DAYS if f in known}
            for feature, value in realtime.fresher_features(row, batch, float(stamps[i]), now).items():
                if feature not in copied:  # columns may be read-only views of the read buffer
                    known[feature] = np.array(known[feature], dtype="float64")
                    copied.add(feature)
                known[feature][i] = value

    def _read_views(
        self, customer_ids: Sequence[str]
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Feast ``get_online_features`` over the feature views, as columns."""
        return response_columns(self._online_read(customer_ids), self._names, self._view_firsts)

    def _read_vectors(
        self, customer_ids: Sequence[str]
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None:
        """The customers' pre-computed vectors as columns (``found`` False where a customer has none), or
        None when the vectors cannot be trusted (none written, or written for another materialization or
        layout). See :class:`features.store.VectorLayout` for how they are packed."""
        layout = self._layout
        if self._vector_index is None or layout is None or self.store is None:
            return None
        keys = [fs.entity_key(fs.SIGNATURE_ID), *(fs.entity_key(c) for c in customer_ids)]
        try:
            blobs = fs.read_vectors(self.store, keys, self._vector_view)
        except Exception as exc:  # noqa: BLE001 - the store's own errors vary by backend
            self.store_error = f"online store unavailable: {type(exc).__name__}: {exc}"
            raise Unavailable(self.store_error) from exc
        if not self._vectors_current(blobs[0], layout):
            return None
        n = len(customer_ids)
        where = [i for i, blob in enumerate(blobs[1:]) if blob is not None]
        vectors = [PrecomputedFeatureVector.FromString(blobs[i + 1]) for i in where]
        n_numeric = len(layout.numeric)
        packed = b"".join([v.values[0].bytes_val if v.values else b"" for v in vectors])
        if len(packed) != 8 * n_numeric * len(vectors) or (
            vectors and len(vectors[0].values) != 1 + len(layout.other)
        ):
            self._warn_stale(f"vectors do not match the layout of {fs.SERVING_SERVICE}")
            return None
        block = np.frombuffer(packed, dtype="<f8").reshape(len(vectors), n_numeric)
        others = [_column_array([v.values[1 + k] for v in vectors]) for k in range(len(layout.other))]
        found = np.zeros(n, dtype=bool)
        found[where] = True
        stamps = np.zeros(n, dtype=np.int64)
        stamps[where] = [
            max((t.event_timestamp.seconds for t in v.fv_timestamps), default=0) for v in vectors
        ]
        everyone = len(where) == n  # the usual case: no padding for unknown customers
        columns: dict[str, np.ndarray] = {}
        for name, j in zip(self._names, self._vector_index, strict=True):
            values = block[:, j] if j < n_numeric else others[j - n_numeric]
            if everyone:
                columns[name] = values
                continue
            column = np.full(n, None, dtype=object) if values.dtype == object else np.full(n, np.nan)
            column[where] = values
            columns[name] = column
        return columns, found, stamps

    def _vectors_current(self, marker: bytes | None, layout: fs.VectorLayout) -> bool:
        """The vectors are in ``layout`` and reflect what the registry says was materialized (the registry is
        read again at most every few seconds, and at once -- at most every second, past its cache -- when the
        sentinel names another materialization: a load has just been switched in and recorded)."""
        if marker is None:
            return False
        now = time.monotonic()
        assert self.store is not None
        if self._signature is None or now - self._signature[1] > SIGNATURE_TTL_S:
            service = self.store.get_feature_service(fs.SERVING_SERVICE, allow_cache=True)
            self._signature = (fs.materialization_signature(self.store, service), now)
            self._trusted_marker = None
        if marker == self._trusted_marker:
            return True
        written = layout.signature_of(PrecomputedFeatureVector.FromString(marker))
        if written is None:
            self._warn_stale(f"vectors in another format or feature layout than {fs.SERVING_SERVICE}")
            return False
        if written != self._signature[0] and now - self._signature[1] > SIGNATURE_REFRESH_S:
            service = self.store.get_feature_service(fs.SERVING_SERVICE, allow_cache=True)
            self._signature = (fs.materialization_signature(self.store, service, allow_cache=False), now)
        if written != self._signature[0]:
            self._warn_stale(
                f"vectors from another materialization ({written}; registry: {self._signature[0]})"
            )
            return False
        self._trusted_marker = marker
        return True

    def _warn_stale(self, why: str) -> None:
        if why != self._stale_warned:
            logger.warning(
                "not using the pre-computed vectors: %s; reading the feature views until "
                "`portrait features materialize` rebuilds them",
                why,
            )
            self._stale_warned = why

    def _rfm_edges(self) -> dict[str, list[float]]:
        """The segment model's RFM edges (see :data:`portrait.catalogue.SEGMENT_MODEL`), else the first
        loaded tag model's, in catalogue order."""
        order = [catalogue.SEGMENT_MODEL, *(n for n in self.models if n != catalogue.SEGMENT_MODEL)]
        return next(
            (
                self.models[n].metadata["rfm_edges"]
                for n in order
                if n in self.models and self.models[n].metadata.get("rfm_edges")
            ),
            {},
        )

    def _outputs(
        self, known: dict[str, np.ndarray], results: dict[str, Any]
    ) -> dict[str, tuple[dict[str, list[Any]], dict[str, Any]]]:
        """Per model with catalogue outputs: its extra tag fields and flat export columns."""
        return flat_tags.model_outputs(self.models, known, results, known["_features_ts"])

    def _tag_fields(self) -> list[tuple[str, str, str, bool, int | None]]:
        """Per loaded tag model, in catalogue order: ``(model, response field, score field, is value,
        horizon days)``."""
        out = []
        for name, model in self.models.items():
            entry = catalogue.get(name)
            horizon = model.metadata.get("plan", {}).get("horizon_days")
            if horizon is None and entry.label is not None:
                horizon = entry.label.horizon_days
            assert entry.response_field is not None
            out.append((name, entry.response_field, entry.score_field, entry.kind == "regressor", horizon))
        return out

    def tags(self, customer_ids: Sequence[str]) -> list[CustomerTags]:
        """Tags for each requested id, in request order; unknown ids get ``found=False``.

        Built as plain dicts from column lists and validated into :class:`CustomerTags` in one pydantic
        call (per-row DataFrame access and per-object model construction cost more than the scoring).
        """
        started = time.perf_counter()
        requested = list(customer_ids)
        resolved = self.resolve_ids(requested)
        scored = [r if r is not None else f"\x00unresolved:{i}" for i, r in enumerate(resolved)]
        known, results, found = self._score(scored)
        versions = {n: self.versions[n] for n in self.models}
        edges = self._rfm_edges()
        n_known = len(known["customer_id"])
        fields = {name: rest for name, *rest in self._tag_fields()}
        outputs = self._outputs(known, results)
        per_model = [
            (*fields[name], scores.tolist(), tiers, reasons, outputs.get(name, ({}, {}))[0])
            for name, (scores, tiers, reasons) in results.items()
        ]
        recency, tenure, orders, spend = (
            flat_tags.column_values(known, c, n_known) for c in flat_tags.TAG_INPUTS
        )
        stamps = known["_features_ts"].tolist()
        segment = results.get(catalogue.SEGMENT_MODEL)
        segment_tiers = segment[1] if segment is not None else None
        unavailable = {
            e.response_field: self.load_errors.get(e.name, "not loaded")
            for e in catalogue.tag_models()
            if e.name not in self.models and e.response_field
        }
        live_rows = known["_realtime"]
        now, cart_hours = datetime.now(UTC), self.settings.cart_abandon_hours
        rows: list[dict[str, Any]] = []
        k = 0
        for i, cid in enumerate(requested):
            if not found[i]:
                why = (
                    "unknown identifier: no single customer holds it"
                    if resolved[i] is None
                    else "unknown customer: no features online"
                )
                rows.append({"customer_id": cid, "found": False, "error": why})
                continue
            row: dict[str, Any] = {"customer_id": cid, "found": True, "model_versions": versions}
            if resolved[i] != cid:
                row["oneid"] = resolved[i]
            if unavailable:
                row["unavailable"] = unavailable
            for field, score_field, is_value, horizon, scores, tiers, reasons, extra in per_model:
                row[field] = {
                    score_field: max(scores[k], 0.0) if is_value else scores[k],
                    "tier": tiers[k],
                    "horizon_days": horizon,
                    "reasons": reasons[k],
                }
                for output, values in extra.items():  # the catalogue's extra fields (e.g. the value's range)
                    row[field][output] = values[k]
            row["lifecycle_stage"] = lifecycle_stage(
                recency[k], tenure[k], segment_tiers[k] if segment_tiers is not None else None
            )
            row["rfm_segment"], row["rfm_score"] = rfm_segment(recency[k], orders[k], spend[k], edges)
            row["features_timestamp"] = _as_datetime(stamps[k])
            live = live_rows[k]
            row["realtime"] = realtime.realtime_tags(live, now, cart_hours)
            row["features_timestamps"] = {
                "batch": row["features_timestamp"],
                "realtime": live.timestamp if live is not None else None,
            }
            rows.append(row)
            k += 1
        out = _TAGS.validate_python(rows)
        logger.debug(
            "tagged %d customers in %.1f ms", len(customer_ids), 1000 * (time.perf_counter() - started)
        )
        return out

    def resolve_ids(self, ids: Sequence[str]) -> list[str | None]:
        """Each requested id as the customer id it stands for: ``<kind>:<value>`` (a configured identifier
        kind, e.g. ``email:jane@example.com``) or a source system's record id resolved to the person's
        OneID, a merged-away OneID followed to its survivor, anything else as it is; None for an identifier
        no single person holds."""
        index = self.identity
        if index is None:
            return list(ids)
        as_records = index.resolve_many("record_id", list(ids))  # a source system's own customer id
        out: list[str | None] = []
        for raw, record in zip(ids, as_records, strict=True):
            kind, sep, value = raw.partition(":")
            if sep and kind in index.config.kinds:
                found = index.resolve(kind, value)
                out.append(index.follow(found) if found is not None else None)
            else:
                out.append(index.follow(record if record is not None else raw))
        return out

    def tags_frame(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        """The same tags as flat columns, one row per known customer (for bulk export)."""
        known, results, _ = self._score(customer_ids)
        now, hours = datetime.now(UTC), self.settings.cart_abandon_hours
        return flat_tags.tags_frame(
            known,
            results,
            self.versions,
            self._outputs(known, results),
            self._rfm_edges(),
            [realtime.realtime_tags(r, now, hours) for r in known["_realtime"]],
            known["_features_ts"],
        )

    # -- lookalike -------------------------------------------------------------------------------------
    def expand(self, request: ExpansionRequest) -> ExpansionResult:
        if self.lookalike is None:
            raise Unavailable(self.load_errors.get("lookalike", "the lookalike model is not loaded"))
        return self.lookalike.expand(request)


def _load_identity(settings: Settings) -> Any:
    """The OneID index of the workspace's last stitching run, or None when identities were never stitched."""
    from features.identity.config import identity_dir

    if not (identity_dir(settings) / "lookup.parquet").exists():
        return None
    from features.identity.lookup import IdentityIndex

    index = IdentityIndex.load(settings)
    logger.info("identity index: %d identifiers", len(index))
    return index


def freeze_startup_objects() -> None:
    """Move everything allocated so far (models, Feast registry, imports) out of the garbage collector's
    reach (``gc.freeze``), after one collection.

    A loaded Tagger leaves ~400,000 long-lived container objects that every full collection would
    traverse again; a 1,000-customer request allocates enough objects to trigger such collections,
    which cost ~300 ms of a ~1 s request before freezing. Call once, after start-up; objects
    allocated later are collected as usual. At exit they are handed back (``gc.unfreeze``), so the
    interpreter's last collections free them: DuckDB's bindings report any of their objects still alive then
    ("nanobind: leaked ...").
    """
    gc.collect()
    gc.freeze()
    atexit.unregister(gc.unfreeze)  # once, however often called
    atexit.register(gc.unfreeze)
    logger.info("froze %d start-up objects out of the garbage collector", gc.get_freeze_count())


_NUMBER_KINDS = frozenset({"double_val", "float_val", "int64_val", "int32_val"})
_SCALAR_KINDS = _NUMBER_KINDS | {"string_val", "bool_val"}


def _column_array(values: Any) -> np.ndarray:
    """One response column: float64 (NaN when missing) for numbers, else an object array.

    The values are exactly what ``OnlineResponse.to_dict`` gives: scalars (the only types this repo's
    feature views declare) are read straight off the protobuf ``Value`` (``None`` when unset); a
    column holding any other kind goes through Feast's own converter. Integers become float64, as
    pandas makes them once a value is missing; every consumer reads them through ``float()``.
    """
    kinds = [v.WhichOneof("val") for v in values]
    present = set(kinds)
    present.discard(None)
    if present <= _SCALAR_KINDS:
        column = [None if k is None else getattr(v, k) for v, k in zip(values, kinds, strict=True)]
    else:
        column = [feast_value_type_to_python_type(v) for v in values]
    if present <= _NUMBER_KINDS:
        return np.array(column, dtype="float64")
    out = np.empty(len(column), dtype=object)
    out[:] = column
    return out


def response_columns(
    response: OnlineResponse, names: Sequence[str], stamp_features: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Feast's online response as columns: ``(features, found, newest event timestamp)``.

    ``features`` maps each of ``names`` to a float64 (numbers, NaN when missing) or object array;
    ``found`` is True where any feature has a value (what ``to_dict`` + ``notna`` gives); timestamps
    are epoch seconds, the newest over ``stamp_features`` (one feature per view: a view's features
    share its timestamp).
    """
    proto = response.proto
    index = {name: i for i, name in enumerate(proto.metadata.feature_names.val)}
    columns: dict[str, np.ndarray] = {}
    found: np.ndarray | None = None
    for name in names:
        column = _column_array(proto.results[index[name]].values)
        present = pd.notna(column)
        found = present if found is None else found | present
        columns[name] = column
    n = len(proto.results[0].values) if len(proto.results) else 0
    stamps = np.zeros(n, dtype=np.int64)
    for name in stamp_features:
        seconds = np.fromiter((ts.seconds for ts in proto.results[index[name]].event_timestamps), np.int64)
        if len(seconds) == n:
            np.maximum(stamps, seconds, out=stamps)
    return columns, (found if found is not None else np.zeros(n, dtype=bool)), stamps


def _as_datetime(value: Any) -> datetime:
    """Feast returns feature timestamps as epoch seconds (or datetimes)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)

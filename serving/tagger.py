"""What the service does, without HTTP: load the champions, read online features, build tags.

Kept free of BentoML so it can be called directly (batch export, tests). The service in
``serving/service.py`` wraps one :class:`Tagger` per worker.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import mlflow
import pandas as pd
from feast import FeatureStore
from mlflow.exceptions import MlflowException

from features import store as fs
from portrait.backends import BackendUnavailable
from portrait.lifecycle import lifecycle_stage, rfm_segment
from portrait.lookalike import ExpansionRequest, ExpansionResult, LookalikeModel
from portrait.model import TagModel
from portrait.registry import CHAMPION, TrackingUnavailable, connect
from portrait.settings import Settings
from serving.schemas import CustomerTags, ModelInfo, ProbabilityTag, Reason, ValueTag

logger = logging.getLogger(__name__)

TAG_MODELS = ("churn", "conversion", "clv")
ALL_MODELS = (*TAG_MODELS, "lookalike")
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
        self.store_error: str | None = None
        self.store: FeatureStore | None = None
        self._refs: list[str] = []
        self._load_models()
        try:
            self._open_store()
        except Unavailable:
            logger.warning("not ready: %s", self.store_error)

    def _open_store(self) -> FeatureStore:
        """The Feast store, opened on first use (and the models' feature references resolved)."""
        try:
            if self.store is None:
                self.store = fs.feature_store(self.settings)
            if self.models and not self._refs:
                self._refs = self._feature_refs(self.store)
        except BackendUnavailable as exc:
            self.store_error = f"feature registry unavailable: {exc}"
            raise Unavailable(self.store_error) from exc
        return self.store

    # -- start-up ---------------------------------------------------------------------------------
    def _load_models(self) -> None:
        try:
            client = connect(self.settings)
        except TrackingUnavailable as exc:
            self.load_errors = {name: str(exc) for name in ALL_MODELS}
            return
        for name in ALL_MODELS:
            try:
                mv = client.get_model_version_by_alias(name, CHAMPION)
            except MlflowException:
                self.load_errors[name] = (
                    f"no champion version of model '{name}' is registered (run `portrait train`)"
                )
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
                feature_service=getattr(model, "feature_service", None) or fs.MODEL_SERVICES.get(name),
                metrics={k: float(v) for k, v in metrics.items() if k in HEADLINE_METRICS},
                run_id=mv.run_id,
            )
            if name == "lookalike":
                self.lookalike = model
            else:
                self.models[name] = model
            logger.info("loaded %s v%s", name, mv.version)

    def _feature_refs(self, store: FeatureStore) -> list[str]:
        """The union of the tag models' FeatureServices, fetched in one online read."""
        refs: list[str] = []
        for model in self.models.values():
            service = store.get_feature_service(model.feature_service)
            for projection in service.feature_view_projections:
                for feature in projection.features:
                    ref = f"{projection.name_to_use()}:{feature.name}"
                    if ref not in refs:
                        refs.append(ref)
        return refs

    @property
    def versions(self) -> dict[str, str]:
        return {name: info.version for name, info in self.infos.items()}

    # -- readiness ------------------------------------------------------------------------------------
    def check_store(self) -> str | None:
        """None when the online store answers, else the reason."""
        try:
            store = self._open_store()
            if self._refs:
                store.get_online_features(features=self._refs[:1], entity_rows=[{"customer_id": "__probe__"}])
            else:
                fs.online_features(store, "churn", ["__probe__"])
            self.store_error = None
        except Unavailable:
            pass  # store_error says why
        except Exception as exc:  # noqa: BLE001 - any store failure means "not ready"
            self.store_error = f"online store unavailable: {type(exc).__name__}: {exc}"
        return self.store_error

    def readiness(self) -> list[str]:
        """Reasons the service cannot answer (empty when ready)."""
        reasons = [self.load_errors[n] for n in ALL_MODELS if n in self.load_errors]
        store = self.check_store()
        if store:
            reasons.append(store)
        return reasons

    # -- tags ----------------------------------------------------------------------------------------
    def online_frame(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        if not self.models:
            raise Unavailable(
                "; ".join(self.load_errors.get(n, "") for n in TAG_MODELS) or "no tag model loaded"
            )
        store = self._open_store()
        try:
            response = store.get_online_features(
                features=self._refs, entity_rows=[{"customer_id": cid} for cid in customer_ids]
            )
            data = response.to_dict(include_event_timestamps=True)
        except Exception as exc:  # noqa: BLE001 - the store's own errors vary by backend
            self.store_error = f"online store unavailable: {type(exc).__name__}: {exc}"
            raise Unavailable(self.store_error) from exc
        self.store_error = None
        return pd.DataFrame(data)

    def _score(self, customer_ids: Sequence[str]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], Any]:
        """Online features of the known customers and each model's scores, tiers and reasons."""
        frame = self.online_frame(customer_ids)
        names = [r.split(":", 1)[1] for r in self._refs]
        found = frame[names].notna().any(axis=1).to_numpy()
        known = frame[found].reset_index(drop=True)
        results = {name: model.explain(known) for name, model in self.models.items()} if len(known) else {}
        ts_cols = [c for c in known.columns if c.endswith("__ts")]
        known["_features_ts"] = known[ts_cols].max(axis=1) if ts_cols else None
        return known, results, found

    def _rfm_edges(self) -> dict[str, list[float]]:
        return next(
            (m.metadata["rfm_edges"] for m in self.models.values() if m.metadata.get("rfm_edges")), {}
        )

    def tags(self, customer_ids: Sequence[str]) -> list[CustomerTags]:
        """Tags for each requested id, in request order; unknown ids get ``found=False``."""
        started = time.perf_counter()
        known, results, found = self._score(customer_ids)
        versions = {n: self.versions[n] for n in self.models}
        edges = self._rfm_edges()
        out: list[CustomerTags] = []
        k = 0
        for i, cid in enumerate(customer_ids):
            if not found[i]:
                out.append(
                    CustomerTags(customer_id=cid, found=False, error="unknown customer: no features online")
                )
                continue
            row = known.iloc[k]
            tags = CustomerTags(customer_id=cid, found=True, model_versions=versions)
            for name, res in results.items():
                r = res.iloc[k]
                reasons = [Reason(**x) for x in r.reasons]
                if name == "clv":
                    tags.value = ValueTag(
                        predicted_value=max(float(r.score), 0.0), tier=r.tier, reasons=reasons
                    )
                else:
                    setattr(
                        tags, name, ProbabilityTag(probability=float(r.score), tier=r.tier, reasons=reasons)
                    )
            churn_tier = tags.churn.tier if tags.churn else None
            tags.lifecycle_stage = lifecycle_stage(
                _get(row, "recency_days"), _get(row, "tenure_days"), churn_tier
            )
            tags.rfm_segment, tags.rfm_score = rfm_segment(
                _get(row, "recency_days"), _get(row, "orders_365d"), _get(row, "spend_365d"), edges
            )
            stamp = _get(row, "_features_ts")
            tags.features_timestamp = _as_datetime(stamp) if stamp is not None else None
            out.append(tags)
            k += 1
        logger.debug(
            "tagged %d customers in %.1f ms", len(customer_ids), 1000 * (time.perf_counter() - started)
        )
        return out

    def tags_frame(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        """The same tags as flat columns, one row per known customer (for bulk export)."""
        known, results, _ = self._score(customer_ids)
        out = pd.DataFrame({"customer_id": known["customer_id"]})
        for name, res in results.items():
            prefix = "value" if name == "clv" else name
            out[f"{prefix}_{'predicted' if name == 'clv' else 'probability'}"] = res.score.to_numpy()
            out[f"{prefix}_tier"] = res.tier.to_numpy()
            out[f"{prefix}_reasons"] = ["; ".join(x["text"] for x in reasons) for reasons in res.reasons]
            out[f"{prefix}_model_version"] = self.versions[name]
        churn_tiers = results["churn"].tier.tolist() if "churn" in results else [None] * len(known)
        get = {
            c: known[c].tolist() if c in known else [None] * len(known)
            for c in ("recency_days", "tenure_days", "orders_365d", "spend_365d")
        }
        out["lifecycle_stage"] = [
            lifecycle_stage(_nan_none(r), _nan_none(t), tier)
            for r, t, tier in zip(get["recency_days"], get["tenure_days"], churn_tiers, strict=True)
        ]
        edges = self._rfm_edges()
        rfm = [
            rfm_segment(_nan_none(r), _nan_none(f), _nan_none(m), edges)
            for r, f, m in zip(get["recency_days"], get["orders_365d"], get["spend_365d"], strict=True)
        ]
        out["rfm_segment"] = [s for s, _ in rfm]
        out["rfm_score"] = [s for _, s in rfm]
        out["features_timestamp"] = pd.to_datetime(known["_features_ts"], unit="s", utc=True)
        return out

    # -- lookalike -------------------------------------------------------------------------------------
    def expand(self, request: ExpansionRequest) -> ExpansionResult:
        if self.lookalike is None:
            raise Unavailable(self.load_errors.get("lookalike", "the lookalike model is not loaded"))
        return self.lookalike.expand(request)


def _get(row: pd.Series, name: str) -> Any:
    if name not in row.index:
        return None
    return _nan_none(row[name])


def _nan_none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _as_datetime(value: Any) -> datetime:
    """Feast returns feature timestamps as epoch seconds (or datetimes)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)

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
from mlflow.exceptions import MlflowException

from features import store as fs
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
    """Champion models + the Feast online store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, TagModel] = {}
        self.lookalike: LookalikeModel | None = None
        self.infos: dict[str, ModelInfo] = {}
        self.load_errors: dict[str, str] = {}
        self.store_error: str | None = None
        self.store = fs.feature_store(settings)
        self._load_models()
        self._refs = self._feature_refs()

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

    def _feature_refs(self) -> list[str]:
        """The union of the tag models' FeatureServices, fetched in one online read."""
        refs: list[str] = []
        for name, model in self.models.items():
            service = self.store.get_feature_service(model.feature_service)
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
            if self._refs:
                self.store.get_online_features(
                    features=self._refs[:1], entity_rows=[{"customer_id": "__probe__"}]
                )
            else:
                fs.online_features(self.store, "churn", ["__probe__"])
            self.store_error = None
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
        try:
            response = self.store.get_online_features(
                features=self._refs, entity_rows=[{"customer_id": cid} for cid in customer_ids]
            )
            data = response.to_dict(include_event_timestamps=True)
        except Exception as exc:  # noqa: BLE001 - the store's own errors vary by backend
            self.store_error = f"online store unavailable: {type(exc).__name__}: {exc}"
            raise Unavailable(self.store_error) from exc
        self.store_error = None
        return pd.DataFrame(data)

    def tags(self, customer_ids: Sequence[str]) -> list[CustomerTags]:
        started = time.perf_counter()
        frame = self.online_frame(customer_ids)
        names = [r.split(":", 1)[1] for r in self._refs]
        ts_cols = [c for c in frame.columns if c.endswith("__ts")]
        found = frame[names].notna().any(axis=1).to_numpy()
        results: dict[str, pd.DataFrame] = {}
        known = frame[found].reset_index(drop=True)
        if len(known):
            for name, model in self.models.items():
                results[name] = model.explain(known)
        out: list[CustomerTags] = []
        k = 0
        versions = self.versions
        for i, cid in enumerate(customer_ids):
            if not found[i]:
                out.append(
                    CustomerTags(customer_id=cid, found=False, error="unknown customer: no features online")
                )
                continue
            row = known.iloc[k]
            tags = CustomerTags(
                customer_id=cid, found=True, model_versions={n: versions[n] for n in self.models}
            )
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
            edges = next(
                (m.metadata.get("rfm_edges") for m in self.models.values() if m.metadata.get("rfm_edges")), {}
            )
            tags.rfm_segment, tags.rfm_score = rfm_segment(
                _get(row, "recency_days"), _get(row, "orders_365d"), _get(row, "spend_365d"), edges or {}
            )
            stamps = [row[c] for c in ts_cols if row[c] is not None and not pd.isna(row[c])]
            tags.features_timestamp = _as_datetime(max(stamps)) if stamps else None
            out.append(tags)
            k += 1
        logger.debug(
            "tagged %d customers in %.1f ms", len(customer_ids), 1000 * (time.perf_counter() - started)
        )
        return out

    # -- lookalike -------------------------------------------------------------------------------------
    def expand(self, request: ExpansionRequest) -> ExpansionResult:
        if self.lookalike is None:
            raise Unavailable(self.load_errors.get("lookalike", "the lookalike model is not loaded"))
        return self.lookalike.expand(request)


def _get(row: pd.Series, name: str) -> Any:
    if name not in row.index:
        return None
    value = row[name]
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _as_datetime(value: Any) -> datetime:
    """Feast returns feature timestamps as epoch seconds (or datetimes)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)

"""One FeatureService per model, derived from the model catalogue (:mod:`portrait.catalogue`).

A model's FeatureService is the single list of its features: training calls ``get_historical_features``
with it and serving calls ``get_online_features`` with it, so the two cannot drift apart. The catalogue
entry names the service and the views (and, where it takes only some, the features) it draws on.
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

from features.feast_repo.entities import OWNER
from portrait import catalogue
from portrait.catalogue import SERVING_SERVICE

__all__ = ["MODEL_SERVICES", "SERVING_SERVICE", "feature_services", "model_services", "tag_models"]


def model_services() -> dict[str, str]:
    """Model name -> FeatureService name, from the catalogue."""
    return catalogue.feature_services()


def tag_models() -> tuple[str, ...]:
    return tuple(e.name for e in catalogue.tag_models())


MODEL_SERVICES: dict[str, str] = catalogue.feature_services()
"""Model -> FeatureService as the catalogue stood at import; prefer ``catalogue.get(name).feature_service``."""


def _projections(entry: catalogue.ModelEntry, by_name: dict[str, FeatureView]) -> list:
    out = []
    for view, features in entry.views.items():
        if view not in by_name:
            raise KeyError(f"model {entry.name!r} names feature view {view!r}, which does not exist")
        out.append(by_name[view] if features is None else by_name[view][list(features)])
    return out


def feature_services(views: list[FeatureView]) -> list[FeatureService]:
    """Every catalogue model's service, plus the serving service: the tag models' views together."""
    by_name = {v.name: v for v in views}
    services = [
        FeatureService(
            name=entry.feature_service,
            features=_projections(entry, by_name),
            description=f"Features of the {entry.name} model: {entry.description}",
            owner=OWNER,
            tags={"model": entry.name},
        )
        for entry in catalogue.entries()
    ]
    tag_views: list[str] = []
    for entry in catalogue.tag_models():
        tag_views += [v for v in entry.views if v not in tag_views]
    services.append(
        FeatureService(
            name=SERVING_SERVICE,
            features=[by_name[v] for v in catalogue.ALL_VIEWS if v in tag_views],
            description="The tag models' features together, read by /v1/tags as one pre-computed vector.",
            owner=OWNER,
            tags={"serves": ",".join(tag_models())},
        )
    )
    return services

"""Portrait's Feast repository as objects, and ``apply``: what registers it.

Kept apart from :mod:`features.store` because the feature views' schemas come from the Ibis pipeline
(``features.pipeline.feature_schema``): the serving path opens and reads the store without importing Ibis,
and only what registers the repo (the CLI, training, the workflow, the feast CLI's repo file) imports this.
"""

from __future__ import annotations

import logging
from typing import Any

from feast import FeatureStore

from features.feast_repo.entities import customer
from features.feast_repo.feature_services import feature_services
from features.feast_repo.feature_views import feature_views
from features.feast_repo.realtime import realtime_view
from features.store import feature_store, write_repo_or_warn
from portrait import catalogue
from portrait.settings import Settings

logger = logging.getLogger(__name__)


def definitions(settings: Settings) -> list[Any]:
    """Feast objects of the repo: the customer entity, the feature views and one service per model."""
    views = feature_views(settings)
    return [customer(), *views, *feature_services(views), realtime_view(settings)]


def apply(settings: Settings, store: FeatureStore | None = None) -> FeatureStore:
    """Register (or update) the entities, views and services in the registry.

    Also (re)writes the workspace's Feast repository (:func:`write_repo`), so the feast CLI can open it.
    """
    if store is None:
        store = feature_store(settings)
    else:
        write_repo_or_warn(settings)
    objects = definitions(settings)
    store.apply(objects)
    logger.info("applied %d Feast objects to project %s", len(objects), store.project)
    return store


def ensure_applied(settings: Settings, store: FeatureStore | None = None) -> FeatureStore:
    """The Feast store, with the repo applied when any catalogue model's FeatureService or the real-time
    view is missing from the registry (a fresh workspace; a model added to the catalogue)."""
    from features.realtime import VIEW

    store = store or feature_store(settings)
    try:
        have = {s.name for s in store.list_feature_services()} | {v.name for v in store.list_feature_views()}
    except Exception:  # noqa: BLE001 - Feast raises several "not found" types for a fresh registry
        have = set()
    wanted = {*catalogue.feature_services().values(), catalogue.SERVING_SERVICE, VIEW}
    if not wanted <= have:
        apply(settings, store)
    return store

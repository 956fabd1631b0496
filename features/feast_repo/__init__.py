"""Portrait's Feast repository: entities, data sources, feature views and feature services.

Definitions are built by functions that take :class:`portrait.settings.Settings`, so every path comes
from the settings (never from the current directory). ``features.store.definitions(settings)``
collects them for ``FeatureStore.apply``; the repo file that ``features.store`` writes beside the
workspace's ``feature_store.yaml`` exposes the same objects to Feast's CLI. Importing these modules does
not import the feature pipeline (Ibis): the views' fields are derived from it only when they are built.
"""

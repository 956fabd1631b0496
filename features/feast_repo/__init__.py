"""Portrait's Feast repository: entities, data sources, feature views and feature services.

Definitions are built by functions that take :class:`portrait.settings.Settings`, so every path comes
from the settings (never from the current directory). ``features.store.definitions(settings)``
collects them for ``FeatureStore.apply``.
"""

"""A model added through the catalogue alone (see tests/test_catalogue.py): its entry and its spec module.

``winback``: a purchase within 60 days, among everyone signed up. Registering :data:`ENTRY` is the only
change: training, tracking, promotion, the Feast feature service, ``/v1/tags`` and the CLI pick it up.
"""

from portrait.catalogue import LabelWindows, ModelEntry, TierScheme

MONOTONE = {"recency_days": -1}
"""The spec module's part: what fitting needs beyond the catalogue."""

ENTRY = ModelEntry(
    name="winback",
    kind="classifier",
    description="Propensity to purchase within the win-back horizon.",
    feature_service="winback_v1",
    headline_metric="auc",
    label=LabelWindows("conversion", horizon_days=60),
    tiers=TierScheme(shares=(0.15,), names=("likely",), default="unlikely"),
    response_field="winback",
    reason_words=("raises win-back odds", "lowers win-back odds"),
    spec_module="tests.plugins.winback",
)

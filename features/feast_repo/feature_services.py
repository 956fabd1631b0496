"""One FeatureService per model: the single list of that model's features.

Training calls ``get_historical_features`` with it and serving calls ``get_online_features`` with it,
so the two cannot drift apart.
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

from features.feast_repo.entities import OWNER

MODEL_SERVICES: dict[str, str] = {
    "churn": "churn_v1",
    "conversion": "conversion_v1",
    "clv": "clv_v1",
    "lookalike": "lookalike_v1",
}

TAG_MODELS = ("churn", "conversion", "clv")
SERVING_SERVICE = "tags_v1"
"""What ``/v1/tags`` reads: every feature of the tag models' services (a test checks it covers them).
``features.store.precompute_vectors`` keeps one Feast ``PrecomputedFeatureVector`` of it per customer, so a
request reads one value per customer instead of one per feature."""

# Declared attributes are left out of the lookalike representation: audiences should be similar in
# behaviour, not in demographics.
LOOKALIKE_PROFILE_FEATURES = ["tenure_days"]


def feature_services(views: list[FeatureView]) -> list[FeatureService]:
    by_name = {v.name: v for v in views}
    everything = [
        by_name["customer_profile"],
        by_name["customer_transactions"],
        by_name["customer_behaviour"],
    ]
    services = [
        FeatureService(
            name=MODEL_SERVICES[model],
            features=everything,
            description=f"Features of the {model} model.",
            owner=OWNER,
            tags={"model": model},
        )
        for model in TAG_MODELS
    ]
    services.append(
        FeatureService(
            name=SERVING_SERVICE,
            features=everything,
            description="The tag models' features together, read by /v1/tags as one pre-computed vector.",
            owner=OWNER,
            tags={"serves": ",".join(TAG_MODELS)},
        )
    )
    services.append(
        FeatureService(
            name=MODEL_SERVICES["lookalike"],
            features=[
                by_name["customer_profile"][LOOKALIKE_PROFILE_FEATURES],
                by_name["customer_transactions"],
                by_name["customer_behaviour"],
            ],
            description="Behavioural and transactional representation used for lookalike audiences.",
            owner=OWNER,
            tags={"model": "lookalike"},
        )
    )
    return services

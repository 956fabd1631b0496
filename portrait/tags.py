"""The flat tags frame (one row per customer, one column per tag field), built the same way by the service's
bulk export (``serving.tagger.Tagger.tags_frame``) and by Spark scoring (``portrait.scoring.tags_frame``).

Both score their customers first (per model: scores, tiers, reasons) and read the real-time flags; this
module turns that into the columns, so the two exports cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from portrait import catalogue
from portrait.lifecycle import lifecycle_stage, rfm_segment

TAG_INPUTS = ("recency_days", "tenure_days", "orders_365d", "spend_365d")
"""Features the lifecycle stage and RFM segment are read from."""
FLAGS = ("visited_today", "purchased_today", "cart_abandoned")
"""The real-time flags, one boolean column each."""
Results = Mapping[str, tuple[Any, Sequence[Any], Sequence[Any]]]
"""Per model, in output order: scores, tiers and reasons of every customer."""


def none_if_nan(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def column_values(columns: Mapping[str, np.ndarray], name: str, n: int) -> list[Any]:
    """A column as Python values with NaN as None (all None when the models do not read it)."""
    if name not in columns:
        return [None] * n
    return [none_if_nan(v) for v in columns[name].tolist()]


def model_outputs(
    models: Mapping[str, Any], known: Mapping[str, Any], results: Results, stamps: Any
) -> dict[str, tuple[dict[str, list[Any]], dict[str, Any]]]:
    """Per model with catalogue outputs: its extra tag fields (name -> one value per customer) and its flat
    export columns, from the model's parts (``model.base.served``)."""
    out = {}
    for name, (scores, _, _) in results.items():
        entry, base = catalogue.get(name), getattr(models[name], "base", None)
        if not entry.outputs or base is None or not hasattr(base, "served"):
            continue
        out[name] = base.served(
            known,
            scores,
            stamps,
            known["customer_id"].tolist(),
            [o.name for o in entry.outputs],
            prefix=entry.response_field or name,
        )
    return out


def tags_frame(
    known: Mapping[str, Any],
    results: Results,
    versions: Mapping[str, str],
    outputs: Mapping[str, tuple[dict[str, list[Any]], dict[str, Any]]],
    rfm_edges: Any,
    flags: Sequence[Mapping[str, Any]],
    stamps: Any,
) -> pd.DataFrame:
    """The flat tags of the customers in ``known``: per model (in ``results``' order) its score, tier,
    reasons and version, the models' extra output columns (``value_p10``, ``category_<name>``, ...), lifecycle
    stage, RFM segment and score, the features' time (epoch seconds ``stamps``) and the real-time ``flags``
    (``features.realtime.realtime_tags`` of each customer)."""
    n = len(known["customer_id"])
    out = pd.DataFrame({"customer_id": known["customer_id"]})
    for name, (scores, tiers, reasons) in results.items():
        entry = catalogue.get(name)
        assert entry.response_field is not None
        prefix, is_value = entry.response_field, entry.kind == "regressor"
        out[f"{prefix}_{'predicted' if is_value else 'probability'}"] = scores
        out[f"{prefix}_tier"] = np.asarray(tiers, dtype=object)
        out[f"{prefix}_reasons"] = ["; ".join(x["text"] for x in items) for items in reasons]
        out[f"{prefix}_model_version"] = versions[name]
    for _, flat in outputs.values():
        for column, values in flat.items():  # e.g. value_p10, category_<name> (audience filters)
            out[column] = values
    segment = results.get(catalogue.SEGMENT_MODEL)
    segment_tiers = segment[1] if segment is not None else [None] * n
    get = {c: column_values(known, c, n) for c in TAG_INPUTS}
    out["lifecycle_stage"] = [
        lifecycle_stage(r, t, tier)
        for r, t, tier in zip(get["recency_days"], get["tenure_days"], segment_tiers, strict=True)
    ]
    rfm = [
        rfm_segment(r, f, m, rfm_edges)
        for r, f, m in zip(get["recency_days"], get["orders_365d"], get["spend_365d"], strict=True)
    ]
    out["rfm_segment"] = [s for s, _ in rfm]
    out["rfm_score"] = [s for _, s in rfm]
    out["features_timestamp"] = pd.to_datetime(pd.Series(stamps), unit="s", utc=True)
    for flag in FLAGS:
        out[flag] = [tags[flag] for tags in flags]
    return out

"""Holdouts: treatment and control groups of an audience, and the incremental lift they measure.

**Split** (:func:`assign`). Every member gets a number ``u`` in [0, 1) from a keyed hash of the audience id and
the customer id (BLAKE2b: the same on every machine and Python version). Within each stratum (a tier), members
are ordered by ``u`` and the first ``round(share x n)`` go to control: the control share is exact per tier.
A split is stored with the audience, so every export gives the same groups. Customers added later are
assigned within their stratum, again in ``u`` order, so that the stratum's control share stays as close to the
target as possible; members already assigned never move.

**Lift** (:func:`lift`). Conversion rates in treatment and control per stratum; the incremental lift is the
stratum-weighted difference of rates (weights: the strata's shares of the audience), with a normal (Wald)
confidence interval whose variance is ``sum_h w_h^2 (p_th (1-p_th) / n_th + p_ch (1-p_ch) / n_ch)``; the
relative lift (treatment over control, minus one) with a delta-method interval on the log ratio.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from scipy import stats as sps

ID = "customer_id"
TREATMENT, CONTROL = "treatment", "control"
GROUPS = (TREATMENT, CONTROL)
NO_STRATUM = "(none)"


def unit_hash(audience_id: str, customer_ids: Iterable[str]) -> np.ndarray:
    """A stable number in [0, 1) per customer, keyed by the audience (BLAKE2b, 8 bytes)."""
    key = audience_id.encode()[:64]
    values = [
        int.from_bytes(hashlib.blake2b(str(c).encode(), digest_size=8, key=key).digest(), "big")
        for c in customer_ids
    ]
    return np.asarray(values, dtype=np.float64) / 2.0**64


def assign(
    audience_id: str, members: pd.DataFrame, control_share: float, previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Treatment / control for ``members`` (``customer_id``, ``stratum``); ``previous`` assignments are kept.

    Returns ``customer_id``, ``stratum``, ``group`` sorted by ``customer_id``.
    """
    if not 0.0 < control_share < 1.0:
        raise ValueError(f"control share must be between 0 and 1 (exclusive), not {control_share}")
    frame = members[[ID, "stratum"]].copy()
    frame["stratum"] = frame["stratum"].fillna(NO_STRATUM).astype(str)
    frame[ID] = frame[ID].astype(str)
    frame = frame.drop_duplicates(ID)
    kept = pd.DataFrame(columns=[ID, "stratum", "group"])
    if previous is not None and not previous.empty:
        kept = previous[previous[ID].isin(set(frame[ID]))][[ID, "stratum", "group"]].copy()
        frame = frame[~frame[ID].isin(set(kept[ID]))]
    frame["u"] = unit_hash(audience_id, frame[ID].tolist())
    parts = [kept]
    for stratum, group in frame.groupby("stratum", sort=True):
        group = group.sort_values(["u", ID], kind="stable")
        old = kept[kept.stratum == stratum]
        target = round(control_share * (len(old) + len(group)))
        n_control = int(min(max(target - int((old.group == CONTROL).sum()), 0), len(group)))
        labels = np.where(np.arange(len(group)) < n_control, CONTROL, TREATMENT)
        parts.append(pd.DataFrame({ID: group[ID].to_numpy(), "stratum": stratum, "group": labels}))
    out = (
        pd.concat([p for p in parts if not p.empty], ignore_index=True)
        if any(not p.empty for p in parts)
        else kept
    )
    return out.sort_values(ID, kind="stable").reset_index(drop=True)


class StratumLift(BaseModel):
    stratum: str
    treatment: int
    control: int
    treatment_converted: int
    control_converted: int
    treatment_rate: float | None
    control_rate: float | None


class LiftReport(BaseModel):
    """Incremental lift of treatment over control, with confidence intervals."""

    treatment: int = Field(description="Treatment members.")
    control: int = Field(description="Control members.")
    treatment_converted: int
    control_converted: int
    treatment_rate: float | None
    control_rate: float | None
    lift: float | None = Field(description="Stratum-weighted treatment rate minus control rate (absolute).")
    lift_ci: tuple[float, float] | None = Field(description="Confidence interval of the absolute lift.")
    relative_lift: float | None = Field(
        description="Treatment rate / control rate - 1 (stratum-weighted rates)."
    )
    relative_lift_ci: tuple[float, float] | None
    incremental_conversions: float | None = Field(description="lift x treatment members.")
    confidence: float
    significant: bool = Field(description="The absolute lift's interval excludes 0.")
    strata: list[StratumLift]
    unknown_converted: int = Field(0, description="Converted ids that are not audience members (ignored).")
    note: str = ""


def lift(groups: pd.DataFrame, converted: Iterable[str], *, confidence: float = 0.95) -> LiftReport:
    """The incremental lift of ``groups`` (``customer_id``, ``stratum``, ``group``) given who converted."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), not {confidence}")
    converted_ids = {str(c) for c in converted}
    frame = groups[[ID, "stratum", "group"]].copy()
    frame["converted"] = frame[ID].astype(str).isin(converted_ids)
    unknown = len(converted_ids - set(frame[ID].astype(str)))
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    n = len(frame)
    strata: list[StratumLift] = []
    diff, var, rate_t, rate_c, weights = 0.0, 0.0, 0.0, 0.0, 0.0
    var_t, var_c = 0.0, 0.0
    skipped: list[str] = []
    for stratum, part in frame.groupby("stratum", sort=True):
        t, c = part[part.group == TREATMENT], part[part.group == CONTROL]
        n_t, n_c = len(t), len(c)
        x_t, x_c = int(t.converted.sum()), int(c.converted.sum())
        p_t = x_t / n_t if n_t else None
        p_c = x_c / n_c if n_c else None
        strata.append(StratumLift(stratum=str(stratum), treatment=n_t, control=n_c, treatment_converted=x_t,
                                  control_converted=x_c, treatment_rate=p_t, control_rate=p_c))  # fmt: skip
        if p_t is None or p_c is None:
            skipped.append(str(stratum))
            continue
        w = len(part) / n
        weights += w
        diff += w * (p_t - p_c)
        rate_t += w * p_t
        rate_c += w * p_c
        var_t += w * w * p_t * (1 - p_t) / n_t
        var_c += w * w * p_c * (1 - p_c) / n_c
    var = var_t + var_c
    totals = {
        "treatment": int((frame.group == TREATMENT).sum()),
        "control": int((frame.group == CONTROL).sum()),
        "treatment_converted": int(frame.converted[frame.group == TREATMENT].sum()),
        "control_converted": int(frame.converted[frame.group == CONTROL].sum()),
    }
    base = {
        **totals,
        "treatment_rate": totals["treatment_converted"] / totals["treatment"]
        if totals["treatment"]
        else None,
        "control_rate": totals["control_converted"] / totals["control"] if totals["control"] else None,
        "confidence": confidence,
        "strata": strata,
        "unknown_converted": unknown,
    }
    note = (
        f"strata with members in only one group left out of the estimate: {', '.join(skipped)}"
        if skipped
        else ""
    )
    if weights == 0:
        return LiftReport(**base, lift=None, lift_ci=None, relative_lift=None, relative_lift_ci=None,
                          incremental_conversions=None, significant=False,
                          note="no stratum has members in both groups: no lift can be estimated")  # fmt: skip
    # Renormalise when strata without members were skipped (weights then sum to 1 again).
    diff, rate_t, rate_c = diff / weights, rate_t / weights, rate_c / weights
    var, var_t, var_c = var / weights**2, var_t / weights**2, var_c / weights**2
    half = z * math.sqrt(var)
    relative, relative_ci = None, None
    if rate_c > 0 and rate_t > 0:
        relative = rate_t / rate_c - 1
        se_log = math.sqrt(var_t / rate_t**2 + var_c / rate_c**2)
        log_ratio = math.log(rate_t / rate_c)
        relative_ci = (math.exp(log_ratio - z * se_log) - 1, math.exp(log_ratio + z * se_log) - 1)
    low, high = diff - half, diff + half
    return LiftReport(
        **base,
        lift=diff,
        lift_ci=(low, high),
        relative_lift=relative,
        relative_lift_ci=relative_ci,
        incremental_conversions=diff * totals["treatment"],
        significant=low > 0 or high < 0,
        note=note,
    )


__all__ = ["CONTROL", "GROUPS", "TREATMENT", "LiftReport", "StratumLift", "assign", "lift", "unit_hash"]

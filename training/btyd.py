"""Fit the purchase model (BG/NBD + Gamma-Gamma) point in time, through PyMC-Marketing's CLV module.

One fit per snapshot, from that snapshot's feature rows only (the features hold nothing at or after the
snapshot, so neither does the fit). Maximum a posteriori (``fit(method="map")``): the served model needs
point estimates (:mod:`portrait.btyd` evaluates the closed forms), and MAP takes seconds where sampling
takes minutes. Priors: PyMC-Marketing's defaults for the dropout (``phi``, ``kappa``) and flat priors on
the rate's shape and scale, so the fit is the likelihood's on any time scale; Gamma-Gamma with flat priors
(its default).
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

from portrait.btyd import BetaGeo, Btyd, GammaGamma, Summary, summary

logger = logging.getLogger(__name__)

MAX_FIT_CUSTOMERS = 50_000
"""Customers the parameters are fitted on at most (a random sample beyond it: four numbers do not need
millions of rows, and a MAP fit's cost grows with them)."""


def _frame(s: Summary, rows: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": np.arange(len(rows)),
            "frequency": s.x[rows],
            "recency": s.t_x[rows],
            "T": s.T[rows],
            "monetary_value": s.m[rows],
        }
    )


def fit_btyd(frame: pd.DataFrame, *, label: str = "", nonbuyer_value: float = 0.0, seed: int = 7) -> Btyd:
    """BG/NBD and Gamma-Gamma fitted on the buyers among ``frame``'s rows (one snapshot's features)."""
    from pymc_extras.prior import Prior
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    started = time.perf_counter()
    s = summary(frame)
    buyers = np.flatnonzero(s.buyer)
    if len(buyers) < 20:
        raise ValueError(f"too few buyers to fit the purchase model ({len(buyers)})")
    if len(buyers) > MAX_FIT_CUSTOMERS:
        buyers = np.sort(np.random.default_rng(seed).choice(buyers, MAX_FIT_CUSTOMERS, replace=False))
    data = _frame(s, buyers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("pymc").setLevel(logging.ERROR)
        bg = BetaGeoModel(
            model_config={"r": Prior("HalfFlat"), "alpha": Prior("HalfFlat")},
        )
        bg.fit(data[["customer_id", "frequency", "recency", "T"]], method="map", progressbar=False)
        post = bg.idata.posterior
        purchases = BetaGeo(*(float(post[k].values.ravel()[0]) for k in ("r", "alpha", "a", "b")))
        repeat = data[(data.monetary_value > 0) & np.isfinite(data.monetary_value)].copy()
        repeat["frequency"] = repeat["frequency"] + 1.0  # orders behind the mean (the first included)
        gg = GammaGammaModel()
        gg.fit(repeat[["customer_id", "monetary_value", "frequency"]], method="map", progressbar=False)
        gpost = gg.idata.posterior
        spend = GammaGamma(*(float(gpost[k].values.ravel()[0]) for k in ("p", "q", "v")))
    fitted = Btyd(purchases, spend, float(nonbuyer_value), label, int(s.buyer.sum()))
    logger.debug("purchase model at %s: %s (%.1fs)", label, fitted.as_dict(), time.perf_counter() - started)
    return fitted


def fit_per_snapshot(frame: pd.DataFrame, *, nonbuyer_value: float = 0.0) -> dict[pd.Timestamp, Btyd]:
    """One fit per ``event_timestamp`` of ``frame``."""
    return {
        snapshot: fit_btyd(rows, label=str(snapshot.date()), nonbuyer_value=nonbuyer_value)
        for snapshot, rows in frame.groupby("event_timestamp", sort=True)
    }


def describe(fitted: Btyd) -> dict[str, Any]:
    return fitted.as_dict()


__all__ = ["MAX_FIT_CUSTOMERS", "describe", "fit_btyd", "fit_per_snapshot"]

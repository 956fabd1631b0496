"""Metrics and plots. ``evaluate_*`` return plain dicts of floats (logged to MLflow as metrics)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


def _pyplot():  # noqa: ANN202 - the pyplot module
    """pyplot on the headless Agg backend, chosen when the first plot is drawn (never at import)."""
    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def lift_by_decile(y: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """Customers ranked by score into deciles: positive rate, lift over the base rate and cumulative gain."""
    order = np.argsort(-score, kind="stable")
    y_sorted = np.asarray(y, dtype=float)[order]
    deciles = np.array_split(y_sorted, 10)
    base = y_sorted.mean() if len(y_sorted) else 0.0
    total = y_sorted.sum() or 1.0
    rows, cum = [], 0.0
    for i, part in enumerate(deciles, start=1):
        cum += part.sum()
        rate = part.mean() if len(part) else 0.0
        rows.append(
            {"decile": i, "rate": rate, "lift": rate / base if base else 0.0, "cumulative_gain": cum / total}
        )
    return pd.DataFrame(rows)


def evaluate_classifier(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        raise ValueError("evaluation needs both classes in the labels")
    lift = lift_by_decile(y, p)
    return {
        "auc": float(roc_auc_score(y, p)),
        "average_precision": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6))),
        "positive_rate": float(y.mean()),
        "mean_prediction": float(np.mean(p)),
        "lift_top_decile": float(lift.lift.iloc[0]),
        "n": float(len(y)),
    }


def normalized_gini(y: np.ndarray, pred: np.ndarray) -> float:
    """Gini of the predictions divided by the Gini of a perfect ranking (1.0 = perfect, 0 = random)."""

    def gini(actual: np.ndarray, score: np.ndarray) -> float:
        order = np.lexsort((np.arange(len(score)), -score))
        a = np.asarray(actual, dtype=float)[order]
        cum = np.cumsum(a) / a.sum()
        return float(cum.sum() / len(a) - (len(a) + 1) / (2 * len(a)))

    y = np.asarray(y, dtype=float)
    if y.sum() <= 0:
        return 0.0
    return gini(y, np.asarray(pred, dtype=float)) / gini(y, y)


def evaluate_regressor(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    return {
        "mae": float(mean_absolute_error(y, pred)),
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
        "normalized_gini": float(normalized_gini(y, pred)),
        "spearman": float(spearmanr(y, pred).statistic) if np.std(pred) > 0 else 0.0,
        "total_ratio": float(pred.sum() / y.sum()) if y.sum() else float("nan"),
        "zero_share": float((y == 0).mean()),
        "n": float(len(y)),
    }


def classifier_plots(y: np.ndarray, p: np.ndarray, out_dir: Path, title: str) -> list[Path]:
    """ROC, precision-recall, calibration and cumulative gain / lift plots as PNG files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4))
    fpr, tpr, _ = roc_curve(y, p)
    axes[0].plot(fpr, tpr, label=f"AUC {roc_auc_score(y, p):.3f}")
    axes[0].plot([0, 1], [0, 1], "--", color="grey")
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    axes[0].legend()
    prec, rec, _ = precision_recall_curve(y, p)
    axes[1].plot(rec, prec)
    axes[1].set(xlabel="recall", ylabel="precision", title=f"{title}: precision-recall")
    paths.append(_save(fig, out_dir / "roc_pr.png"))

    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4))
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
    axes[0].plot(mean, frac, "o-")
    axes[0].plot([0, 1], [0, 1], "--", color="grey")
    axes[0].set(xlabel="predicted probability", ylabel="observed rate", title=f"{title}: calibration")
    lift = lift_by_decile(y, p)
    axes[1].bar(lift.decile, lift.lift)
    axes[1].plot(lift.decile, lift.cumulative_gain * 10, "o-", color="black", label="cumulative gain x10")
    axes[1].set(xlabel="decile (by score)", ylabel="lift", title=f"{title}: lift and gain")
    axes[1].legend()
    paths.append(_save(fig, out_dir / "calibration_lift.png"))
    return paths


def regressor_plots(y: np.ndarray, pred: np.ndarray, out_dir: Path, title: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4))
    lift = lift_by_decile(y, pred)
    axes[0].bar(lift.decile, lift.cumulative_gain)
    axes[0].set(xlabel="decile (by predicted value)", ylabel="share of actual value", title=f"{title}: gain")
    df = pd.DataFrame({"y": y, "p": pred})
    df["bin"] = pd.qcut(df.p.rank(method="first"), 10, labels=False)
    agg = df.groupby("bin").mean()
    axes[1].plot(agg.p, agg.y, "o-")
    top = max(agg.p.max(), agg.y.max())
    axes[1].plot([0, top], [0, top], "--", color="grey")
    axes[1].set(xlabel="predicted value", ylabel="actual value", title=f"{title}: calibration by decile")
    return [_save(fig, out_dir / "value_gain_calibration.png")]


def importance_plot(names: list[str], gains: np.ndarray, out_dir: Path, title: str) -> Path:
    order = np.argsort(gains)[-20:]
    fig, ax = _pyplot().subplots(figsize=(7, 6))
    ax.barh([names[i] for i in order], gains[order])
    ax.set(xlabel="total gain", title=f"{title}: feature importance")
    return _save(fig, out_dir / "feature_importance.png")


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path

"""What a data scientist checks on a registered model, as functions the notebooks call.

The notebooks in ``notebooks/`` hold no logic of their own: they call these and display the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from portrait import catalogue
from portrait.registry import CHAMPION, connect
from portrait.settings import Settings


def champion_summary(settings: Settings, name: str) -> dict[str, Any]:
    """Version, run, parameters and metrics of the model's champion."""
    client = connect(settings)
    mv = client.get_model_version_by_alias(name, CHAMPION)
    run = client.get_run(mv.run_id)
    return {
        "name": name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "promotion": mv.tags.get("promotion", ""),
        "metrics": dict(sorted(run.data.metrics.items())),
        "params": dict(sorted(run.data.params.items())),
    }


def metrics_table(settings: Settings, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Validation and out-of-time test metrics of each champion (default: every tag model), side by side."""
    rows = []
    for name in names if names is not None else [e.name for e in catalogue.tag_models()]:
        summary = champion_summary(settings, name)
        for key, value in summary["metrics"].items():
            split, _, metric = key.partition("_")
            if split in ("val", "test"):
                rows.append(
                    {
                        "model": name,
                        "version": summary["version"],
                        "split": split,
                        "metric": metric,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows).pivot_table(index=["model", "metric"], columns="split", values="value")


def champion_plots(settings: Settings, name: str, dest: Path) -> list[Path]:
    """Download the champion run's plots (ROC/PR, calibration, lift and gain, importance)."""
    summary = champion_summary(settings, name)
    local = mlflow.artifacts.download_artifacts(
        run_id=summary["run_id"], artifact_path="plots", dst_path=str(dest)
    )
    return sorted(Path(local).glob("*.png"))


def feature_importance(settings: Settings, name: str, top: int = 15) -> pd.DataFrame:
    """Total gain per feature of the champion model."""
    connect(settings)
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}").unwrap_python_model()
    gains = pd.Series(model.metadata["feature_importance_gain"], name="gain").sort_values(ascending=False)
    return gains.head(top).to_frame()


def example_reasons(settings: Settings, customer_ids: Sequence[str]) -> pd.DataFrame:
    """Scores, tiers and reasons for a few customers, read from the online store like the API does."""
    from serving.tagger import Tagger

    frame = Tagger(settings).tags_frame(customer_ids)
    cols = [c for c in frame.columns if c.endswith(("_probability", "_predicted", "_tier", "_reasons"))]
    return frame[["customer_id", *cols, "lifecycle_stage", "rfm_segment"]]

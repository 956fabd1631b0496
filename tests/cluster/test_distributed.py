"""The refit on a local Dask cluster of 2 workers (LightGBM's distributed training) gives a model of the
same quality as the single-machine refit, on the same data and parameters, and a servable artefact."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

from portrait.settings import Settings
from tests.cluster.conftest import PLAN, SourceData, copy_workspace
from training import fit as fit_module
from training.dataset import build_training_set
from training.distributed import dask_client, refit_model
from training.fit import fit
from training.train import fit_final, plan_for, resolve

pytestmark = pytest.mark.slow


def auc_of(model: object, ts: object) -> float:
    return float(roc_auc_score(ts.test.label.to_numpy(), model.score(ts.test)))  # type: ignore[attr-defined]


def test_dask_refit_matches_single_machine(
    source_data: SourceData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        home=copy_workspace(source_data, tmp_path / "ws", features=True), mlflow_tracking_uri=None
    )
    spec, options = resolve(settings, "churn", **PLAN)
    ts = build_training_set(settings, "churn", spec.label, plan_for(settings, spec, **options))
    monkeypatch.setattr(fit_module, "MAX_ROUNDS", 100)
    single = fit(ts, spec, trials=3, threads=1)

    with dask_client(Settings(dask_workers=2, dask_scheduler=None)) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        distributed = refit_model(client, single, ts, spec)
    # what `portrait train` runs with distributed_refit on: the search without a refit, then the Dask refit
    on = settings.model_copy(
        update={"distributed_refit": True, "dask_workers": 2, "dask_scheduler": None, "train_threads": 1}
    )
    wired = fit_final(on, ts, spec, trials=3).model
    assert wired.metadata["fit"]["distributed"]["workers"] == 2
    assert wired.metadata["fit"]["rounds"] == single.model.metadata["fit"]["rounds"]  # same search, same seed
    assert (
        abs(roc_auc_score(ts.test.label.to_numpy(), wired.score(ts.test)) - auc_of(single.model, ts)) < 0.03
    )

    y = ts.test.label.to_numpy()
    auc_single = roc_auc_score(y, single.model.score(ts.test))
    auc_distributed = roc_auc_score(y, distributed.score(ts.test))
    assert auc_single > 0.6
    assert abs(auc_distributed - auc_single) < 0.03, (auc_single, auc_distributed)
    assert distributed.metadata["fit"]["distributed"] == {
        "workers": 2,
        "rounds": single.model.metadata["fit"]["rounds"],
    }
    assert distributed.booster.num_trees() == single.model.booster.num_trees()
    assert (
        distributed.calibrator is single.model.calibrator
    )  # calibrated on the held-out customers, as before
    assert [t for t in distributed.tiers.names] == single.model.tiers.names
    served = pickle.loads(pickle.dumps(distributed))  # what MLflow stores and serving loads
    explained = served.explain(ts.test.head(20))
    assert len(explained) == 20 and explained.reasons.map(len).gt(0).all()

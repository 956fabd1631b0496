"""The refit on a local Dask cluster of 2 workers (LightGBM's distributed training) gives a model of the
same quality as the single-machine refit, on the same data and parameters, and a servable artefact."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from portrait.settings import Settings
from tests.cluster.conftest import PLAN, SourceData, copy_workspace
from training import fit as fit_module
from training.dataset import OnDiskFrame, build_training_set
from training.distributed import dask_client, train_distributed, training_frame
from training.train import fit_final, plan_for, resolve

pytestmark = pytest.mark.slow


def test_dask_refit_matches_single_machine(
    source_data: SourceData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        home=copy_workspace(source_data, tmp_path / "ws", features=True),
        mlflow_tracking_uri=None,
        train_threads=1,
    )
    spec, options = resolve(settings, "churn", **PLAN)
    ts = build_training_set(settings, "churn", spec.label, plan_for(settings, spec, **options))
    monkeypatch.setattr(fit_module, "MAX_ROUNDS", 60)
    single = fit_final(settings, ts, spec, trials=2)  # the search and the refit on one machine
    # What `portrait train` runs with distributed_refit on: the same search without the refit, then the refit
    # by LightGBM's distributed training on a local Dask cluster of 2 workers.
    on = settings.model_copy(update={"distributed_refit": True, "dask_workers": 2, "dask_scheduler": None})
    distributed = fit_final(on, ts, spec, trials=2).model

    y = ts.test.label.to_numpy()
    auc_single = roc_auc_score(y, single.model.score(ts.test))
    auc_distributed = roc_auc_score(y, distributed.score(ts.test))
    assert auc_single > 0.6
    assert abs(auc_distributed - auc_single) < 0.03, (auc_single, auc_distributed)
    rounds = single.model.metadata["fit"]["rounds"]  # same search and seed: the same rounds
    fitting = len(ts.train) + len(ts.validation)
    assert distributed.metadata["fit"]["distributed"] == {"workers": 2, "rounds": rounds, "rows": fitting}
    assert distributed.booster.num_trees() == single.model.booster.num_trees()
    # calibrated on the same held-out customers as before
    assert distributed.calibrator.coef == pytest.approx(single.model.calibrator.coef)
    assert [t for t in distributed.tiers.names] == single.model.tiers.names
    served = pickle.loads(pickle.dumps(distributed))  # what MLflow stores and serving loads
    explained = served.explain(ts.test.head(20))
    assert len(explained) == 20 and explained.reasons.map(len).gt(0).all()


def test_the_distributed_fit_gives_the_same_model_every_time(
    source_data: SourceData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LightGBM bags rows on each worker from the blocks it holds and ranks the workers in the order Dask
    names their blocks (from a set): where the scheduler put the blocks, and that order, changed the model from
    one fit to the next (4 fits, 4 models). One block per worker, ranked in block order: one model."""
    settings = Settings(
        home=copy_workspace(source_data, tmp_path / "ws", features=True),
        mlflow_tracking_uri=None,
        train_threads=1,
        dask_workers=2,
    )
    spec, options = resolve(settings, "churn", **PLAN)
    ts = build_training_set(settings, "churn", spec.label, plan_for(settings, spec, **options))
    monkeypatch.setattr(fit_module, "MAX_ROUNDS", 30)
    outcome = fit_final(settings, ts, spec, trials=1)
    params = {**outcome.params, "bagging_fraction": 0.7, "bagging_freq": 1, "feature_fraction": 0.8}
    scores = []
    with dask_client(settings) as client:
        for _ in range(3):  # 5 partitions, 2 workers; new block keys (and their set order) at every fit
            booster, _rows = train_distributed(client, training_frame(ts, 5), outcome.model, params, 30)
            scores.append(booster.predict(outcome.model.matrix(ts.test)))
    assert all(np.array_equal(scores[0], other) for other in scores[1:])


def test_dask_refit_reads_every_row_of_a_frame_on_disk(
    source_data: SourceData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cluster profile's refit input: a frame on disk in several Parquet files (as Spark's executors write
    it), of which the training process holds only a sample. The refit reads every row before the test
    snapshot from the files, not the sample; dask-expr fuses such files into fewer partitions when it
    optimises the read, which the refit must survive."""
    settings = Settings(
        home=copy_workspace(source_data, tmp_path / "ws", features=True),
        mlflow_tracking_uri=None,
        train_threads=1,
        distributed_refit=True,
        dask_workers=2,
    )
    spec, options = resolve(settings, "churn", **PLAN)
    ts = build_training_set(settings, "churn", spec.label, plan_for(settings, spec, **options))
    everything = pd.concat([ts.train, ts.validation, ts.test], ignore_index=True)
    folder = tmp_path / "frame"
    folder.mkdir()
    shuffled = everything.sample(frac=1.0, random_state=0)
    for i, rows in enumerate(np.array_split(np.arange(len(shuffled)), 8)):
        shuffled.iloc[rows].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    fitting = len(ts.train) + len(ts.validation)
    keep = ts.train.customer_id.drop_duplicates().iloc[::2]  # the process holds half the customers
    ts.train = ts.train[ts.train.customer_id.isin(keep)].reset_index(drop=True)
    ts.on_disk = OnDiskFrame(folder, rows=len(everything), sampled_share=0.5)
    monkeypatch.setattr(fit_module, "MAX_ROUNDS", 20)

    model = fit_final(settings, ts, spec, trials=1).model
    assert model.metadata["fit"]["distributed"]["rows"] == fitting > len(ts.train) + len(ts.validation)
    assert roc_auc_score(ts.test.label, model.score(ts.test)) > 0.6
    ts.discard()
    assert not folder.exists()


def test_local_dask_cluster_does_not_steal_work(tmp_path: Path) -> None:
    """LightGBM's port set-up leaves a socket on each worker for a follow-up task; stealing that task hangs the
    refit (``training.distributed.dask_client``), so the local cluster runs without work stealing."""
    with dask_client(Settings(home=tmp_path, dask_workers=1)) as client:
        stealing = client.run_on_scheduler(lambda dask_scheduler: "stealing" in dask_scheduler.extensions)
        workers = len(client.scheduler_info()["workers"])
    assert workers == 1 and stealing is False

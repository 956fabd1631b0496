"""Training beyond one machine: the final refit of a tag model with LightGBM's distributed training on Dask.

How a tag model trains at scale (see :mod:`training.fit`):

1. **Search** stays on one machine: every Optuna trial fits on a random sample of at most
   ``fit.SEARCH_ROWS`` (200,000) training rows and early-stops on the validation customers. Ranking
   hyper-parameters needs a representative sample, not every row, and many small trials parallelise better
   than a few distributed ones.
2. **Refit** on every labelled row before the test snapshot is the one step whose cost grows with the data.
   :func:`refit_model` runs it with ``lightgbm.DaskLGBMClassifier`` / ``DaskLGBMRegressor``: each Dask worker
   holds a share of the rows and LightGBM's data-parallel tree learner builds every tree from the workers'
   histograms, so no machine holds the whole frame. It keeps what the single-machine refit does: the best
   parameters, the number of rounds it would run, the calibration fitted on the held-out customers, the
   value factor of a log-link model and tiers at the quantiles of the latest training snapshot's scores.
   The result is the same :class:`portrait.model.TagModel`, served as any other. The same rows in the same
   order give the same model: each worker gets one consecutive block of them, ranked in block order.

The rows reach the workers as a Dask DataFrame (``dask.dataframe.read_parquet`` of a training frame a Spark
job wrote -- ``RetrievalJob.to_spark_df()`` of the Spark offline store -- or ``from_pandas`` for a frame in
memory); each partition is turned into the model's matrix on its worker (:meth:`TagModel.matrix`, the
conversion training and serving use). :func:`dask_client` connects to ``settings.dask_scheduler`` or starts a
local cluster of ``settings.dask_workers`` single-threaded worker processes.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from portrait.lgbm_internals import ranks_in_block_order
from portrait.model import TagModel
from portrait.settings import Settings
from training.dataset import TrainingSet
from training.fit import FitOutcome, scale_log_link, tier_thresholds
from training.specs import ModelSpec

if TYPE_CHECKING:
    import dask.array as da
    import dask.dataframe as dd
    import lightgbm as lgb
    from distributed import Client

logger = logging.getLogger(__name__)

LABEL = "label"


@contextmanager
def dask_client(settings: Settings) -> Iterator[Client]:
    """A Dask client: on ``settings.dask_scheduler``, else on a local cluster of ``settings.dask_workers``
    worker processes (one thread each, no dashboard) that is closed afterwards."""
    from distributed import Client, LocalCluster

    if settings.dask_scheduler:
        with Client(settings.dask_scheduler) as client:
            yield client
        return
    import dask

    # No work stealing: LightGBM's Dask setup (lightgbm.dask._assign_open_ports_to_workers) opens a socket in a
    # task on each worker and reads its port in a follow-up task that is not pinned to that worker, so another
    # worker may steal it under load; the socket then has to travel ("cannot pickle 'socket' object") and the
    # refit hangs (seen once in the suite on 2 busy cores). A remote scheduler keeps its own setting.
    with (
        dask.config.set({"distributed.scheduler.work-stealing": False}),
        LocalCluster(
            n_workers=settings.dask_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # No dashboard; the scheduler's HTTP server (health, metrics) on a free loopback port instead of
            # its default 8787, which warned "Port 8787 is already in use" when two trainings ran at once.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _matrix_frame(part: pd.DataFrame, model: TagModel) -> pd.DataFrame:
    """One partition as the model's feature matrix (categorical codes included) plus its label."""
    x = pd.DataFrame(model.matrix(part), columns=model.features, index=part.index)
    x[LABEL] = part[LABEL].to_numpy(dtype="float64")
    return x


def _estimator_params(params: dict[str, Any], rounds: int) -> dict[str, Any]:
    """LightGBM's training parameters (``fit``'s ``lgb.train`` dictionary) for a Dask estimator: the same
    parameters, ``rounds`` trees and the data-parallel tree learner. No thread count: LightGBM's Dask
    estimators use each worker's own (one per worker on the local cluster) and warn about any other."""
    out = {k: v for k, v in params.items() if k not in ("num_threads", "metric", "n_jobs")}
    return out | {"n_estimators": rounds, "tree_learner": "data"}


def train_distributed(
    client: Client,
    frame: dd.DataFrame,
    model: TagModel,
    params: dict[str, Any],
    rounds: int,
) -> tuple[lgb.Booster, int]:
    """A booster of ``rounds`` trees fitted on every row of ``frame`` (the model's features and ``label``)
    by LightGBM's distributed training on the client's workers, and the number of rows it was fitted on."""
    from lightgbm import DaskLGBMClassifier, DaskLGBMRegressor

    meta = pd.DataFrame(
        {**{f: pd.Series(dtype="float64") for f in model.features}, LABEL: pd.Series(dtype="float64")}
    )
    # Optimised first, so that its partitions are the ones that run: dask-expr fuses the Parquet files of a
    # filtered read_parquet into fewer partitions when it optimises, and an unoptimised frame's npartitions
    # (one per file) then disagrees with the lengths computed (seen at 1M rows: "4 != 8", or lost keys).
    matrix = frame.optimize().map_partitions(_matrix_frame, model, meta=meta)
    # One float64 array (features, then the label) with known row counts, held by the workers: x and y are
    # slices of it, so their chunks line up.
    array = _one_block_per_worker(client, matrix.optimize().to_dask_array(lengths=True))
    n = len(model.features)
    x, y = array[:, :n], array[:, n]
    estimator_type = DaskLGBMClassifier if model.kind == "classifier" else DaskLGBMRegressor
    estimator = estimator_type(client=client, **_estimator_params(params, rounds))
    categorical = [i for i, f in enumerate(model.features) if f in model.categories]
    with warnings.catch_warnings():
        # Always raised by LightGBM's Dask estimators for their own default n_jobs=None, whatever one passes
        # (LightGBM issue #6797, open): the per-worker thread count is the one used, as intended.
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored", category=UserWarning)
        with ranks_in_block_order(client):
            estimator.fit(x, y, feature_name=list(model.features), categorical_feature=categorical)
    return estimator.booster_, int(array.shape[0])


def _one_block_per_worker(client: Client, array: da.Array) -> da.Array:
    """``array`` in as many consecutive row blocks as there are workers, block ``i`` computed on the ``i``-th
    worker (in address order).

    LightGBM's distributed training draws its bagging sample on each worker from the rows it holds, in the
    order of its blocks, and ranks the workers in the order of the blocks it is given; where the scheduler
    happened to put several blocks per worker changed the model from one run to the next (4 runs on 4
    blocks, 4 models). One block per worker, block ``i`` at rank ``i``: the same rows in the same order give
    the same model."""
    import dask.array as da

    workers = sorted(client.scheduler_info().get("workers", {}))
    n = int(array.shape[0])
    k = max(1, min(len(workers), n))
    bounds = [n * i // k for i in range(k + 1)]
    array = array.rechunk({0: tuple(b - a for a, b in pairwise(bounds)), 1: -1})
    if len(workers) < 2:
        return client.persist(array)
    blocks = array.to_delayed().ravel()
    placed = [
        client.compute(block, workers=[worker], allow_other_workers=False)
        for block, worker in zip(blocks, workers, strict=False)
    ]
    return da.concatenate(
        [
            da.from_delayed(future, shape=(rows, array.shape[1]), dtype=array.dtype)
            for future, rows in zip(placed, array.chunks[0], strict=True)
        ]
    )


def training_frame(ts: TrainingSet, npartitions: int) -> dd.DataFrame:
    """The refit's rows (training and validation customers, as :func:`training.fit.fit` refits on) as a
    Dask DataFrame: every labelled row before the test snapshot, read from the Parquet files Spark wrote when
    the set has them (:attr:`training.dataset.TrainingSet.on_disk`; the in-memory frames may be a sample),
    else the in-memory frames in ``npartitions`` partitions."""
    import dask.dataframe as dd

    columns = [*ts.features, LABEL]
    if ts.on_disk is not None:
        test = pd.Timestamp(ts.plan.test)
        rows = dd.read_parquet(str(ts.on_disk.folder), columns=[*columns, "event_timestamp"])
        rows = rows[rows.event_timestamp != test]
        return rows[columns]
    rows = pd.concat([ts.train, ts.validation], ignore_index=True)
    return dd.from_pandas(rows[columns], npartitions=npartitions)


def refit_model(
    client: Client,
    outcome: FitOutcome,
    ts: TrainingSet,
    spec: ModelSpec,
    frame: dd.DataFrame | None = None,
) -> TagModel:
    """The single-machine fit's final model refitted on the Dask workers (see the module docstring).

    ``outcome`` is :func:`training.fit.fit`'s result (parameters, rounds, calibration, value factor);
    ``frame`` the rows to refit on (default: :func:`training_frame` of ``ts``), ``ts`` gives the latest
    training snapshot the tiers are set on.
    """
    started = time.perf_counter()
    fitted = outcome.model.metadata.get("fit", {})
    if fitted.get("refit", True):  # the rounds the single-machine refit ran
        rounds = int(fitted.get("rounds") or outcome.best_iteration)
    else:  # fitted without a refit: the best round, scaled to the rows as that refit would have
        everything = len(ts.train) + len(ts.validation)
        rounds = max(1, round(outcome.best_iteration * everything / max(len(ts.train), 1)))
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    rows = frame if frame is not None else training_frame(ts, workers)
    # A copy of the single-machine model without its caches (its pickled state): features, codes, calibrator.
    model = copy.copy(outcome.model)
    model.metadata = copy.deepcopy(outcome.model.metadata)
    booster, fitted_rows = train_distributed(client, rows, model, outcome.params, rounds)
    if model.kind == "regressor":
        booster = scale_log_link(booster, float(fitted.get("total_factor", 1.0)))
    model.booster_text = booster.model_to_string()
    model.__post_init__()  # the new booster is built from its text on first use
    latest = pd.concat([ts.train, ts.validation])
    latest = latest[latest.event_timestamp == latest.event_timestamp.max()]
    model.tiers = tier_thresholds(model.score(latest), spec.tiers)
    model.metadata["feature_importance_gain"] = dict(
        zip(model.features, np.round(booster.feature_importance("gain"), 3).tolist(), strict=True)
    )
    model.metadata["fit"] = {
        **fitted,
        "refit": True,
        "rounds": rounds,
        "distributed": {"workers": workers, "rounds": rounds, "rows": fitted_rows},
    }
    logger.info(
        "%s refitted on %d rows by %d Dask workers (%d rounds) in %.1f s",
        model.name,
        fitted_rows,
        workers,
        rounds,
        time.perf_counter() - started,
    )
    return model


__all__ = ["dask_client", "refit_model", "train_distributed", "training_frame"]

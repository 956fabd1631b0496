"""Big batches: the models' numeric work runs sliced on worker threads and gives what one thread gives."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

import serving.tagger as tagger_module
from features import store as fs
from portrait.registry import connect
from serving.tagger import Tagger
from tests.serving.conftest import SNAPSHOT


def test_many_customers_on_worker_threads_match_one_thread_and_offline(served, monkeypatch):
    tagger = Tagger(served)
    ids = sorted(fs.feature_table_ids(served))[:600]
    assert len(ids) >= 2 * tagger_module.PARALLEL_ROWS  # two slices of the pooled path per model
    pooled = tagger.tags([*ids, "nobody"])
    monkeypatch.setattr(tagger_module, "PARALLEL_ROWS", 10**9)  # the same call, one model at a time
    serial = tagger.tags([*ids, "nobody"])
    assert [t.model_dump() for t in pooled] == [t.model_dump() for t in serial]
    assert not pooled[-1].found and all(t.found for t in pooled[:-1])

    connect(served)
    frames = [
        pd.read_parquet(served.features_dir / view / f"snapshot={SNAPSHOT:%Y%m%dT%H%M%S}.parquet")
        for view in ("customer_profile", "customer_transactions", "customer_behaviour")
    ]
    offline = frames[0]
    for f in frames[1:]:
        offline = offline.merge(f.drop(columns=["event_timestamp", "created_timestamp"]), on="customer_id")
    offline = offline.set_index("customer_id").loc[ids].reset_index()
    for name, tag, key in (("churn", "churn", "probability"), ("clv", "value", "predicted_value")):
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion").unwrap_python_model()
        expected = model.score(offline)
        got = np.array([getattr(getattr(t, tag), key) for t in pooled[:-1]])
        np.testing.assert_allclose(got, np.maximum(expected, 0) if name == "clv" else expected, rtol=1e-6)

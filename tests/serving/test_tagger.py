"""Big batches: the models' numeric work runs sliced on worker threads and gives what one thread gives."""

from __future__ import annotations

import mlflow
import numpy as np

import serving.tagger as tagger_module
from features import store as fs
from portrait.registry import connect
from serving.tagger import Tagger
from tests.serving.conftest import offline_features


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
    offline = offline_features(served, ids)
    for name, tag, key in (("churn", "churn", "probability"), ("clv", "value", "predicted_value")):
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion").unwrap_python_model()
        expected = model.score(offline)
        got = np.array([getattr(getattr(t, tag), key) for t in pooled[:-1]])
        np.testing.assert_allclose(got, np.maximum(expected, 0) if name == "clv" else expected, rtol=1e-6)

"""Pre-computed serving vectors: the fast read gives the per-view read's values, and is never trusted stale."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from features import store as fs
from portrait.settings import Settings
from serving.tagger import Tagger
from tests.serving.conftest import SNAPSHOT

IDS = ["C0000001", "C0000002", "nobody", "C0000003", "C0000010", "C0000002"]


def _same_columns(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        if x.dtype == object or y.dtype == object:
            assert [None if v != v else v for v in x] == [None if v != v else v for v in y], name
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def _per_view(tagger: Tagger, ids: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    index, tagger._vector_index = tagger._vector_index, None  # noqa: SLF001 - force Feast's per-view read
    try:
        return tagger.read_known(ids)
    finally:
        tagger._vector_index = index  # noqa: SLF001


@pytest.fixture
def copied(served_home: Path, tmp_path: Path) -> Settings:
    """A private copy of the served workspace (its online store and registry may be changed)."""
    home = tmp_path / "ws"
    shutil.copytree(served_home / "data" / "feast", home / "data" / "feast")
    (home / "mlruns").symlink_to(served_home / "mlruns")
    (home / "data" / "features").symlink_to(served_home / "data" / "features")
    return Settings(home=home)


def test_serving_service_covers_every_tag_model(served):
    store = fs.feature_store(served)
    serving = {
        f"{p.name}:{f.name}" for p in store.get_feature_service(fs.SERVING_SERVICE).feature_view_projections
        for f in p.features
    }  # fmt: skip
    for model in ("churn", "conversion", "clv"):
        service = fs.service_for(store, model)
        assert {f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features} <= serving


def test_vector_read_gives_the_per_view_values(served):
    tagger = Tagger(served)
    assert tagger._read_vectors(IDS) is not None  # noqa: SLF001 - the fast path is the one taken
    fast, fast_found = tagger.read_known(IDS)
    slow, slow_found = _per_view(tagger, IDS)
    assert fast_found.tolist() == slow_found.tolist() == [True, True, False, True, True, True]
    _same_columns(fast, slow)
    assert (fast["_features_ts"] >= int(SNAPSHOT.timestamp())).all()


def test_customers_without_a_vector_are_read_from_the_views(copied):
    store = fs.feature_store(copied)
    online = store._get_provider().online_store  # noqa: SLF001
    online.update(store.config, [fs.vector_view()], [], [], [], partial=True)  # drop every vector
    assert fs.precompute_vectors(copied, store, customer_ids=["C0000001", "C0000003", "nobody"]) == 2
    tagger = Tagger(copied)
    fast = tagger._read_vectors(IDS)  # noqa: SLF001
    assert fast is not None and fast[1].tolist() == [True, False, False, True, False, False]
    known, found = tagger.read_known(IDS)
    slow, slow_found = _per_view(tagger, IDS)
    assert found.tolist() == slow_found.tolist() == [True, True, False, True, True, True]
    _same_columns(known, slow)


def test_stale_vectors_are_not_trusted_until_rebuilt(copied):
    store = fs.feature_store(copied)
    before = Tagger(copied)
    assert before._read_vectors(IDS) is not None  # noqa: SLF001
    # A materialization outside Portrait (plain Feast) changes the online store but not the vectors.
    store.materialize_incremental(end_date=SNAPSHOT + timedelta(days=2))
    stale = Tagger(copied)
    assert stale._read_vectors(IDS) is None  # noqa: SLF001 - another materialization: not trusted
    known, found = stale.read_known(IDS)
    _same_columns(known, _per_view(stale, IDS)[0])
    assert found.sum() == 5
    fs.precompute_vectors(copied, store)
    rebuilt = Tagger(copied)
    assert rebuilt._read_vectors(IDS) is not None  # noqa: SLF001
    _same_columns(rebuilt.read_known(IDS)[0], known)


def test_vectors_of_another_feature_list_are_not_trusted(copied):
    from feast.protos.feast.core.PrecomputedFeatureVector_pb2 import PrecomputedFeatureVector
    from feast.protos.feast.types.Value_pb2 import Value

    store = fs.feature_store(copied)
    online = store._get_provider().online_store  # noqa: SLF001
    (blob,) = online.read_precomputed_vectors(
        store.config, fs.SERVING_SERVICE, store.project, [fs.entity_key("C0000001")]
    )
    vector = PrecomputedFeatureVector.FromString(blob)
    shuffled = PrecomputedFeatureVector(
        feature_names=list(reversed(vector.feature_names)), values=list(reversed(vector.values))
    )
    row = {fs.VECTOR_FEATURE: Value(bytes_val=shuffled.SerializeToString())}
    online.online_write_batch(
        store.config, fs.vector_view(), [(fs.entity_key("C0000001"), row, SNAPSHOT, None)], progress=None
    )
    tagger = Tagger(copied)
    assert tagger._read_vectors(["C0000001"]) is None  # noqa: SLF001
    _same_columns(tagger.read_known(["C0000001"])[0], _per_view(tagger, ["C0000001"])[0])


def test_cli_materialize_rebuilds_the_vectors(copied, monkeypatch):
    from typer.testing import CliRunner

    from portrait.cli import app

    store = fs.feature_store(copied)
    store.materialize_incremental(end_date=SNAPSHOT + timedelta(days=2))  # plain Feast: vectors go stale
    assert Tagger(copied)._read_vectors(IDS) is None  # noqa: SLF001
    monkeypatch.setenv("PORTRAIT_HOME", str(copied.home))
    result = CliRunner().invoke(app, ["features", "materialize", "--end", "2025-01-04"])
    assert result.exit_code == 0, result.output
    assert "2,500 serving vectors pre-computed" in result.output
    assert Tagger(copied)._read_vectors(IDS) is not None  # noqa: SLF001 - current again

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


def _write_vector(settings: Settings, customer_id: str, vector) -> None:
    from feast.protos.feast.types.Value_pb2 import Value

    store = fs.feature_store(settings)
    online = store._get_provider().online_store  # noqa: SLF001
    row = {fs.VECTOR_FEATURE: Value(bytes_val=vector.SerializeToString())}
    online.online_write_batch(
        store.config, fs.vector_view(), [(fs.entity_key(customer_id), row, SNAPSHOT, None)], progress=None
    )


def _vector(settings: Settings, customer_id: str):
    from feast.protos.feast.core.PrecomputedFeatureVector_pb2 import PrecomputedFeatureVector

    store = fs.feature_store(settings)
    (blob,) = fs.read_vectors(store, [fs.entity_key(customer_id)])
    return PrecomputedFeatureVector.FromString(blob)


def test_vectors_are_packed_in_the_layout_of_the_serving_service(copied):
    store = fs.feature_store(copied)
    layout = fs.VectorLayout.of(store.get_feature_service(fs.SERVING_SERVICE))
    assert (
        "customer_profile__region" in layout.other and "customer_transactions__recency_days" in layout.numeric
    )
    vector = _vector(copied, "C0000001")
    assert not vector.feature_names  # the names are in the sentinel only
    block = np.frombuffer(vector.values[0].bytes_val, dtype="<f8")
    assert len(block) == len(layout.numeric) and len(vector.values) == 1 + len(layout.other)
    per_view, _ = _per_view(Tagger(copied), ["C0000001"])
    expected = [per_view[name.split("__", 1)[1]][0] for name in layout.numeric]
    np.testing.assert_array_equal(block, np.asarray(expected, dtype=float))
    assert np.isfinite(block).sum() > len(block) // 2
    marker = _vector(copied, fs.SIGNATURE_ID)
    assert layout.signature_of(marker) == fs.materialization_signature(
        store, store.get_feature_service(fs.SERVING_SERVICE)
    )


def test_vectors_of_another_layout_are_not_trusted(copied):
    store = fs.feature_store(copied)
    layout = fs.VectorLayout.of(store.get_feature_service(fs.SERVING_SERVICE))
    signature = layout.signature_of(_vector(copied, fs.SIGNATURE_ID))
    swapped = fs.VectorLayout(tuple(reversed(layout.numeric)), layout.other)  # same features, other order
    _write_vector(copied, fs.SIGNATURE_ID, swapped.marker(signature))
    tagger = Tagger(copied)
    assert tagger._read_vectors(IDS) is None  # noqa: SLF001
    _same_columns(tagger.read_known(IDS)[0], _per_view(tagger, IDS)[0])
    _write_vector(copied, fs.SIGNATURE_ID, layout.marker(signature))
    assert Tagger(copied)._read_vectors(IDS) is not None  # noqa: SLF001 - the right layout again


def test_a_vector_of_another_size_is_not_trusted(copied):
    from feast.protos.feast.core.PrecomputedFeatureVector_pb2 import PrecomputedFeatureVector

    vector = _vector(copied, "C0000002")
    vector.values[0].bytes_val = vector.values[0].bytes_val[:-8]  # one number short
    _write_vector(copied, "C0000002", vector)
    tagger = Tagger(copied)
    assert tagger._read_vectors(IDS) is None  # noqa: SLF001
    _write_vector(copied, "C0000002", PrecomputedFeatureVector())  # no values at all
    assert tagger._read_vectors(IDS) is None  # noqa: SLF001
    assert tagger._read_vectors(["C0000001"]) is not None  # noqa: SLF001 - the others are fine
    _same_columns(tagger.read_known(IDS)[0], _per_view(tagger, IDS)[0])


def test_an_interrupted_precompute_is_not_trusted(copied):
    store = fs.feature_store(copied)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fs.precompute_vectors(copied, store, batch_size=100, progress=interrupt)
    tagger = Tagger(copied)
    assert tagger._read_vectors(IDS) is None  # noqa: SLF001 - half the vectors could be of another build
    _same_columns(tagger.read_known(IDS)[0], _per_view(tagger, IDS)[0])
    fs.precompute_vectors(copied, store)
    assert Tagger(copied)._read_vectors(IDS) is not None  # noqa: SLF001


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

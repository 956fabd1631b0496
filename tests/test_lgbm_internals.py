"""What ``portrait.lgbm_internals`` takes from LightGBM's private API, pinned: a LightGBM upgrade that moves
or changes it fails here rather than in serving."""

from __future__ import annotations

import ctypes

import lightgbm as lgb
import numpy as np
import pytest

from portrait import lgbm_internals, model
from portrait.lgbm_internals import RowLeaves


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1500, 6))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take each split's default direction
    y = (np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 3]) + rng.normal(size=len(x)) > 0).astype(int)
    return lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 15, "min_data_in_leaf": 5},
        lgb.Dataset(x, y),
        num_boost_round=40,
    )


def test_the_private_names_it_uses_exist() -> None:
    from lightgbm import basic

    assert isinstance(basic._LIB, ctypes.CDLL)
    for name in lgbm_internals.C_FUNCTIONS:
        assert callable(getattr(basic._LIB, name)), name
    assert basic._C_API_PREDICT_LEAF_INDEX == 2
    assert basic._C_API_DTYPE_FLOAT64 == 1
    assert isinstance(basic._c_str("num_threads=1"), ctypes.c_char_p)
    basic._safe_call(0)  # 0 is success
    with pytest.raises(lgb.basic.LightGBMError):
        basic._safe_call(-1)


def test_booster_handle_is_the_c_handle(booster: lgb.Booster) -> None:
    handle = lgbm_internals.booster_handle(booster)
    assert isinstance(handle, ctypes.c_void_p) and handle.value
    # The handle answers a C API call: the number of trees' classes, as the public API reports it.
    out = ctypes.c_int()
    lgbm_internals._safe_call(lgbm_internals._LIB.LGBM_BoosterGetNumClasses(handle, ctypes.byref(out)))
    assert out.value == booster.num_model_per_iteration() == 1


def test_fast_single_row_leaves_equal_lightgbms_predict(booster: lgb.Booster) -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(size=(25, 6))
    x[rng.random(x.shape) < 0.2] = np.nan
    leaves = RowLeaves(booster, 6)
    expected = booster.predict(x, pred_leaf=True)
    assert expected.shape == (25, booster.num_trees()) and expected.max() > 3  # leaves to tell apart
    got = leaves(x)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(leaves(x[3:4]), expected[3:4])  # one row, the serving case
    np.testing.assert_array_equal(
        leaves(x.astype(np.float32)), booster.predict(x.astype(np.float32), pred_leaf=True)
    )
    with pytest.raises(ValueError, match="6 features"):
        leaves(x[:, :5])


def test_model_uses_the_adapter() -> None:
    assert model.RowLeaves is RowLeaves


def test_lightgbm_dask_ranks_workers_in_the_order_who_has_answers() -> None:
    """What :func:`portrait.lgbm_internals.ranks_in_block_order` relies on in ``lightgbm.dask._train``."""
    import inspect

    from lightgbm import dask as lgb_dask

    source = inspect.getsource(lgb_dask._train)
    assert "who_has = client.who_has(parts)" in source
    assert "worker_map[next(iter(workers))].append(key_to_part_dict[key])" in source
    assert "for worker, list_of_parts in worker_map.items()" in source  # ranks, in this order
    assert "worker_address_to_port.items()" in source  # the machines list, in worker_map's order


def test_who_has_answers_in_the_order_asked_while_ranks_are_in_block_order() -> None:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(lambda i: i, range(40))
        client.gather(futures)
        with lgbm_internals.ranks_in_block_order(client):
            answer = client.who_has(futures)
            assert list(answer) == [f.key for f in futures]
            assert list(client.who_has(futures[::-1])) == [f.key for f in futures[::-1]]
        assert "who_has" not in vars(client)  # the class's method again
        assert sorted(client.who_has(futures)) == sorted(f.key for f in futures)

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

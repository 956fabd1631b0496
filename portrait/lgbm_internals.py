"""The one door to LightGBM's private API: everything Portrait takes from LightGBM beyond its public Python API.

LightGBM's C library has a single-row fast path (``LGBM_BoosterPredictForMatSingleRowFastInit`` makes a "fast
config" once, ``LGBM_BoosterPredictForMatSingleRowFast`` then only walks the trees), but the Python package
wraps none of it. :class:`RowLeaves` calls it through what the package itself uses for its C calls:

* ``lightgbm.basic._LIB``: the package's ``ctypes`` handle of ``lib_lightgbm``;
* ``lightgbm.basic._safe_call`` (raises ``LightGBMError`` with the library's last error) and ``_c_str``;
* the C API constants ``_C_API_PREDICT_LEAF_INDEX`` and ``_C_API_DTYPE_FLOAT64``;
* ``Booster._handle``: the booster's C handle, which every C API call takes.

And one piece of how ``lightgbm.dask`` works inside (:func:`ranks_in_block_order`): its private ``_train`` asks
``client.who_has(parts)`` where the training blocks are and ranks the workers, and orders each worker's blocks, in
the order of that answer, which Distributed builds from a set (so the order changes between runs).

The LightGBM version is pinned by the lock file; ``tests/test_lgbm_internals.py`` checks these names and that the
fast path's leaves are ``Booster.predict(x, pred_leaf=True)``'s, so an upgrade that moves them fails there.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightgbm as lgb
import numpy as np
from lightgbm.basic import (
    _C_API_DTYPE_FLOAT64,
    _C_API_PREDICT_LEAF_INDEX,
    _LIB,
    _c_str,
    _safe_call,
)

C_FUNCTIONS = (
    "LGBM_BoosterPredictForMatSingleRowFastInit",
    "LGBM_BoosterPredictForMatSingleRowFast",
    "LGBM_FastConfigFree",
)
"""The C API functions :class:`RowLeaves` calls."""


def booster_handle(booster: lgb.Booster) -> ctypes.c_void_p:
    """The booster's C handle (``Booster._handle``)."""
    return booster._handle  # noqa: SLF001 - the handle every C API call takes


class RowLeaves:
    """Leaf indices of one row at a time through LightGBM's single-row fast path.

    ``Booster.predict`` sets up a predictor on every call before the trees are walked: for one customer's row
    that set-up costs more than the walk itself. The fast config keeps the set-up, made once here; each call
    then only walks the trees. One config serves one thread at a time (a lock serialises calls).
    """

    def __init__(self, booster: lgb.Booster, n_features: int) -> None:
        self._booster = booster  # the config points into it
        self._predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._check = _safe_call
        self._config = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster_handle(booster),
                ctypes.c_int(_C_API_PREDICT_LEAF_INDEX),
                ctypes.c_int(0),  # first iteration
                ctypes.c_int(-1),  # every iteration
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                _c_str("num_threads=1"),
                ctypes.byref(self._config),
            )
        )
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self._config)
        self._n_features = n_features
        self._out = np.empty(booster.num_trees(), dtype=np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64()
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(rows, trees)`` leaf indices of ``x``, as ``Booster.predict(x, pred_leaf=True)`` gives them."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self._n_features:
            raise ValueError(f"expected rows of {self._n_features} features, got shape {x.shape}")
        out = np.empty((len(x), len(self._out)), dtype=np.int64)
        with self._lock:
            for i, row in enumerate(x):
                self._check(
                    self._predict(
                        self._config,
                        row.ctypes.data_as(ctypes.c_void_p),
                        ctypes.byref(self._out_len),
                        self._out_ptr,
                    )
                )
                out[i] = self._out
        return out


@contextmanager
def ranks_in_block_order(client: Any) -> Iterator[None]:
    """While open, ``client.who_has(futures)`` answers in the order of ``futures``: ``lightgbm.dask``'s
    ``_train`` then ranks the workers by their first training block and keeps each worker's blocks in order.

    Distributed's ``Client.who_has`` collects the keys in a set, so its answer's order (and with it the ranks
    LightGBM gives the workers, and the features whose bins each worker computes from its rows) changed from
    one process to the next. Only this client instance is affected, only for the duration."""
    original = client.who_has

    def ordered(futures: Any = None, **kwargs: Any) -> Any:
        answer = original(futures, **kwargs)
        if futures is None:
            return answer
        keys = [f.key for f in futures]
        ordered_answer = type(answer)({k: answer[k] for k in keys if k in answer})
        ordered_answer.update(answer)  # anything else it holds, after
        return ordered_answer

    client.who_has = ordered
    try:
        yield
    finally:
        del client.who_has  # the class's method again

"""Value-for-value comparison of frames computed by two engines."""

from __future__ import annotations

import numpy as np
import pandas as pd

RTOL = 1e-9
ATOL = 1e-9


def _is_time(series: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(series)


def assert_same_values(left: pd.DataFrame, right: pd.DataFrame, keys: list[str], label: str) -> None:
    """Same columns in the same order, same rows (by ``keys``), numbers equal within a float tolerance
    (an integer column equals a float column holding the same numbers), times equal as UTC instants,
    everything else exactly; a missing value matches only a missing value."""
    assert list(left.columns) == list(right.columns), f"{label}: columns differ"
    assert len(left) == len(right), f"{label}: {len(left)} rows against {len(right)}"
    left, right = (
        f.assign(**{k: pd.to_datetime(f[k], utc=True) for k in keys if _is_time(f[k])})
        .sort_values(keys)
        .reset_index(drop=True)
        for f in (left, right)
    )
    for column in left.columns:
        a, b = left[column], right[column]
        where = f"{label}.{column}"
        if _is_time(a) or _is_time(b):
            x, y = pd.to_datetime(a, utc=True), pd.to_datetime(b, utc=True)
            differ = ~((x == y) | (x.isna() & y.isna()))
            assert not differ.any(), f"{where}: {x[differ].head(3).tolist()} != {y[differ].head(3).tolist()}"
        elif pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            x, y = a.to_numpy(dtype="float64", na_value=np.nan), b.to_numpy(dtype="float64", na_value=np.nan)
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=where)
        else:
            x = [None if pd.isna(v) else v for v in a.astype(object)]
            y = [None if pd.isna(v) else v for v in b.astype(object)]
            assert x == y, where

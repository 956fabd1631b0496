"""Third-party deprecation warnings a Portrait user cannot act on, silenced by message (nothing else).

* ibis 12's DuckDB backend (the pipeline, Feast's offline store) calls DuckDB 2.0's deprecated
  ``fetch_arrow_table()``; nothing of Portrait's does.
* MLflow's SQL tracking store uses SQLAlchemy's deprecated ``noload`` loader strategy.

Feast 0.67 puts ``simplefilter("once", DeprecationWarning)`` in front of every filter when it is imported,
which would let these through again: :func:`quiet_third_party` is called once by the CLI at start and again
by :func:`features.store.feature_store` after Feast is imported (the filters go first; calling it twice adds
nothing twice).
"""

from __future__ import annotations

import warnings

_MESSAGES = (
    r"fetch_arrow_table\(\) is deprecated",
    r"The ``noload`` loader strategy is deprecated",
)


def quiet_third_party() -> None:
    """Put the ignore filters for :data:`_MESSAGES` first (again, if a library has put others before them)."""
    for message in _MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)

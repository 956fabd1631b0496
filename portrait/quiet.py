"""Third-party deprecation warnings a Portrait user cannot act on, silenced by message (nothing else).

* ibis 12's DuckDB backend (the pipeline, Feast's offline store) calls DuckDB 2.0's deprecated
  ``fetch_arrow_table()``; nothing of Portrait's does.
* MLflow's SQL tracking store uses SQLAlchemy's deprecated ``noload`` loader strategy.
* Feast warns (``RuntimeWarning``) at every use of its Spark offline store and Spark source that they are
  experimental, alpha features. The README's cluster section says so once instead; the Feast version is
  pinned and ``tests/cluster`` checks the store against the DuckDB one.

And one log line: on PostgreSQL, MLflow 3's ``log_model`` copies the run's metrics of that step to the logged
model; the copies collide with the run's rows in the metrics table (its key has no model id), MLflow catches the
``IntegrityError`` and inserts what is new, and psycopg, whose pipeline held the failed insert, logs a WARNING
"error ignored terminating <psycopg.Pipeline ...>: pipeline aborted" at every training. The error it ignored
has been handled; a real one propagates on its own. :class:`_HandledPipelineError` drops that line only.

Feast 0.67 puts ``simplefilter("once", DeprecationWarning)`` in front of every filter when it is imported,
which would let these through again: :func:`quiet_third_party` is called once by the CLI at start and again
by :func:`features.store.feature_store` after Feast is imported (the filters go first; calling it twice adds
nothing twice).
"""

from __future__ import annotations

import logging
import warnings

_MESSAGES = (
    r"fetch_arrow_table\(\) is deprecated",
    r"The ``noload`` loader strategy is deprecated",
)
_NOTICES = (
    r"The spark offline store is an experimental feature",
    r"The spark data source API is an experimental feature",
)


class _HandledPipelineError(logging.Filter):
    """Drops psycopg's "error ignored terminating <psycopg.Pipeline ...>" (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("error ignored terminating"))


_PIPELINE_FILTER = _HandledPipelineError()


def quiet_third_party() -> None:
    """Put the ignore filters for :data:`_MESSAGES` and :data:`_NOTICES` first (again, if a library has put others before them),
    and drop psycopg's handled-pipeline-error line."""
    for message in _MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
    for message in _NOTICES:
        warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
    psycopg_logger = logging.getLogger("psycopg")
    if _PIPELINE_FILTER not in psycopg_logger.filters:
        psycopg_logger.addFilter(_PIPELINE_FILTER)

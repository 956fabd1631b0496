"""Third-party warnings and log lines a Portrait user cannot act on, silenced by message (nothing else).

* ibis 12's DuckDB backend (the pipeline, Feast's offline store) calls DuckDB 2.0's deprecated
  ``fetch_arrow_table()``; nothing of Portrait's does.
* MLflow's SQL tracking store uses SQLAlchemy's deprecated ``noload`` loader strategy.
* ArviZ (imported by PyMC-Marketing for the purchase model) warns once a day per machine (``FutureWarning``,
  stamped in its cache folder) that its next major version will change its API; Portrait does not call ArviZ.
* BentoML 1.4's SDK calls two APIs Pydantic 2.11 deprecated (``BaseModel.__get_pydantic_core_schema__`` when it
  builds the service's IO models, ``model_fields`` on an instance at a process's first request).
  ``serving.service`` calls :func:`quiet_third_party` after its imports (Feast's among them), before its
  BentoML decorators build those models.
* Feast warns (``RuntimeWarning``) at every use of its Spark offline store and Spark source that they are
  experimental, alpha features. The README's cluster section says so once instead; the Feast version is
  pinned and ``tests/cluster`` checks the store against the DuckDB one.

And one log line: on PostgreSQL, MLflow 3's ``log_model`` copies the run's metrics of that step to the logged
model; the copies collide with the run's rows in the metrics table (its key has no model id), MLflow catches the
``IntegrityError`` and inserts what is new, and psycopg, whose pipeline held the failed insert, logs a WARNING
"error ignored terminating <psycopg.Pipeline ...>: pipeline aborted" at every training. The error it ignored
has been handled; a real one propagates on its own. :class:`_HandledPipelineError` drops that line only.

MLflow logs its own INFO lines (database set-up, "Detected uv project" at every logged model) through a handler
of its own, and draws a progress bar for every model it loads: :func:`quiet_third_party` sets
``MLFLOW_LOGGING_LEVEL=WARNING`` and ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false`` unless the environment
already says otherwise (``portrait --verbose`` keeps MLflow's INFO lines).

At exit, DuckDB 2.0's bindings (nanobind) print "nanobind: leaked 28 instances ... 84 functions" when a DuckDB
connection is still alive at interpreter shutdown. Feast's DuckDB offline store executes its ibis expressions on
ibis's *default* backend, which ibis creates on first use and keeps in ``ibis.options.default_backend`` until the
process ends: :func:`quiet_third_party` registers (once) :func:`_release_ibis_default_backend`
to disconnect it at exit (if ibis was loaded at all).

Feast 0.67 puts ``simplefilter("once", DeprecationWarning)`` in front of every filter when it is imported,
which would let these through again: :func:`quiet_third_party` is called once by the CLI at start and again
by :func:`features.store.feature_store` and :func:`portrait.registry.connect`, after Feast may have been
imported (the filters go first; calling it twice adds nothing twice).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import warnings

_MESSAGES = (
    r"fetch_arrow_table\(\) is deprecated",
    r"The ``noload`` loader strategy is deprecated",
    # Evidently's import (`portrait retrain`, drift checks): its legacy test helpers, a docstring of its own,
    # and the Litestar UI server it imports.
    r"numpy.core is deprecated and has been renamed to numpy._core",
    r"invalid escape sequence",
    r"Call to deprecated function 'Dependency'",
    r"Use of deprecated class 'DependencyKwarg'",
    # BentoML's bento build config (imported with its HTTP server) names a pathspec pattern pathspec renamed.
    r"GitWildMatchPattern \('gitwildmatch'\) is deprecated",
    # Tornado (under BentoML's process manager, circus) when the server stops on Ctrl-C.
    r"add_callback_from_signal is deprecated",
)
_FUTURE = (r"\s*ArviZ is undergoing a major refactor",)  # its message starts with a line break
_MLFLOW_DEFAULTS = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
_MLFLOW_VERBOSE = {"MLFLOW_LOGGING_LEVEL": "INFO", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "true"}
_EXIT_HOOK: list[bool] = []
_SERVER_DEPRECATIONS = (
    r"The `__get_pydantic_core_schema__` method of the `BaseModel` class is deprecated",
    r"Accessing the 'model_fields' attribute on the instance is deprecated",
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


def quiet_third_party(*, verbose: bool = False) -> None:
    """Put the ignore filters for :data:`_MESSAGES`, :data:`_FUTURE` and :data:`_NOTICES` first (again, if a
    library has put others before them), drop psycopg's handled-pipeline-error line and, unless ``verbose``,
    quiet MLflow's INFO lines and progress bars (:data:`_MLFLOW_DEFAULTS`, where the environment is silent)."""
    for name, value in (_MLFLOW_VERBOSE if verbose else _MLFLOW_DEFAULTS).items():
        os.environ.setdefault(name, value)  # the first call decides (the CLI's, with its --verbose)
    if "mlflow" in sys.modules:  # imported already: MLflow read the level when it configured its logger
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    if not _EXIT_HOOK:
        atexit.register(_release_ibis_default_backend)
        _EXIT_HOOK.append(True)
    for message in _FUTURE:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    for message in (*_MESSAGES, *_SERVER_DEPRECATIONS):
        warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
    for message in _NOTICES:
        warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
    psycopg_logger = logging.getLogger("psycopg")
    if _PIPELINE_FILTER not in psycopg_logger.filters:
        psycopg_logger.addFilter(_PIPELINE_FILTER)


def _release_ibis_default_backend() -> None:
    """Disconnect ibis's default backend (see the module doc), so no DuckDB connection outlives the interpreter."""
    ibis = sys.modules.get("ibis")
    backend = getattr(getattr(ibis, "options", None), "default_backend", None)
    if backend is None:
        return
    try:
        backend.disconnect()
    except Exception as exc:  # noqa: BLE001 - at exit: nothing to do but say it
        logging.getLogger(__name__).debug("ibis default backend: %s", exc)
    ibis.options.default_backend = None

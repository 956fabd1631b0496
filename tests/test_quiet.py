"""What portrait.quiet silences, and that it silences nothing else."""

from __future__ import annotations

import logging
import warnings

import pytest

from portrait.quiet import quiet_third_party


def test_psycopgs_handled_pipeline_error_line_is_dropped_and_other_lines_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_third_party()
    quiet_third_party()  # twice adds nothing twice
    psycopg = logging.getLogger("psycopg")
    assert len([f for f in psycopg.filters if type(f).__name__ == "_HandledPipelineError"]) == 1
    with caplog.at_level(logging.WARNING, logger="psycopg"):
        psycopg.warning(
            "error ignored terminating %r: %s", "<psycopg.Pipeline [INERROR]>", "pipeline aborted"
        )
        psycopg.warning("connection failed: %s", "server closed the connection")
    assert [r.getMessage() for r in caplog.records] == ["connection failed: server closed the connection"]


def test_only_the_listed_deprecations_are_ignored() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn(
            "fetch_arrow_table() is deprecated, use to_arrow_table()", DeprecationWarning, stacklevel=1
        )
        warnings.warn("something else is deprecated", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def test_feasts_spark_alpha_notices_are_ignored_and_other_runtime_warnings_kept() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn(
            "The spark offline store is an experimental feature in alpha development.",
            RuntimeWarning,
            stacklevel=1,
        )
        warnings.warn(
            "The spark data source API is an experimental feature in alpha", RuntimeWarning, stacklevel=1
        )
        warnings.warn("overflow encountered in exp", RuntimeWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["overflow encountered in exp"]

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


def test_command_line_shows_portraits_info_and_other_libraries_warnings_only() -> None:
    from portrait.cli import _OwnInfo

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "message", None, None)

    quiet, verbose = _OwnInfo(verbose=False), _OwnInfo(verbose=True)
    assert quiet.filter(record("training.train", logging.INFO))
    assert quiet.filter(record("portrait", logging.INFO))
    assert not quiet.filter(record("pytensor.link.c.lazylinker_c", logging.INFO))  # "Compiling new CVM"
    assert not quiet.filter(record("arviz.preview", logging.INFO))  # "arviz_base not installed"
    assert quiet.filter(record("pytensor", logging.WARNING))
    assert verbose.filter(record("pytensor.link.c.lazylinker_c", logging.INFO))


def test_feasts_materialize_prints_are_logged_not_written_to_stdout(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from features.store import _feast_prints

    with caplog.at_level(logging.DEBUG, logger="features.store"), _feast_prints():
        print("Materializing \x1b[1m\x1b[32m1\x1b[0m feature views")  # noqa: T201 - Feast's kind of output
        print("[WARNING] ODFV x materialization: No join keys found")  # noqa: T201
    assert capsys.readouterr().out == ""
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.DEBUG, "feast: Materializing 1 feature views") in logged
    assert (logging.WARNING, "feast: [WARNING] ODFV x materialization: No join keys found") in logged


def test_ibis_default_backend_is_disconnected_at_exit() -> None:
    import ibis

    from portrait.quiet import _EXIT_HOOK, _release_ibis_default_backend

    quiet_third_party()
    assert _EXIT_HOOK  # registered once
    ibis.memtable({"a": [1, 2]}).execute()  # what Feast's DuckDB offline store does: the default backend
    backend = ibis.options.default_backend
    assert backend is not None
    _release_ibis_default_backend()
    assert ibis.options.default_backend is None
    with pytest.raises(Exception):  # noqa: B017, PT011 - disconnected: DuckDB refuses (its own error type)
        backend.con.execute("SELECT 1")


def test_service_import_shows_no_pydantic_deprecations_from_bentoml() -> None:
    """BentoML's SDK builds its IO models with APIs Pydantic 2.11 deprecated, at the service's import in every
    server process; the service puts the filters first after Feast's import and before its models are built."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import serving.service"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "PydanticDeprecatedSince211" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_a_drift_check_shows_no_deprecations_from_evidentlys_import() -> None:
    """Evidently's import warns about numpy.core (its legacy test helpers) and Litestar's deprecations (the UI
    server it imports); after Feast's import made DeprecationWarnings show once, `portrait retrain` printed
    them. The drift comparison puts the filters first before importing Evidently."""
    import subprocess
    import sys

    code = (
        "import feast, numpy as np, pandas as pd\n"
        "from portrait.settings import Settings\n"
        "from training.drift import compare\n"
        "frame = pd.DataFrame({'x': np.arange(50.0)})\n"
        "compare(frame, frame, ['x'], Settings())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_arvizs_first_warning_of_the_day_is_not_shown(tmp_path) -> None:  # noqa: ANN001 - fixture
    """ArviZ (under PyMC-Marketing, for the purchase model) warns at its first import of the day on a machine,
    with a message that starts with a line break; `make demo` printed it on a fresh machine. A cache folder of
    its own gives the first import of the day; without the filters the warning shows (the control)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("PYTHONWARNINGS", None)

    def first_import(quiet: bool) -> str:
        code = (
            "from portrait.quiet import quiet_third_party\nquiet_third_party()\n" if quiet else ""
        ) + "import arviz\n"  # what PyMC-Marketing imports
        (tmp_path / "cache").mkdir(exist_ok=True)
        for stamp in (tmp_path / "cache").rglob("daily_warning"):
            stamp.unlink()
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        return result.stderr

    assert "ArviZ is undergoing" in first_import(quiet=False)
    assert "Warning" not in first_import(quiet=True)

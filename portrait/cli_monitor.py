"""Monitoring commands of the ``portrait`` command line: ``monitor``, ``cards`` and ``retrain``.

:func:`register` adds them to the main Typer app (``portrait/cli.py`` calls it once); :func:`log_scored`
is what `portrait score` calls to log its scores, and :func:`print_cards` what `portrait models` can
call to show the quality cards. Like ``portrait/cli.py``, nothing heavy is imported before a command runs,
and bad or missing input gets one line and a non-zero exit code (2: bad input, 3: a server unavailable).
This module does not import ``portrait.cli`` (which imports it), so either can be imported first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from portrait.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

console = Console(stderr=True)
out = Console()

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _settings() -> Settings:
    settings = get_settings()
    settings.ensure_dirs()
    return settings


def _names(model: str, *, tag_only: bool) -> list[str]:
    from portrait import catalogue

    pool = [e.name for e in catalogue.tag_models()] if tag_only else catalogue.names()
    names = pool if model == "all" else [model]
    if names[0] not in pool:
        kind = "tag model" if tag_only else "model"
        raise _fail(f"unknown {kind} {model!r}; choose one of {', '.join([*pool, 'all'])}")
    return names


def _need_data(settings: Settings) -> None:
    if not (settings.clean_dir / "transactions.parquet").exists():
        raise _fail("no validated data in data/clean: run `portrait data validate` (or `data synth`) first")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---- hooks for other commands --------------------------------------------------------------------------


def log_scored(settings: Settings, frame: pd.DataFrame) -> int:
    """Log the tags `portrait score` wrote (source ``batch``); one line, and exit 3 when the log's
    database is unreachable."""
    return _log_frames(settings, lambda: iter([frame]))


def log_scored_files(settings: Settings, outputs: list[Path]) -> int:
    """Log the tags `portrait score` wrote on Spark, one partition file at a time (the driver never holds
    every customer): the Parquet folder if there is one, else the CSV folder."""
    import pandas as pd

    parquet = [p for p in outputs if p.suffix != ".csv"]
    files = sorted(parquet[0].glob("*.parquet")) if parquet else sorted(outputs[0].glob("*.csv"))

    def frames() -> Iterator[pd.DataFrame]:
        for path in files:
            if path.suffix == ".parquet":
                yield pd.read_parquet(path)
            else:
                yield pd.read_csv(path, dtype={"customer_id": str}, keep_default_na=False, na_values=[""])

    return _log_frames(settings, frames)


def _log_frames(settings: Settings, frames: Callable[[], Iterator[pd.DataFrame]]) -> int:
    """Log tags frames as one scoring (one ``scored_at``); one line when the log cannot take them."""
    from portrait import predlog
    from portrait.backends import BackendUnavailable

    written, scored_at = 0, datetime.now(UTC)
    try:
        for frame in frames():
            written += predlog.log_tags(settings, frame, source="batch", scored_at=scored_at)
    except BackendUnavailable as exc:
        raise _fail(f"scores written, but not logged: {exc}", EXIT_UNAVAILABLE) from None
    except ValueError as exc:
        raise _fail(f"scores written, but not logged: {exc}") from None
    console.print(f"{written:,} predictions logged -> {predlog.location(settings)}")
    return written


def print_cards(settings: Settings, client: object = None) -> None:
    """The quality cards as a table (what `portrait cards` prints; `portrait models` may add it)."""
    from portrait.predlog import quality_cards

    cards = quality_cards(settings, client)
    if not any(card.version for card in cards.values()):
        out.print("no champions yet, so no quality cards: run `portrait train all`")
        return
    table = Table(title="quality cards")
    for col in ("model", "version", "grade", "evidence", "date", "headline", "calibration", "actual by tier"):
        table.add_column(col)
    for card in cards.values():
        tiers = ", ".join(f"{t.group} {_fmt(t.actual)}" for t in card.tiers) or "-"
        table.add_row(
            card.model,
            card.version or "-",
            card.grade or "-",
            card.evidence,
            card.evidence_date.isoformat() if card.evidence_date else "-",
            f"{card.headline_metric} {_fmt(card.headline)}",
            _fmt(card.calibration_ratio, 2),
            tiers,
        )
    out.print(table)


# ---- commands ------------------------------------------------------------------------------------------

ModelArg = Annotated[str, typer.Argument(help="A tag model of the catalogue, or all.")]


def monitor_cmd(
    model: ModelArg = "all",
    drift: Annotated[bool, typer.Option("--drift/--no-drift", help="Also check drift (Evidently).")] = True,
) -> None:
    """Realised performance of the logged scores whose horizon has passed, drift of each champion, and
    the quality cards; logged to MLflow and saved in data/reports/monitor.json."""
    from portrait import catalogue, predlog
    from portrait.backends import BackendUnavailable
    from training.drift import check_drift
    from training.monitor import monitor

    names = _names(model, tag_only=True)
    settings = _settings()
    _need_data(settings)
    try:
        report = monitor(settings, names)
        drifts = check_drift(settings, names) if drift else {}
    except BackendUnavailable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    shown = [e for e in report.evaluations if e.model in names]
    if shown:
        table = Table(title="realised performance")
        for col in ("model", "version", "scored", "customers", "headline", "test", "calibration", "top lift"):
            table.add_column(col)
        for e in shown:
            metric = catalogue.get(e.model).headline_metric
            table.add_row(
                e.model,
                e.version,
                e.scoring_date.isoformat(),
                f"{e.customers:,}",
                f"{metric} {_fmt(e.metrics.get(metric))}",
                _fmt(e.test_metrics.get(metric)),
                _fmt(e.metrics.get("calibration_ratio"), 2),
                _fmt(e.metrics.get("lift_top_decile"), 2),
            )
        out.print(table)
    else:
        console.print(
            "no logged scores with a passed horizon yet"
            + ("" if predlog.read(settings).shape[0] else ": run `portrait score` to log some")
        )
    for p in (p for p in report.pending if p.model in names):
        console.print(
            f"{p.model} v{p.version} scored {p.scoring_date}: {p.customers:,} pending until {p.due}"
        )
    if drifts:
        table = Table(title="drift (reference -> newest snapshot)")
        for col in ("model", "version", "snapshots", "drifted", "score drift", "most drifted"):
            table.add_column(col)
        for d in drifts.values():
            top = sorted((f for f in d.features if f.drifted), key=lambda f: -f.score)[:4]
            score = d.prediction
            table.add_row(
                d.model,
                d.version,
                f"{d.reference_snapshot} -> {d.current_snapshot}",
                f"{d.drifted_features}/{d.n_features} ({d.drift_share:.0%})",
                "-" if score is None else f"{score.score:.3f}{' drifted' if score.drifted else ''}",
                ", ".join(f"{f.column} {f.score:.2f}" for f in top) or "-",
            )
        out.print(table)
    print_cards(settings)
    console.print(f"report -> {predlog.report_path(settings)}")


def cards_cmd() -> None:
    """Quality cards of the champions: a grade from realised figures (or, before any horizon has passed,
    from the test split), the actual rate per tier and the date of the evidence."""
    from portrait.backends import BackendUnavailable

    try:
        print_cards(_settings())
    except BackendUnavailable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None


def retrain_cmd(
    model: Annotated[str, typer.Argument(help="A catalogue model, or all.")] = "all",
    if_needed: Annotated[
        bool,
        typer.Option(
            "--if-needed", help="Only models whose drift or realised decay crosses the settings' thresholds."
        ),
    ] = False,
    trials: Annotated[int, typer.Option(help="Optuna trials per model.")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Time budget per model in seconds.")] = None,
) -> None:
    """Retrain models (through the champion gate); with --if-needed only those the evidence asks for, and
    say per model why or why not."""
    from portrait.backends import BackendUnavailable
    from training.retrain import retrain

    if trials < 1:
        raise _fail(f"--trials must be at least 1 (got {trials})")
    names = _names(model, tag_only=False)
    settings = _settings()
    _need_data(settings)
    try:
        results = retrain(settings, names, if_needed=if_needed, trials=trials, timeout_s=timeout)
    except BackendUnavailable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    table = Table(title="retraining" + (" on evidence" if if_needed else ""))
    for col in ("model", "verdict", "why", "result"):
        table.add_column(col)
    for r in results:
        verdict = "error" if r.error else ("retrained" if r.retrained else "kept")
        if r.outcome is not None:
            result = f"v{r.outcome.version}: {r.outcome.decision.reason}"
        else:
            result = r.error or "-"
        table.add_row(r.model, verdict, "\n".join(r.reasons), result)
    out.print(table)
    failed = [r for r in results if r.error]
    if failed:
        raise _fail("not retrained: " + "; ".join(f"{r.model}: {r.error}" for r in failed))


def register(app: typer.Typer) -> None:
    """Add ``monitor``, ``cards`` and ``retrain`` to the ``portrait`` app."""
    app.command("monitor")(monitor_cmd)
    app.command("cards")(cards_cmd)
    app.command("retrain")(retrain_cmd)


__all__ = ["cards_cmd", "log_scored", "monitor_cmd", "print_cards", "register", "retrain_cmd"]

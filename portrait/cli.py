"""The ``portrait`` command line. Every command has ``--help``.

Heavy libraries are imported inside the commands, so ``portrait --help`` is quick and importing this
module does no work.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from portrait.settings import Settings, get_settings


class _OneLineErrors(TyperGroup):
    """Turns what bad or missing input raises deep inside a command (a file that is not Parquet, a store
    that was never filled, data that does not fit) into one ``error:`` line and a non-zero exit.

    Only the exception types such input produces are caught (value, runtime, OS, DuckDB, MLflow and backend
    errors); anything else is a bug and keeps its traceback. Commands still report what they can foresee
    themselves, with the fix.
    """

    def invoke(self, ctx: click.Context) -> object:
        from portrait.files import close_scratch

        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            code = _expected_error(exc)
            if code is None:
                raise
            logger.debug("command failed", exc_info=True)
            raise _fail(_first_line(exc), code) from None
        finally:
            close_scratch()  # the command's temporary files (see _settings)


def _expected_error(exc: BaseException) -> int | None:
    """The exit code for an error bad input produces, or None for anything else."""
    import sys

    from portrait.backends import BackendUnavailable

    if isinstance(exc, BackendUnavailable) or _database_error(exc):
        return EXIT_UNAVAILABLE
    expected: list[type[BaseException]] = [ValueError, RuntimeError, OSError, LookupError]
    for module, name in (("duckdb", "Error"), ("mlflow.exceptions", "MlflowException")):
        if module in sys.modules:  # only a library that is loaded can have raised
            expected.append(getattr(sys.modules[module], name))
    if isinstance(exc, KeyError) and not isinstance(exc, tuple(t for t in expected if t is not LookupError)):
        return None  # a missing dict key is a bug, not input
    return EXIT_BAD_INPUT if isinstance(exc, tuple(expected)) else None


def _database_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a database server that cannot be reached (SQLAlchemy or psycopg)."""
    import sys

    kinds = [
        getattr(sys.modules[module], name)
        for module, name in (("sqlalchemy.exc", "OperationalError"), ("psycopg", "OperationalError"))
        if module in sys.modules  # only a library that is loaded can have raised
    ]
    return bool(kinds) and isinstance(exc, tuple(kinds))


def _first_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    from portrait.files import describe_write_error

    if (disk := describe_write_error(exc)) is not None:  # a full, read-only or forbidden disk
        return disk
    if _database_error(exc):  # the server's address, never its password
        cause = getattr(exc, "orig", None) or exc
        text = str(cause).strip().splitlines()
        line = text[0] if text else type(cause).__name__
        return "database unreachable: " + re.sub(r"://[^/@\s]+@", "://***@", line)  # no credentials
    if isinstance(exc, ValidationError):  # e.g. a PORTRAIT_* setting: each field and why, never its value
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        return f"invalid {exc.title}: {problems}"
    text = str(exc).strip().splitlines()
    return f"{text[0] if text else type(exc).__name__}"


app = typer.Typer(
    cls=_OneLineErrors,
    help="Portrait: predictive tags and lookalike audiences for customer-profile platforms.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(
    help="Raw data: generate, load real datasets, validate against the contract.", no_args_is_help=True
)
features_app = typer.Typer(help="Feature tables and the Feast feature store.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")

console = Console(stderr=True)
out = Console()
logger = logging.getLogger("portrait")

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """Configure logging once for the command line."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):  # ours (not a test's capture handler); once per handler
            for previous in [f for f in handler.filters if isinstance(f, _OwnInfo)]:
                handler.removeFilter(previous)
            handler.addFilter(_OwnInfo(verbose=verbose))
    for noisy in ("feast", "mlflow", "alembic", "bentoml", "urllib3", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow warns on every model it logs that it cannot read pip's version (uv environments have no pip)
    # and that a Python object is pickled (Portrait's artefacts are, on purpose): nothing a user can act on.
    for chatty in ("mlflow.utils.environment", "mlflow.pyfunc"):
        logging.getLogger(chatty).setLevel(logging.ERROR)
    from portrait.quiet import quiet_third_party

    quiet_third_party(verbose=verbose)


OWN_PACKAGES = frozenset({"portrait", "features", "training", "serving", "__main__"})
"""Loggers whose INFO lines the command line shows; other libraries' only from WARNING (or with ``--verbose``)."""


class _OwnInfo(logging.Filter):
    """Let through Portrait's own INFO lines and other libraries' warnings and errors (PyTensor's "Compiling
    new CVM", ArviZ's "arviz_base not installed" and the like are not for a Portrait user); ``--verbose``
    lets everything through."""

    def __init__(self, *, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            self.verbose or record.levelno >= logging.WARNING or record.name.partition(".")[0] in OWN_PACKAGES
        )


def _settings(*outputs: Path) -> Settings:
    """The settings of a command that writes: the workspace's folders exist, what killed commands left
    behind (temporary files here and beside ``outputs``) is removed, and this command's scratch folder is
    open (removed when the command ends; see ``_OneLineErrors.invoke``). An output that cannot be written is
    refused here, before any work."""
    from portrait.files import check_writable, clean_start

    for output in outputs:
        if problem := check_writable(output):
            raise _fail(problem)
    settings = get_settings()
    settings.ensure_dirs()
    clean_start(settings.data_root, settings.scratch_root, outputs)
    return settings


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: <message>`` on one line, whatever the width (brackets are not read as markup), and
    return the exit to raise."""
    from rich.text import Text

    console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    return typer.Exit(code)


def _parse_day(value: str) -> datetime:
    try:
        return (
            datetime.fromisoformat(value).replace(tzinfo=UTC)
            if "T" not in value
            else datetime.fromisoformat(value).astimezone(UTC)
        )
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from exc


# ---------------------------------------------------------------------------------------------- data
def _data_fail(message: str) -> typer.Exit:
    return _fail(message, EXIT_BAD_INPUT)


def _print_validation(report) -> None:  # noqa: ANN001 - features.validate.ValidationReport
    table = Table(title="validation")
    for col in ("table", "rows read", "accepted", "quarantined", "by reason", "note"):
        table.add_column(col)
    for t in report.tables.values() if hasattr(report, "tables") else report:
        reasons = ", ".join(f"{k}={v:,}" for k, v in t.by_reason.items()) or "-"
        table.add_row(
            t.table, f"{t.rows_read:,}", f"{t.accepted:,}", f"{t.quarantined:,}", reasons, t.note or "-"
        )
    out.print(table)


def _validate(settings: Settings, now: datetime | None = None):  # noqa: ANN202
    from features.validate import ContractError, validate_workspace

    try:
        report = validate_workspace(settings, now=now)
    except ContractError as exc:
        raise _data_fail(str(exc)) from None
    _print_validation(report)
    return report


@data_app.command("synth")
def data_synth(
    customers: Annotated[int, typer.Option(help="Number of customers.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    end: Annotated[str | None, typer.Option(help="End of history (YYYY-MM-DD); default: today.")] = None,
    years: Annotated[float, typer.Option(help="Years of history.")] = 2.0,
) -> None:
    """Generate a synthetic workspace (customers, transactions, events + ground truth), then validate it."""
    from datetime import timedelta

    from features.synth import SynthConfig, generate

    settings = _settings()
    end_ts = _parse_day(end) if end else datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    config = SynthConfig(
        n_customers=customers, seed=seed, start=end_ts - timedelta(days=round(365 * years)), end=end_ts
    )
    with console.status(f"generating {customers:,} customers"):
        result = generate(config, settings.raw_dir)
    console.print(f"generated {result.counts} in {result.seconds:.1f}s -> {settings.raw_dir}")
    _validate(settings, now=end_ts)


@data_app.command("validate")
def data_validate() -> None:
    """Validate the raw inputs: valid rows to data/clean, the rest to data/quarantine with a reason."""
    _validate(_settings())


@data_app.command("load")
def data_load(
    dataset: Annotated[str, typer.Argument(help="online-retail or cdnow")],
    path: Annotated[
        Path | None, typer.Option(help="File to read; default: the shared datasets folder.")
    ] = None,
) -> None:
    """Map a real public dataset onto the contract (into data/raw), then validate it."""
    from features.loaders import load_cdnow, load_online_retail
    from features.validate import ContractError

    settings = _settings()
    files = {"online-retail": "online_retail.parquet", "cdnow": "cdnow_master.txt"}
    if dataset not in files:
        raise _data_fail(f"unknown dataset {dataset!r}; choose one of {', '.join(files)}")
    if path is not None and not path.is_file():
        raise _data_fail(f"--path {path} {'is not a file' if path.exists() else 'does not exist'}")
    source = path or (settings.data_dir / files[dataset] if settings.data_dir else None)
    if source is None or not Path(source).exists():
        raise _data_fail(f"{files[dataset]} not found; pass --path or set PORTRAIT_DATA_DIR")
    loader = load_online_retail if dataset == "online-retail" else load_cdnow
    try:
        report = loader(Path(source), settings.raw_dir)
    except ContractError as exc:
        raise _data_fail(f"{exc} Is it the {dataset} dataset ({files[dataset]})?") from None
    out.print_json(report.model_dump_json())
    _validate(settings)


def _print_import(report) -> None:  # noqa: ANN001 - features.importer.ImportReport
    table = Table(title="import" + (" (append)" if report.append else ""))
    table.add_column("input", no_wrap=True)
    for col in ("rows read", "set aside", "merged", "already there", "added", "rows in file"):
        table.add_column(col)
    for t in report.tables.values():
        set_aside = ", ".join(f"{k}={v:,}" for k, v in t.set_aside.items()) or "-"
        read = f"{t.rows_read:,}" if t.kind == "source" else "-"
        table.add_row(
            t.table,
            read,
            set_aside,
            f"{t.merged:,}",
            f"{t.already_present:,}",
            f"{t.added:,}",
            f"{t.rows_written:,}",
        )
    out.print(table)
    for t in report.tables.values():
        out.print(f"{t.table}: {t.source}", soft_wrap=True, highlight=False, markup=False)
        if t.set_aside_path:
            console.print(f"{t.table}: rows the mapping could not read -> {t.set_aside_path}", soft_wrap=True)


def _print_preview(report) -> None:  # noqa: ANN001 - features.importer.ImportReport
    for name, t in report.tables.items():
        if t.kind == "empty":
            out.print(f"{name}: {t.source}")
            continue
        read = f" ({t.rows_read:,} rows read)" if t.kind == "source" else ""
        out.print(f"{name}: {t.source}{read}", soft_wrap=True, highlight=False, markup=False)
        mapping = Table()
        for col in ("contract column", "filled from"):
            mapping.add_column(col, overflow="fold")
        for column, how in t.columns.items():
            mapping.add_row(column, how)
        out.print(mapping)
        rows = report.samples.get(name, [])
        if rows:
            sample = Table(title=f"{name}: first {len(rows)} mapped rows", title_justify="left")
            for column in rows[0]:
                sample.add_column(column, overflow="fold")
            for row in rows:
                sample.add_row(*("" if v is None else v for v in row.values()))
            out.print(sample)
    if not report.problems:
        out.print("no problems found")
    for problem in report.problems:
        mark = "[bold red]error:[/]" if problem.fatal else "[yellow]warning:[/]"
        out.print(f"{mark} {problem.line()}", soft_wrap=True, highlight=False)
    out.print("dry run: nothing was written")


@data_app.command("import")
def data_import(
    mapping: Annotated[Path, typer.Argument(help="Mapping file (YAML or TOML) that describes your inputs.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print mapped sample rows and every problem; write nothing.")
    ] = False,
    append: Annotated[
        bool,
        typer.Option(
            "--append", help="Add a batch to data/raw; rows already there are skipped (idempotent)."
        ),
    ] = False,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="TABLE=PATH: read this file for an input instead (e.g. a daily batch); repeatable.",
        ),
    ] = None,
    sample: Annotated[int, typer.Option(min=0, help="Sample rows per input shown by --dry-run.")] = 5,
) -> None:
    """Import your own customers, transactions and events (CSV, Parquet or SQL) as described by a mapping
    file into data/raw, then validate them. See README, "Your own data"."""
    from features.importer import MappingError, import_mapping, load_mapping, preview_mapping, with_source

    settings = get_settings() if dry_run else _settings()  # a dry run creates nothing, not even folders
    try:
        spec = load_mapping(mapping)
        for item in source or []:
            table, sep, path = item.partition("=")
            if not sep or not path:
                raise MappingError(f"--source {item!r}: expected TABLE=PATH, e.g. transactions=orders.csv")
            spec = with_source(spec, table.strip(), Path(path))
        if dry_run:
            report = preview_mapping(settings, spec, append=append, sample=sample, mapping_name=str(mapping))
        else:
            report = import_mapping(settings, spec, append=append, mapping_name=str(mapping))
    except MappingError as exc:
        raise _data_fail(str(exc)) from None
    if dry_run:
        _print_preview(report)
        if report.fatal:
            raise typer.Exit(EXIT_BAD_INPUT)
        return
    _print_import(report)
    _validate(settings)


@data_app.command("schema")
def data_schema() -> None:
    """Print the raw-data contract as JSON Schema ("required": the columns validation demands)."""
    from features.contract import ROW_MODELS

    out.print_json(json.dumps({name: model.model_json_schema() for name, model in ROW_MODELS.items()}))


# ------------------------------------------------------------------------------------------ features
@features_app.command("build")
def features_build(
    snapshot: Annotated[
        list[str] | None, typer.Option(help="Snapshot date(s); default: the end of the data.")
    ] = None,
) -> None:
    """Compute point-in-time feature tables for the given snapshots (on Spark on the cluster profile)."""
    from features.build import build_tables, engine

    settings = _settings()
    if not (settings.clean_dir / "transactions.parquet").exists():
        raise _fail(
            "no validated data in data/clean: run `portrait data validate` on your files in data/raw "
            "(or `portrait data synth` / `portrait data load` first)"
        )
    snaps = [_parse_day(s) for s in snapshot] if snapshot else [serving_snapshot(settings)]
    with console.status(f"computing features for {len(snaps)} snapshot(s) on {engine(settings)}"):
        build = build_tables(settings, snaps)
    console.print(
        f"{build.rows:,} customer rows for {[s.date().isoformat() for s in snaps]} in {build.seconds:.1f}s"
    )


def serving_snapshot(settings: Settings) -> datetime:
    """The snapshot that describes customers 'now' (see :func:`portrait.workflow.serving_snapshot`)."""
    from portrait.workflow import serving_snapshot as snapshot

    return snapshot(settings)


@features_app.command("apply")
def features_apply() -> None:
    """Register entities, feature views and feature services in the Feast registry."""
    from features.repo import apply

    store = apply(_settings())
    console.print(
        f"applied to Feast project {store.project}: {[s.name for s in store.list_feature_services()]}"
    )


@features_app.command("materialize")
def features_materialize(
    full: Annotated[bool, typer.Option("--full", help="Reload everything instead of continuing.")] = False,
    start: Annotated[str | None, typer.Option(help="Start (YYYY-MM-DD) for a first or full load.")] = None,
    end: Annotated[str | None, typer.Option(help="End (YYYY-MM-DD); default now.")] = None,
) -> None:
    """Load the newest feature rows into the online store (incremental by default)."""
    from rich.progress import Progress

    from features.store import materialize

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("pre-computing serving vectors", total=None)
        result = materialize(
            _settings(),
            start=_parse_day(start) if start else None,
            end=_parse_day(end) if end else None,
            incremental=not full,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    console.print(
        f"materialized ({result['mode']}) {result['views']} up to {result['end']:%Y-%m-%d %H:%M}; "
        f"{result['vectors']:,} serving vectors pre-computed",
        soft_wrap=True,  # one line, whatever the width
    )


# ------------------------------------------------------------------------------------------ training
HorizonOpt = Annotated[int | None, typer.Option(help="Days ahead the model predicts (default: settings).")]
LookbackOpt = Annotated[int | None, typer.Option(help="Churn: days of the 'active buyer' window.")]
StepOpt = Annotated[int | None, typer.Option(help="Days between training snapshots.")]
NTrainOpt = Annotated[int | None, typer.Option(help="Training snapshots (at most).")]
TestDateOpt = Annotated[str | None, typer.Option(help="Out-of-time test snapshot (YYYY-MM-DD).")]


def _windows(
    horizon_days: int | None,
    lookback_days: int | None,
    step_days: int | None,
    n_train: int | None,
    test_date: str | None,
) -> dict[str, object]:
    windows: dict[str, object] = {
        "horizon_days": horizon_days,
        "lookback_days": lookback_days,
        "step_days": step_days,
        "n_train": n_train,
        "test_date": _parse_day(test_date).date() if test_date else None,
    }
    for key, value in windows.items():
        if isinstance(value, int) and value < 1:
            raise _fail(f"--{key.replace('_', '-')} must be at least 1 (got {value})")
    return {k: v for k, v in windows.items() if v is not None}


def _checks(settings: Settings, names: list[str], windows: dict[str, object]):  # noqa: ANN202
    from training.check import NoData, check_model

    try:
        return [check_model(settings, name, **(windows if name != "lookalike" else {})) for name in names]
    except NoData as exc:
        raise _fail(str(exc)) from None


def _print_checks(checks) -> None:  # noqa: ANN001 - list[training.check.ModelCheck]
    table = Table(title="data check")
    for col in ("model", "verdict", "details"):
        table.add_column(col)
    for c in checks:
        verdict = "[green]ok[/]" if c.ok else "[red]" + "\n".join(c.problems) + "[/]"
        table.add_row(c.name, verdict, ", ".join(f"{k}: {v}" for k, v in c.details.items()))
    out.print(table)
    for c in checks:
        for fix in c.fixes:
            console.print(f"[bold]{c.name}:[/] {fix}")


@data_app.command("check")
def data_check(
    model: Annotated[str, typer.Argument(help="A catalogue model or all.")] = "all",
    horizon_days: HorizonOpt = None,
    lookback_days: LookbackOpt = None,
    step_days: StepOpt = None,
    n_train: NTrainOpt = None,
    test_date: TestDateOpt = None,
) -> None:
    """Does the history cover each model's windows, and are there enough positives and negatives?"""
    names = _model_names(model)
    windows = _windows(horizon_days, lookback_days, step_days, n_train, test_date)
    checks = _checks(_settings(), names, windows)
    _print_checks(checks)
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_BAD_INPUT)


def _model_choices() -> str:
    from portrait import catalogue

    return ", ".join([*catalogue.names(), "all"])


def _model_names(model: str) -> list[str]:
    from portrait import catalogue

    names = catalogue.names() if model == "all" else [model]
    unknown = [n for n in names if n not in catalogue.names()]
    if unknown:
        raise _fail(f"unknown model {unknown[0]!r}; choose one of {_model_choices()}")
    return names


@app.command("train")
def train(
    model: Annotated[
        str, typer.Argument(help="A catalogue model (churn, conversion, clv, lookalike) or all.")
    ],
    trials: Annotated[int, typer.Option(help="Optuna trials per model.")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Time budget per model in seconds.")] = None,
    horizon_days: HorizonOpt = None,
    lookback_days: LookbackOpt = None,
    step_days: StepOpt = None,
    n_train: NTrainOpt = None,
    test_date: TestDateOpt = None,
) -> None:
    """Check the data, then train, log to MLflow, register and promote (champion only if it beats the
    current one). Models whose data check fails are skipped with what to change; the exit code is then 2."""
    from portrait import catalogue
    from training.tracking import TrackingUnavailable
    from training.train import train_named

    names = _model_names(model)
    windows = _windows(horizon_days, lookback_days, step_days, n_train, test_date)
    if windows and model == "all":
        raise _fail(
            "window options apply to one model: `portrait train MODEL --horizon-days N` (or settings)"
        )
    if trials < 1:
        raise _fail(f"--trials must be at least 1 (got {trials})")
    settings = _settings()
    from training.tracking import configure, reap_dead_runs

    try:
        client = configure(settings)  # a dead tracking store is reported before any work
    except TrackingUnavailable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None
    reap_dead_runs(client, catalogue.names())  # runs of killed `portrait train`s: FAILED, versions deleted
    checks = {c.name: c for c in _checks(settings, names, windows)}
    table = Table(title="training")
    for col in ("model", "version", "test metric", "promotion", "seconds"):
        table.add_column(col)
    skipped = []
    for name in names:
        if not checks[name].ok:
            skipped.append(checks[name])
            table.add_row(name, "-", "-", "skipped: " + "; ".join(checks[name].problems), "-")
            continue
        try:
            res = train_named(settings, name, trials=trials, timeout_s=timeout, **windows)
        except TrackingUnavailable as exc:
            raise _fail(str(exc), EXIT_UNAVAILABLE) from None
        except ValueError as exc:  # the data cannot train this model after all (e.g. an empty split)
            skipped.append(checks[name])
            table.add_row(name, "-", "-", f"failed: {exc}", "-")
            continue
        key = catalogue.get(name).headline_key
        value = res.metrics.get(key, float("nan"))
        table.add_row(
            name,
            res.version,
            f"{key.removeprefix('test_')}={value:.4f}",
            res.decision.reason,
            f"{res.seconds:.0f}",
        )
    out.print(table)
    for check in skipped:
        for fix in check.fixes:
            console.print(f"[bold]{check.name}:[/] {fix}")
    if skipped:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command("models")
def models() -> None:
    """Registered model versions, aliases and headline metrics."""
    from training.tracking import TrackingUnavailable, configure, model_table

    settings = _settings()
    try:
        client = configure(settings)
    except TrackingUnavailable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None
    frame = model_table(client)
    if frame.empty:
        console.print("no registered models yet: run `portrait train all`")
        return
    table = Table(title="registered models")
    for col in ("model", "version", "aliases", "created", "test_metric"):
        table.add_column(col)
    for row in frame.itertuples():
        table.add_row(row.model, str(row.version), row.aliases, row.created, row.test_metric)
    out.print(table)
    cli_monitor.print_cards(settings, client)  # the quality card of each champion


@app.command("promote")
def promote_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
) -> None:
    """Deliberately make a version the champion (override of the automatic decision); only a version whose
    training finished (tagged status=ready) can be."""
    from mlflow.exceptions import MlflowException

    from training.tracking import NotPromotable, TrackingUnavailable, configure, promote

    try:
        client = configure(_settings())
    except TrackingUnavailable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None
    try:
        promote(client, name, version)
    except NotPromotable as exc:
        raise _fail(f"cannot promote: {exc}") from None
    except MlflowException as exc:
        raise _fail(f"cannot promote {name} v{version}: {exc.message}") from None
    console.print(f"{name} v{version} is now the champion")


# ---------------------------------------------------------------------------------------- lookalike
@app.command("lookalike")
def lookalike_cmd(
    seed: Annotated[
        Path, typer.Option(help="CSV of seed customer ids (a customer_id column, or one id per line).")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the audience CSV.")],
    size: Annotated[int | None, typer.Option(help="Audience size (count).")] = None,
    fraction: Annotated[
        float | None, typer.Option(help="Audience size as a fraction of the population.")
    ] = None,
    exclude: Annotated[Path | None, typer.Option(help="CSV of ids never to return.")] = None,
    include_seed: Annotated[bool, typer.Option(help="Allow seed customers in the audience.")] = False,
    min_score: Annotated[float | None, typer.Option(help="Drop members scoring below this.")] = None,
    method: Annotated[str, typer.Option(help="auto, similarity or classifier.")] = "auto",
) -> None:
    """Expand a seed list into a ranked lookalike audience with the champion lookalike model."""
    import mlflow

    from portrait.lookalike import LookalikeError, expand_csv, read_seed_csv
    from portrait.registry import TrackingUnavailable, connect

    if (size is None) == (fraction is None):
        raise _fail("give exactly one of --size or --fraction")
    if not seed.exists():
        raise _fail(f"seed file {seed} does not exist")
    settings = _settings(out_file)
    try:
        connect(settings)
        model = mlflow.pyfunc.load_model("models:/lookalike@champion").unwrap_python_model()
    except TrackingUnavailable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None
    except Exception as exc:  # noqa: BLE001 - no champion registered, or a broken artefact
        raise _fail(
            f"no usable lookalike champion ({exc}); run `portrait train lookalike`", EXIT_UNAVAILABLE
        ) from None
    try:
        result = expand_csv(
            model,
            seed,
            size,
            out_file,
            fraction=fraction,
            exclude_ids=read_seed_csv(exclude) if exclude else (),
            exclude_seed=not include_seed,
            min_score=min_score,
            method=method,
        )
    except LookalikeError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{result.returned:,} customers -> {out_file} (method {result.method}; "
        f"{len(result.unknown_seed_ids):,} unknown seed ids ignored)"
    )


# ------------------------------------------------------------------------------------------- serving
@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 3000).")] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow a non-loopback address with no API keys configured (auth off for everyone who can "
            "reach it).",
        ),
    ] = False,
) -> None:
    """Start the HTTP service (BentoML) on the champion models and the online store."""
    import os
    import socket
    import sys

    settings = _settings()
    host, port = host or settings.host, port or settings.port
    insecure = insecure or settings.allow_insecure_bind
    if not settings.api_keys and not _loopback(host):
        if not insecure:
            raise _fail(
                f"refusing to serve on {host} with no API keys: anyone who can reach it could call every "
                "route; set PORTRAIT_API_KEYS, bind to 127.0.0.1, or pass --insecure",
                EXIT_BAD_INPUT,
            )
        logger.warning(
            "INSECURE: serving on %s with no API keys: auth is off for everyone who can reach this address",
            host,
        )
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:  # BentoML would fail on a busy port with a bare traceback
            probe.bind((host, port))
        except OSError as exc:
            raise _fail(
                f"cannot listen on {host}:{port} ({exc.strerror}): stop what uses it, or choose another "
                "port with --port or PORTRAIT_PORT",
                EXIT_UNAVAILABLE,
            ) from None
    os.environ["PORTRAIT_HOME"] = str(settings.home)
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_home(port)))  # metrics of its own
    if insecure:  # the service checks it too (serving.middleware.LoopbackOnlyWithoutKeys)
        os.environ["PORTRAIT_ALLOW_INSECURE_BIND"] = "true"
    args = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:Portrait",
        "--host",
        host,
        "--port",
        str(port),
    ]
    console.print(f"serving on http://{host}:{port} (Ctrl-C to stop)")
    os.execv(sys.executable, args)


def _loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is a loopback address only: a name is resolved."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


@app.command("stream")
def stream_cmd(
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Send the messages set aside after failed deliveries (data/quarantine/stream_dead.jsonl) to "
            "the stream again, then exit.",
        ),
    ] = False,
) -> None:
    """Consume events and transactions from the broker (Redis Streams, or Kafka by settings) into the
    landing zone and the real-time features; at least once, deduplicated. Stop with Ctrl-C."""
    settings = _settings()
    if replay:  # before the consumer's imports (Feast's among them): a replay only publishes
        _replay_stream(settings)
        return
    from features.repo import ensure_applied
    from features.stream import broker_url, consume
    from portrait.backends import BackendUnavailable, redact

    try:  # the real-time view the consumer pushes to is registered in a fresh workspace too
        store = ensure_applied(settings)
    except BackendUnavailable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None
    console.print(
        f"consuming {settings.events_stream!r} from {redact(broker_url(settings))} (Ctrl-C to stop)"
    )
    from redis.exceptions import RedisError

    try:
        consume(settings, store)
    except (ConnectionError, OSError, RedisError) as exc:
        raise _fail(f"broker {redact(broker_url(settings))} unreachable: {exc}", EXIT_UNAVAILABLE) from None
    except KeyboardInterrupt:
        pass
    console.print("stopped")


def _replay_stream(settings: Settings) -> None:
    from redis.exceptions import RedisError

    from features.stream import broker_url, replay
    from portrait.backends import redact

    url = broker_url(settings)
    if url.startswith("kafka://"):
        raise _fail("--replay is for Redis Streams: nothing is set aside on Kafka")
    try:
        sent = replay(settings)
    except (ConnectionError, OSError, RedisError) as exc:
        raise _fail(f"broker {redact(url)} unreachable: {exc}", EXIT_UNAVAILABLE) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{sent:,} set-aside message(s) sent again to {settings.events_stream!r}"
        if sent
        else "nothing set aside"
    )


@app.command("score")
def score(
    out_file: Annotated[Path, typer.Option("--out", help="Output file (.parquet, or .csv).")],
    csv: Annotated[bool, typer.Option("--csv", help="Also write a CSV beside the Parquet file.")] = False,
    batch: Annotated[int, typer.Option(help="Customers per online read.")] = 10_000,
    spark: Annotated[
        bool | None,
        typer.Option(
            "--spark/--no-spark",
            help="Score on Spark, in parallel partitions, from the latest feature tables (default: on the "
            "cluster profile); --out is then a folder with one file per partition.",
        ),
    ] = None,
) -> None:
    """Score every customer in the online store and write the tags for bulk sync into the tag system."""
    import pandas as pd
    from rich.progress import Progress

    from features.store import snapshots_on_disk
    from features.tables import PROFILE_VIEW, snapshot_path
    from portrait.scoring import write_tags
    from serving.tagger import Tagger, freeze_startup_objects

    settings = _settings(out_file, out_file.with_suffix(".csv"))
    if settings.profile == "cluster" if spark is None else spark:
        from features.spark import java_problem, spark_session
        from portrait.registry import TrackingUnavailable
        from portrait.scoring import ScoringError, score_on_spark

        if not settings.spark_connect_url and (problem := java_problem()):
            raise _fail(problem, EXIT_UNAVAILABLE)
        try:
            with console.status("scoring on Spark"):
                run = score_on_spark(settings, spark_session(settings), out_file, csv=csv)
        except TrackingUnavailable as exc:
            raise _fail(str(exc), EXIT_UNAVAILABLE) from None
        except ScoringError as exc:
            raise _fail(str(exc), EXIT_UNAVAILABLE if exc.unavailable else EXIT_BAD_INPUT) from None
        written = " and ".join(str(p) for p in run.paths)
        console.print(
            f"{run.customers:,} customers scored on {run.partitions} Spark partitions ({run.seconds:.0f} s) "
            f"-> {written}"
        )
        cli_monitor.log_scored_files(settings, list(run.paths))  # the prediction log `portrait monitor` reads
        return
    snaps = snapshots_on_disk(settings)
    if not snaps:
        raise _fail("no feature snapshots: run `portrait features build` and `portrait features materialize`")
    latest = snapshot_path(settings.features_dir, PROFILE_VIEW, snaps[-1])
    ids = pd.read_parquet(latest, columns=["customer_id"])["customer_id"].tolist()
    tagger = Tagger(settings)
    missing = [n for n in ("churn", "conversion", "clv") if n not in tagger.models]
    if missing:
        raise _fail("; ".join(tagger.load_errors[n] for n in missing), EXIT_UNAVAILABLE)
    freeze_startup_objects()
    parts = []
    with Progress(console=console) as progress:
        task = progress.add_task("scoring", total=len(ids))
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            parts.append(tagger.tags_frame(chunk))
            progress.advance(task, len(chunk))
    frame = pd.concat(parts, ignore_index=True)
    write_tags(frame, out_file, csv=csv)  # atomic: a killed run leaves the previous files whole
    console.print(f"{len(frame):,} customers scored -> {out_file}")
    cli_monitor.log_scored(settings, frame)  # the prediction log `portrait monitor` reads


@app.command("demo")
def demo(
    customers: Annotated[int, typer.Option(help="Synthetic customers.")] = 10_000,
    trials: Annotated[int, typer.Option(help="Optuna trials per model (small for a quick demo).")] = 3,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the API at the end.")] = True,
) -> None:
    """The main job: synthetic workspace -> features -> train and promote all models -> serve."""
    from datetime import timedelta

    from features.synth import SynthConfig
    from portrait.workflow import build_workspace

    settings = _settings()
    end = datetime(2025, 1, 1, tzinfo=UTC)
    titles = iter(["1/5 synthetic data", "2/5 features", "3/5 training", "4/5 online store"])
    build = build_workspace(
        settings,
        synth=SynthConfig(n_customers=customers, seed=42, start=end - timedelta(days=3 * 365), end=end),
        trials=trials,
        step=lambda _: console.rule(next(titles)),
    )
    counts = ", ".join(f"{n:,} {table}" for table, n in build.counts.items() if table != "truth")
    console.print(f"generated {counts}; features at {build.snapshot:%Y-%m-%d}")
    for name, res in build.outcomes.items():
        console.print(f"{name} v{res.version}: {res.decision.reason}")
    console.rule("5/5 API")
    base = f"http://{settings.host}:{settings.port}"
    out.print(
        "Try:\n"
        f"  curl -s -X POST {base}/v1/tags -H 'content-type: application/json' "
        '-d \'{"customer_ids": ["C0000001", "C0000002"]}\'\n'
        f"  curl -s -X POST {base}/v1/lookalike -H 'content-type: application/json' "
        '-d \'{"seed_ids": ["C0000001", "C0000002", "C0000003"], "size": 100}\'\n'
        f"  curl -s {base}/v1/models\n"
        f"  open {base}/ for the API docs (OpenAPI schema: {base}/docs.json)",
        soft_wrap=True,  # one command per line, whatever the terminal width, so it can be copied
    )
    if serve_after:
        serve(host=None, port=None)


from portrait import cli_monitor  # noqa: E402

cli_monitor.register(app)

from portrait import cli_audience  # noqa: E402

cli_audience.register(app)

from portrait import cli_identity  # noqa: E402

cli_identity.register(app)

if __name__ == "__main__":  # pragma: no cover
    app()

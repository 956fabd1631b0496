"""The ``portrait`` command line. Every command has ``--help``.

Heavy libraries are imported inside the commands, so ``portrait --help`` is quick and importing this
module does no work.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from portrait.settings import Settings, get_settings

app = typer.Typer(
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
    for noisy in ("feast", "mlflow", "alembic", "bentoml", "urllib3", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings() -> Settings:
    settings = get_settings()
    settings.ensure_dirs()
    return settings


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
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
def _print_validation(report) -> None:  # noqa: ANN001 - features.validate.ValidationReport
    table = Table(title="validation")
    for col in ("table", "rows read", "accepted", "quarantined", "by reason"):
        table.add_column(col)
    for t in report.tables.values() if hasattr(report, "tables") else report:
        reasons = ", ".join(f"{k}={v:,}" for k, v in t.by_reason.items()) or "-"
        table.add_row(t.table, f"{t.rows_read:,}", f"{t.accepted:,}", f"{t.quarantined:,}", reasons)
    out.print(table)


def _validate(settings: Settings, now: datetime | None = None):  # noqa: ANN202
    from features.validate import ContractError, validate_workspace

    try:
        report = validate_workspace(settings, now=now)
    except ContractError as exc:
        raise _fail(str(exc)) from None
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

    settings = _settings()
    files = {"online-retail": "online_retail.parquet", "cdnow": "cdnow_master.txt"}
    if dataset not in files:
        raise _fail(f"unknown dataset {dataset!r}; choose one of {', '.join(files)}")
    source = path or (settings.data_dir / files[dataset] if settings.data_dir else None)
    if source is None or not Path(source).exists():
        raise _fail(f"{files[dataset]} not found; pass --path or set PORTRAIT_DATA_DIR")
    loader = load_online_retail if dataset == "online-retail" else load_cdnow
    report = loader(Path(source), settings.raw_dir)
    out.print_json(report.model_dump_json())
    _validate(settings)


@data_app.command("schema")
def data_schema() -> None:
    """Print the raw-data contract as JSON Schema."""
    from features.contract import ROW_MODELS

    out.print_json(json.dumps({name: model.model_json_schema() for name, model in ROW_MODELS.items()}))


# ------------------------------------------------------------------------------------------ features
@features_app.command("build")
def features_build(
    snapshot: Annotated[
        list[str] | None, typer.Option(help="Snapshot date(s); default: the end of the data.")
    ] = None,
) -> None:
    """Compute point-in-time feature tables for the given snapshots."""
    from features.pipeline import compute_features

    settings = _settings()
    if not (settings.clean_dir / "transactions.parquet").exists():
        raise _fail("no validated data: run `portrait data synth` or `portrait data load` first")
    snaps = [_parse_day(s) for s in snapshot] if snapshot else [serving_snapshot(settings)]
    with console.status(f"computing features for {len(snaps)} snapshot(s)"):
        build = compute_features(settings.clean_dir, settings.features_dir, snaps)
    console.print(
        f"{build.rows:,} customer rows for {[s.date().isoformat() for s in snaps]} in {build.seconds:.1f}s"
    )


def serving_snapshot(settings: Settings) -> datetime:
    """The snapshot that describes customers 'now': the day after the last recorded activity."""
    from datetime import timedelta

    from training.labels import data_end
    from training.splits import floor_day

    return floor_day(data_end(settings.clean_dir)) + timedelta(days=1)


@features_app.command("apply")
def features_apply() -> None:
    """Register entities, feature views and feature services in the Feast registry."""
    from features.store import apply

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
    from features.store import materialize

    result = materialize(
        _settings(),
        start=_parse_day(start) if start else None,
        end=_parse_day(end) if end else None,
        incremental=not full,
    )
    console.print(f"materialized ({result['mode']}) {result['views']} up to {result['end']:%Y-%m-%d %H:%M}")


# ------------------------------------------------------------------------------------------ training
@app.command("train")
def train(
    model: Annotated[str, typer.Argument(help="churn, conversion, clv, lookalike or all")],
    trials: Annotated[int, typer.Option(help="Optuna trials per model.")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Time budget per model in seconds.")] = None,
) -> None:
    """Train, log to MLflow, register and promote (champion only if it beats the current one)."""
    from training.tracking import TrackingUnavailable
    from training.train import SPECS, train_model

    names = [*SPECS, "lookalike"] if model == "all" else [model]
    unknown = [n for n in names if n not in SPECS and n != "lookalike"]
    if unknown:
        raise _fail(f"unknown model {unknown[0]!r}; choose churn, conversion, clv, lookalike or all")
    settings = _settings()
    table = Table(title="training")
    for col in ("model", "version", "test metric", "promotion", "seconds"):
        table.add_column(col)
    for name in names:
        try:
            if name == "lookalike":
                from training.lookalike import train_lookalike

                res = train_lookalike(settings, trials=trials)
            else:
                res = train_model(settings, SPECS[name](), trials=trials, timeout_s=timeout)
        except TrackingUnavailable as exc:
            raise _fail(str(exc), EXIT_UNAVAILABLE) from None
        metric = {k: v for k, v in res.metrics.items() if k.startswith("test_")}
        headline = next(iter(metric.items()), ("", float("nan")))
        table.add_row(
            name, res.version, f"{headline[0]}={headline[1]:.4f}", res.decision.reason, f"{res.seconds:.0f}"
        )
    out.print(table)


@app.command("models")
def models() -> None:
    """Registered model versions, aliases and headline metrics."""
    from training.tracking import TrackingUnavailable, configure, model_table

    try:
        client = configure(_settings())
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


@app.command("promote")
def promote_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
) -> None:
    """Deliberately make a version the champion (override of the automatic decision)."""
    from mlflow.exceptions import MlflowException

    from training.tracking import configure, promote

    client = configure(_settings())
    try:
        promote(client, name, version)
    except MlflowException as exc:
        raise _fail(f"cannot promote {name} v{version}: {exc.message}") from None
    console.print(f"{name} v{version} is now the champion")


if __name__ == "__main__":  # pragma: no cover
    app()

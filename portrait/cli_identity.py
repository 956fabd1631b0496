"""Identity commands of the ``portrait`` command line: ``portrait identity stitch | lookup | follow | synth``.

:func:`register` adds the ``identity`` group to the main Typer app (``portrait/cli.py`` calls it once).
Like ``portrait/cli.py``, nothing heavy is imported before a command runs, and bad input gets one line
and a non-zero exit code (2: bad input; ``lookup`` exits 1 when no single person holds the value). This
module does not import ``portrait.cli`` (which imports it), so either can be imported first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from portrait.settings import Settings, get_settings

if TYPE_CHECKING:
    from features.identity import StitchReport

console = Console(stderr=True)
out = Console()

EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2

identity_app = typer.Typer(
    help="OneID: stitch identity records into people, look a person up by any identifier.",
    no_args_is_help=True,
)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        settings = get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise _fail(f"invalid setting {where}: {first.get('msg', exc)}") from None
    settings.ensure_dirs()
    return settings


def _print_report(report: StitchReport) -> None:
    table = Table(title=f"identity stitching ({report.mode})")
    table.add_column("")
    table.add_column("", justify="right")
    rows: list[tuple[str, object]] = []
    if report.validation is not None:
        v = report.validation
        reasons = ", ".join(f"{k}={n:,}" for k, n in v.by_reason.items()) or "-"
        cleared = ", ".join(f"{k}={n:,}" for k, n in v.cleared.items()) or "-"
        rows += [
            ("identity rows read / accepted", f"{v.rows_read:,} / {v.accepted:,}"),
            ("quarantined", f"{v.quarantined:,} ({reasons})"),
            ("values cleared", cleared),
        ]
    rows += [
        ("records (new)", f"{report.records:,} ({report.new_records:,})"),
        ("customer ids without identity record", f"{report.records_without_identity:,}"),
        ("people (OneIDs)", f"{report.people:,}"),
        (
            "new / merged / split OneIDs",
            f"{report.new_oneids:,} / {report.merged_oneids:,} / {report.split_oneids:,}",
        ),
        (
            "linked / conflicting / blocked values",
            f"{report.linked_values:,} / {report.conflicted_values:,} / {report.blocked_values:,}",
        ),
        ("probabilistic pairs / joins", f"{report.probabilistic_pairs:,} / {report.probabilistic_merges:,}"),
        ("clusters kept apart (size limit)", f"{len(report.oversized_clusters):,}"),
        ("seconds", f"{sum(report.seconds.values()):.1f}"),
    ]
    if report.rewritten:
        rows.append(
            ("clean rows keyed by OneID", ", ".join(f"{t}={n:,}" for t, n in report.rewritten.items()))
        )
    for name, value in rows:
        table.add_row(name, str(value))
    out.print(table)
    if report.note:
        console.print(report.note)
    for example in report.blocked_examples[:5]:
        console.print(f"blocked: {example.kind} {example.value!r} on {example.people:,} people")


@identity_app.command("stitch")
def stitch_cmd(
    full: Annotated[
        bool, typer.Option("--full", help="Link every record again (default: only new records).")
    ] = False,
    retrain: Annotated[
        bool, typer.Option("--retrain", help="Train the Splink model again (implies --full).")
    ] = False,
) -> None:
    """Validate data/raw/identities, stitch records into people (OneIDs) and key data/clean by OneID."""
    from features.identity import IdentityConfigError, StitchError, stitch_workspace
    from features.validate import ContractError

    settings = _settings()
    try:
        with console.status("stitching identities"):
            report = stitch_workspace(settings, full=full, retrain=retrain)
    except (ContractError, StitchError, IdentityConfigError) as exc:
        raise _fail(str(exc)) from None
    _print_report(report)


@identity_app.command("lookup")
def lookup_cmd(
    kind: Annotated[str, typer.Argument(help="Identifier kind (email, phone, member_id, ... or record_id).")],
    value: Annotated[str, typer.Argument(help="The identifier, in any usual format.")],
) -> None:
    """Print the OneID of the person holding an identifier (exit 1 when no single person holds it)."""
    from features.identity import IdentityConfigError, UnknownKind, identity_dir, resolve_identifier

    settings = _settings()
    if not (identity_dir(settings) / "lookup.parquet").exists():
        raise _fail("no stitching run yet: run `portrait identity stitch` first")
    try:
        oneid = resolve_identifier(settings, kind, value)
    except (UnknownKind, IdentityConfigError) as exc:
        raise _fail(str(exc)) from None
    if oneid is None:
        raise _fail(f"no single person is known by {kind} {value!r}", EXIT_NOT_FOUND)
    out.print(oneid)


@identity_app.command("follow")
def follow_cmd(
    oneid: Annotated[str, typer.Argument(help="A OneID, possibly merged since it was issued.")],
) -> None:
    """Print the OneID a (possibly merged) OneID goes by now."""
    from features.identity import follow, oneid_number

    if oneid_number(oneid) is None:
        raise _fail(f"{oneid!r} is not a OneID (OID followed by 10 digits)")
    out.print(follow(_settings(), oneid))


@identity_app.command("synth")
def synth_cmd(
    seed: Annotated[int, typer.Option(help="Random seed of the identity records.")] = 0,
    noise: Annotated[
        bool, typer.Option("--noise/--no-noise", help="Typos, shared devices, recycled phones ...")
    ] = True,
) -> None:
    """Spread the synthetic customers of data/raw (from `portrait data synth`) over identity records: each
    person becomes several records (web, app, store, crm, loyalty) keyed by record id, with the truth in
    data/raw/identity_truth.parquet; then validate the inputs again."""
    import pyarrow.parquet as pq

    from features.synth_identity import (
        IdentitySynthConfig,
        generate_identities,
        spread_activity,
        without_noise,
    )
    from features.validate import ContractError, validate_workspace

    settings = _settings()
    raw = settings.raw_dir
    if (raw / "identity_truth.parquet").exists():
        raise _fail("data/raw already holds spread identities: run `portrait data synth` again first")
    if not (raw / "customers.parquet").exists() or not (raw / "transactions.parquet").exists():
        raise _fail("no synthetic customers in data/raw: run `portrait data synth` first")
    customers = pq.read_table(raw / "customers.parquet", columns=["customer_id", "region"])
    config = IdentitySynthConfig(seed=seed)
    if not noise:
        config = without_noise(config)
    with console.status(f"spreading {customers.num_rows:,} customers over identity records"):
        identities = generate_identities(
            customers.column("customer_id").to_pylist(),
            config,
            regions=customers.column("region").to_pylist(),
        )
        counts = spread_activity(raw, identities, raw)
    console.print(f"{counts} -> {raw}")
    now = None  # validated as of the end of the synthetic history, like `portrait data synth`
    if (raw / "truth.parquet").exists():
        now = pq.read_table(raw / "truth.parquet", columns=["observed_until"]).column(0)[0].as_py()
    try:
        validate_workspace(settings, now=now)
    except ContractError as exc:
        raise _fail(str(exc)) from None
    console.print("validated; next: `portrait identity stitch`")


def register(app: typer.Typer) -> None:
    """Add the ``identity`` command group to ``app``."""
    app.add_typer(identity_app, name="identity")

"""``portrait audience …``: audiences from the command line, the same operations as ``/v1/audiences``.

``population`` (build the cached population), ``create`` (from a filter, an id CSV or a lookalike seed;
``--dry-run`` only sizes it), ``list``, ``show``,
``export``, ``delete``, ``insight`` (text, JSON or the HTML report), ``plan`` (a lookalike's reach curve and
presets), ``holdout``, ``add`` and ``outcomes``. :func:`register` adds the group to the main Typer app
(``portrait/cli.py`` calls it once). Nothing heavy is imported before a command runs; bad input gets one
``error:`` line and exit code 2 (3: models or data unavailable). This module does not import ``portrait.cli``.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from portrait.settings import Settings, get_settings

if TYPE_CHECKING:
    from portrait.audience import AudienceBook
    from serving.tagger import Tagger

console = Console(stderr=True)
out = Console()

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3

audience_app = typer.Typer(
    help="Audiences: select customers by tags and features, understand them, plan lookalikes, hold out a control.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``portrait audience …`` to the main command line."""
    app.add_typer(audience_app, name="audience")


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    console.print(f"[bold red]error:[/] {' '.join(str(message).split())}", soft_wrap=True)
    return typer.Exit(code)


def _settings() -> Settings:
    settings = get_settings()
    settings.ensure_dirs()
    return settings


def _creator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name (e.g. a container without passwd entry)
        return "cli"


class _Context:
    """The tagger and the audience book, built once per command (loading the models takes seconds)."""

    def __init__(self) -> None:
        from portrait.audience import AudienceBook, AudienceStore

        self.settings = _settings()
        self._tagger: Tagger | None = None
        self.book: AudienceBook = AudienceBook(AudienceStore.of(self.settings), self._population)
        self._pop: Any = None

    @property
    def tagger(self) -> Tagger:
        if self._tagger is None:
            from serving.tagger import Tagger

            tagger = Tagger(self.settings)
            if not tagger.models:
                errors = "; ".join(tagger.load_errors.values()) or "no tag model is loaded"
                raise _fail(f"cannot score customers: {errors}", EXIT_UNAVAILABLE)
            self._tagger = tagger
        return self._tagger

    def _population(self) -> Any:
        if self._pop is None:
            from serving.audiences import population
            from serving.tagger import Unavailable

            try:
                self._pop = population(self.settings, self.tagger)
            except Unavailable as exc:
                raise _fail(exc.message, EXIT_UNAVAILABLE) from None
        return self._pop


def _run(action: Any) -> Any:
    """Run ``action()`` and turn the core's errors into one line and exit code 2."""
    from portrait.audience import AudienceError, AudienceNotFound, FilterError
    from portrait.lookalike import LookalikeError

    try:
        return action()
    except AudienceNotFound as exc:
        raise _fail(str(exc)) from None
    except AudienceError as exc:
        raise _fail(f"{exc.code}: {exc.message}") from None
    except (FilterError, LookalikeError) as exc:
        raise _fail(str(exc)) from None


def _read_ids(path: Path, what: str) -> list[str]:
    from portrait.lookalike import LookalikeError, read_seed_csv

    if not path.exists():
        raise _fail(f"{what} file {path} does not exist")
    try:
        ids = read_seed_csv(path)
    except LookalikeError as exc:
        raise _fail(exc.message) from None
    if not ids:
        raise _fail(f"{what} file {path} has no customer ids")
    return ids


def _read_filter(text: str) -> Any:
    """A filter from JSON text or from a file holding it (``@file.json`` or a path)."""
    from pydantic import TypeAdapter, ValidationError

    from portrait.audience import Filter

    source = text
    candidate = Path(text[1:] if text.startswith("@") else text)
    if text.startswith("@") or (not text.lstrip().startswith(("{", "[")) and candidate.suffix == ".json"):
        if not candidate.exists():
            raise _fail(f"filter file {candidate} does not exist")
        source = candidate.read_text(encoding="utf-8")
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        raise _fail(
            f"the filter is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    try:
        return TypeAdapter(Filter).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "top"
        raise _fail(f"bad filter at {where}: {first.get('msg', '')}") from None


def _tiers(by_tier: dict[str, dict[str, int]]) -> str:
    return "; ".join(
        f"{t}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) for t, counts in by_tier.items()
    )


def _print_record(record: Any) -> None:
    out.print(f"[bold]{record.id}[/] {record.name!r} ({record.kind}): {record.size:,} customers")
    out.print(
        f"  created {record.created_at:%Y-%m-%d %H:%M:%S} UTC by {record.creator}; snapshot {record.snapshot}"
    )
    out.print(f"  models {', '.join(f'{k} v{v}' for k, v in sorted(record.model_versions.items()))}")
    out.print(f"  by tier: {_tiers(record.by_tier)}", soft_wrap=True)
    out.print(f"  definition: {json.dumps(record.definition)}", soft_wrap=True)
    if record.holdout:
        h = record.holdout
        out.print(
            f"  holdout: {h.control:,} control / {h.treatment:,} treatment ({h.control_share:.1%} of each {h.stratify_by})"
        )
    if record.outcomes and record.outcomes.lift is not None:
        o = record.outcomes
        low, high = o.lift_ci or (float("nan"), float("nan"))
        out.print(f"  lift: {o.lift:+.4f} ({o.confidence:.0%} CI {low:+.4f} .. {high:+.4f})")
    for warning in record.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


# ---- commands ----------------------------------------------------------------------------------------------


@audience_app.command("create")
def create(
    filter_: Annotated[
        str | None, typer.Option("--filter", help="A filter as JSON, or @file.json (see README, Audiences).")
    ] = None,
    ids: Annotated[
        Path | None, typer.Option(help="CSV of customer ids (a customer_id column or one per line).")
    ] = None,
    seed: Annotated[Path | None, typer.Option(help="CSV of seed ids: a lookalike audience of them.")] = None,
    size: Annotated[int | None, typer.Option(help="Lookalike size (count).")] = None,
    fraction: Annotated[
        float | None, typer.Option(help="Lookalike size as a fraction of the population.")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Lookalike size: narrow, balanced or broad.")] = None,
    method: Annotated[str, typer.Option(help="Lookalike method: auto, similarity or classifier.")] = "auto",
    name: Annotated[str, typer.Option(help="A name for people.")] = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only the size and its split by tier.")] = False,
    control_share: Annotated[
        float | None, typer.Option(help="Hold out this share of every tier as control.")
    ] = None,
    stratify_by: Annotated[
        str | None, typer.Option(help="Tier column of the holdout (default conversion_tier).")
    ] = None,
) -> None:
    """Create an audience from a filter, an id list or a lookalike seed (exactly one)."""
    import pandas as pd

    from portrait.lookalike import PRESETS, ExpansionRequest

    if sum(x is not None for x in (filter_, ids, seed)) != 1:
        raise _fail("give exactly one of --filter, --ids or --seed")
    if seed is None and any(x is not None for x in (size, fraction, preset)):
        raise _fail("--size, --fraction and --preset go with --seed (a lookalike)")
    if seed is not None and sum(x is not None for x in (size, fraction, preset)) != 1:
        raise _fail("a lookalike needs exactly one of --size, --fraction or --preset")
    if preset is not None and preset not in PRESETS:
        raise _fail(f"--preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    if control_share is not None and not 0 < control_share < 1:
        raise _fail(f"--control-share must be between 0 and 1, not {control_share}")
    parsed = _read_filter(filter_) if filter_ is not None else None
    id_list = _read_ids(ids, "id") if ids is not None else None
    seed_ids = _read_ids(seed, "seed") if seed is not None else None
    ctx = _Context()
    book = ctx.book
    options = {
        "name": name,
        "creator": _creator(),
        "control_share": control_share,
        "stratify_by": stratify_by,
    }

    def lookalike() -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
        if ctx.tagger.lookalike is None:
            raise _fail(ctx.tagger.load_errors.get("lookalike", "no lookalike model"), EXIT_UNAVAILABLE)
        result = ctx.tagger.lookalike.expand(
            ExpansionRequest(
                seed_ids=seed_ids or [],
                size=size,
                fraction=PRESETS[preset] if preset else fraction,
                method=method,
            )  # type: ignore[arg-type]  # fmt: skip
        )
        members = pd.DataFrame({"customer_id": result.customer_ids, "score": result.scores})
        definition = {"seed_size": result.seed_size, "seed_known": result.seed_known, "size": size, "fraction": fraction,
                      "preset": preset, "method": method, "method_used": result.method,
                      "lookalike_version": ctx.tagger.versions.get("lookalike", "")}  # fmt: skip
        return members, {k: v for k, v in definition.items() if v is not None}, result.warnings

    def action() -> Any:
        if dry_run:
            if parsed is not None:
                return book.dry_run(parsed)
            members = (
                pd.DataFrame({"customer_id": book.population.known(id_list)[0]})
                if id_list
                else lookalike()[0]
            )
            return book.population.members_breakdown(members)
        if parsed is not None:
            return book.create_filter(parsed, **options)
        if id_list is not None:
            return book.create_ids(id_list, **options)
        members, definition, warnings = lookalike()
        return book.create_ranked(members, definition, kind="lookalike", warnings=warnings, **options)

    result = _run(action)
    if dry_run:
        n, by_tier = result
        out.print(f"{n:,} of {book.population.size:,} customers (dry run: nothing stored)")
        out.print(f"by tier: {_tiers(by_tier)}", soft_wrap=True)
        return
    _print_record(result)


@audience_app.command("population")
def population_cmd() -> None:
    """Build (or find) the cached population that audiences select from.

    The tags of every customer of the latest snapshot and its features. The service builds it on first use;
    with millions of customers, build it here first.
    """
    ctx = _Context()
    pop = ctx.book.population
    out.print(f"{pop.size:,} customers x {len(pop.columns)} columns (snapshot {pop.snapshot}) -> {pop.path}")


@audience_app.command("list")
def list_cmd() -> None:
    """Every stored audience, newest first."""
    from portrait.audience import AudienceStore

    records = AudienceStore.of(_settings()).list()
    if not records:
        out.print("no audiences yet: `portrait audience create --help`")
        return
    table = Table(
        Column("id", no_wrap=True, min_width=20),
        "name",
        "kind",
        "size",
        "created (UTC)",
        "creator",
        "holdout",
    )
    for r in records:
        holdout = f"{r.holdout.control_share:.0%}" if r.holdout else "-"
        table.add_row(
            r.id, r.name, r.kind, f"{r.size:,}", f"{r.created_at:%Y-%m-%d %H:%M}", r.creator, holdout
        )
    out.print(table)


@audience_app.command("show")
def show(audience_id: Annotated[str, typer.Argument(help="Audience id (aud_…).")]) -> None:
    """One audience: definition, creator, model versions, size by tier, holdout and lift."""
    from portrait.audience import AudienceStore

    record = _run(lambda: AudienceStore.of(_settings()).get(audience_id))
    _print_record(record)


@audience_app.command("export")
def export(
    audience_id: Annotated[str, typer.Argument(help="Audience id (aud_…).")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the members.")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv or parquet (default: from --out).")] = None,
    group: Annotated[str | None, typer.Option(help="Only treatment or control (with a holdout).")] = None,
) -> None:
    """Write the members (customer_id, score, group) as CSV or Parquet; audited."""
    from portrait.audience import AudienceBook, AudienceStore
    from portrait.files import atomic_path

    chosen = fmt or ("parquet" if out_file.suffix == ".parquet" else "csv")
    if chosen not in ("csv", "parquet"):
        raise _fail(f"--format must be csv or parquet, not {chosen!r}")
    book = AudienceBook(AudienceStore.of(_settings()), lambda: None)  # export needs no population
    data = _run(lambda: book.export(audience_id, chosen, _creator(), group))  # type: ignore[arg-type]
    with atomic_path(out_file) as tmp:
        tmp.write_bytes(data)
    console.print(f"{audience_id} -> {out_file} ({chosen})")


@audience_app.command("delete")
def delete(audience_id: Annotated[str, typer.Argument(help="Audience id (aud_…).")]) -> None:
    """Delete an audience; audited."""
    from portrait.audience import AudienceBook, AudienceStore

    book = AudienceBook(AudienceStore.of(_settings()), lambda: None)
    record = _run(lambda: book.delete(audience_id, _creator()))
    console.print(f"deleted {record.id} ({record.name}, {record.size:,} customers)")


@audience_app.command("insight")
def insight_cmd(
    audience_id: Annotated[str, typer.Argument(help="Audience id (aud_…).")],
    html: Annotated[Path | None, typer.Option(help="Also write the HTML report here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full insight as JSON.")] = False,
) -> None:
    """How the audience differs from the population, tested, in words (and as an HTML report)."""
    from portrait.audience.report import insight_html
    from portrait.files import write_text_atomic

    ctx = _Context()
    record = _run(lambda: ctx.book.get(audience_id))
    result = _run(lambda: ctx.book.insight(audience_id))
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        out.print(f"{result.audience_size:,} of {result.population_size:,} customers; top traits:")
        for trait in result.top_traits or ["no difference is more than noise"]:
            out.print(f"  • {trait}", soft_wrap=True)
    if html is not None:
        write_text_atomic(html, insight_html(record, result))
        console.print(f"report -> {html}")


@audience_app.command("plan")
def plan(
    seed: Annotated[Path, typer.Option(help="CSV of seed customer ids.")],
    exclude: Annotated[Path | None, typer.Option(help="CSV of ids never to include.")] = None,
) -> None:
    """A lookalike's reach curve: audience size against expected precision, and the three presets."""
    seed_ids = _read_ids(seed, "seed")
    exclude_ids = _read_ids(exclude, "exclude") if exclude else []
    ctx = _Context()
    model = ctx.tagger.lookalike
    if model is None:
        raise _fail(ctx.tagger.load_errors.get("lookalike", "no lookalike model"), EXIT_UNAVAILABLE)
    curve = _run(lambda: model.reach_curve(seed_ids, exclude_ids=exclude_ids))
    out.print(
        f"seed {curve.seed_known:,} known of {curve.seed_size:,}; about {curve.estimated_similar:,.0f} of "
        f"{curve.candidates:,} candidates are like it"
    )
    table = Table("", "size", "% of population", "expected precision", "90% interval", "expected recall")
    rows = [(name, p) for name, p in curve.presets.items()] + [("", p) for p in curve.points]
    for name, p in rows:
        table.add_row(
            name,
            f"{p.size:,}",
            f"{p.fraction:.1%}",
            f"{p.expected_precision:.2f}",
            f"{p.precision_low:.2f}-{p.precision_high:.2f}",
            f"{p.expected_recall:.2f}",
        )
    out.print(table)
    out.print(f"note: {curve.note}")
    for warning in curve.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


@audience_app.command("holdout")
def holdout(
    audience_id: Annotated[str, typer.Argument(help="Audience id (aud_…).")],
    control_share: Annotated[float, typer.Option(help="Share of every tier held out as control.")],
    stratify_by: Annotated[str | None, typer.Option(help="Tier column (default conversion_tier).")] = None,
) -> None:
    """Split the audience into treatment and control (stable: a customer keeps its side)."""
    ctx = _Context()
    record = _run(lambda: ctx.book.make_holdout(audience_id, control_share, stratify_by, _creator()))
    _print_record(record)


@audience_app.command("add")
def add(
    audience_id: Annotated[str, typer.Argument(help="Audience id (aud_…).")],
    ids: Annotated[Path, typer.Option(help="CSV of customer ids to add.")],
) -> None:
    """Add customers to an audience (a holdout assigns them; the others keep their side)."""
    id_list = _read_ids(ids, "id")
    ctx = _Context()
    record = _run(lambda: ctx.book.add_members(audience_id, id_list, _creator()))
    _print_record(record)


@audience_app.command("outcomes")
def outcomes(
    audience_id: Annotated[str, typer.Argument(help="Audience id (aud_…).")],
    converted: Annotated[Path, typer.Option(help="CSV of the customer ids who converted.")],
    confidence: Annotated[float, typer.Option(help="Confidence level of the interval.")] = 0.95,
) -> None:
    """Record who converted and report the incremental lift of treatment over control."""
    from portrait.audience import AudienceBook, AudienceStore

    if not converted.exists():
        raise _fail(f"converted file {converted} does not exist")
    from portrait.lookalike import LookalikeError, read_seed_csv

    try:
        ids = read_seed_csv(converted)
    except LookalikeError as exc:
        if exc.code != "empty_seed":
            raise _fail(exc.message) from None
        ids = []
    book = AudienceBook(AudienceStore.of(_settings()), lambda: None)  # outcomes need no population
    report = _run(lambda: book.record_outcomes(audience_id, ids, _creator(), confidence))
    out.print(
        f"treatment {report.treatment_converted:,}/{report.treatment:,}, control "
        f"{report.control_converted:,}/{report.control:,}"
    )
    if report.lift is None or report.lift_ci is None:
        out.print(f"no lift: {report.note}")
        return
    out.print(
        f"incremental lift {report.lift:+.4f} ({report.confidence:.0%} CI {report.lift_ci[0]:+.4f} .. "
        f"{report.lift_ci[1]:+.4f}){' significant' if report.significant else ''}; "
        f"about {report.incremental_conversions:,.0f} conversions"
    )


__all__ = ["audience_app", "register"]

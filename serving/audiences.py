"""``/v1/audiences``: audiences as objects over HTTP (a FastAPI router on the service's app).

Create (from a filter, an id list or a lookalike; ``dry_run`` sizes a filter without storing), list, show,
delete, export (CSV / Parquet), insight (JSON and an HTML report), lookalike planning (reach curve and
presets), holdouts, added members and outcomes (incremental lift). The work is :class:`portrait.audience.
AudienceBook`'s; this module builds the population it selects from (:func:`population`: the tags of every
customer of the latest feature snapshot joined to the snapshot's feature tables, cached in the workspace per
model versions and snapshot) and maps errors to 4xx / 503 bodies naming the problem.

Scopes (``serving.web.ROUTE_SCOPES``): ``audiences:write`` to create, plan, change and delete,
``audiences:read`` to list, show, export and read insight. Every create, export and delete is audited in
the audit trail (``portrait.audit``) with the caller's keyed API-key fingerprint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import bentoml
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from features.tables import PROFILE_VIEW, snapshot_label, snapshot_path, snapshots
from portrait import catalogue
from portrait.audience import AudienceBook, AudienceError, AudienceNotFound, AudienceRecord, AudienceStore
from portrait.audience.filters import FilterError
from portrait.audience.holdout import LiftReport
from portrait.audience.insight import Insight
from portrait.audience.population import ID, Population, open_cached, population_key, write_population
from portrait.audience.report import insight_html
from portrait.lookalike import PRESETS, ExpansionRequest, LookalikeError, ReachPoint
from portrait.settings import Settings
from serving.schemas import (
    AudienceCreate,
    AudienceDryRun,
    AudienceList,
    AudienceLookalike,
    AudiencePlan,
    AudiencePlanRequest,
    HoldoutRequest,
    MembersRequest,
    OutcomesRequest,
    ReachPointOut,
)
from serving.tagger import Tagger, Unavailable
from serving.web import caller_of, require_key

logger = logging.getLogger(__name__)

PREFIX = "/v1/audiences"
SCORE_BATCH = 10_000
TAG_COLUMNS_DROPPED = ("_reasons", "_model_version")
FEATURE_COLUMNS_DROPPED = ("event_timestamp", "created_timestamp")
PARQUET_TYPE = "application/vnd.apache.parquet"
NO_HOLDOUT = "The audience has no holdout yet: split it first (control_share)."


def route(method: str, path: str = "") -> str:
    """The ``ROUTE_SCOPES`` key of a route: method and path, e.g. ``GET /v1/audiences/{audience_id}``."""
    return f"{method} {PREFIX}{path}"


# ---- the population --------------------------------------------------------------------------------------

_BUILD_LOCK = threading.Lock()
_POPULATIONS: dict[tuple[str, str], Population] = {}  # (audiences folder, key) -> the opened population


def population(settings: Settings, tagger: Tagger, *, batch: int = SCORE_BATCH) -> Population:
    """The population to select audiences from, cached per model versions and feature snapshot.

    Built once: the tags of every customer of the latest snapshot (``Tagger.tags_frame``, as ``portrait
    score``), without reasons and real-time flags, joined to the snapshot's feature tables.
    """
    snaps = snapshots(settings.features_dir)
    if not snaps:
        raise Unavailable(
            "no feature snapshot: run `portrait features build` and `portrait features materialize`"
        )
    latest = snaps[-1]
    versions = {n: v for n, v in tagger.versions.items() if n in tagger.models}
    if not versions:
        raise Unavailable("no tag model is loaded: audiences select on tags (run `portrait train all`)")
    key = population_key(versions, snapshot_label(latest))
    root = AudienceStore.of(settings).root
    with _BUILD_LOCK:
        known = _POPULATIONS.get((str(root), key))
        if known is not None and known.path.exists():
            return known
        cached = open_cached(root, key)
        if cached is not None:
            _POPULATIONS[(str(root), key)] = cached
            return cached
        started = time.perf_counter()
        features = _feature_table(settings, latest)
        ids = features[ID].astype(str).tolist()
        parts = [tagger.tags_frame(ids[i : i + batch]) for i in range(0, len(ids), batch)]
        tags = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({ID: []})
        keep = [c for c in tags.columns if not c.endswith(TAG_COLUMNS_DROPPED)]
        keep = [
            c
            for c in keep
            if c not in ("features_timestamp", "visited_today", "purchased_today", "cart_abandoned")
        ]
        frame = features.merge(tags[keep], on=ID, how="left")
        ordered = [ID, *[c for c in keep if c != ID], *[c for c in features.columns if c not in keep]]
        frame = frame[ordered].sort_values(ID, kind="stable").reset_index(drop=True)
        pop = write_population(root, key, frame, snapshot=latest.isoformat(), versions=versions)
        _POPULATIONS[(str(root), key)] = pop
        logger.info(
            "audience population of %d customers built in %.1fs", len(frame), time.perf_counter() - started
        )
        return pop


def _feature_table(settings: Settings, snapshot: Any) -> pd.DataFrame:
    """Every feature of the snapshot, one row per customer of its profile view."""
    frame = pd.read_parquet(snapshot_path(settings.features_dir, PROFILE_VIEW, snapshot))
    for view in catalogue.ALL_VIEWS:
        if view == PROFILE_VIEW:
            continue
        path = snapshot_path(settings.features_dir, view, snapshot)
        if path.exists():
            other = pd.read_parquet(path).drop(columns=list(FEATURE_COLUMNS_DROPPED), errors="ignore")
            frame = frame.merge(other, on=ID, how="left")
    frame = frame.drop(columns=list(FEATURE_COLUMNS_DROPPED), errors="ignore")
    frame[ID] = frame[ID].astype(str)
    return frame


_BOOKS: dict[int, AudienceBook] = {}


def book_of(service: Any) -> AudienceBook:
    """The service's :class:`AudienceBook` (one per service instance; the population is built on first use)."""
    book = _BOOKS.get(id(service))
    if book is None:
        settings, tagger = service.settings, service.tagger
        book = AudienceBook(AudienceStore.of(settings), lambda: population(settings, tagger))
        _BOOKS[id(service)] = book
    return book


# ---- errors ----------------------------------------------------------------------------------------------


@contextmanager
def _answers() -> Iterator[None]:
    """Core errors as HTTP errors naming the problem."""
    try:
        yield
    except AudienceNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except AudienceError as exc:
        raise HTTPException(exc.status, f"{exc.code}: {exc.message}") from None
    except FilterError as exc:
        raise HTTPException(422, f"bad_filter: {exc}") from None
    except LookalikeError as exc:
        raise HTTPException(422, f"{exc.code}: {exc.message}") from None
    except Unavailable as exc:
        logger.warning("503 on %s: %s", PREFIX, exc.message)
        raise HTTPException(503, exc.message) from None


Service = Annotated[Any, Depends(bentoml.get_current_service)]
router = APIRouter(prefix=PREFIX, tags=["audiences"])


def _caller(request: Request, service: Any) -> str:
    return caller_of(request.headers, service.settings)


def _seed(book: AudienceBook, seed_ids: list[str] | None, seed_audience_id: str | None) -> list[str]:
    if seed_ids is not None:
        return list(seed_ids)
    assert seed_audience_id is not None
    return book.store.members(seed_audience_id)[ID].astype(str).tolist()


def _lookalike(
    service: Any, book: AudienceBook, spec: AudienceLookalike
) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    tagger: Tagger = service.tagger
    seed = _seed(book, spec.seed_ids, spec.seed_audience_id)
    fraction = PRESETS[spec.preset] if spec.preset else spec.fraction
    result = tagger.expand(
        ExpansionRequest(
            seed_ids=seed,
            size=spec.size,
            fraction=fraction,
            exclude_seed=spec.exclude_seed,
            exclude_ids=spec.exclude_ids,
            min_score=spec.min_score,
            method=spec.method,
        )
    )
    members = pd.DataFrame({ID: result.customer_ids, "score": result.scores})
    definition = spec.model_dump(exclude={"seed_ids", "exclude_ids"}, exclude_none=True) | {
        "seed_size": result.seed_size,
        "seed_known": result.seed_known,
        "excluded": len(spec.exclude_ids),
        "method_used": result.method,
        "lookalike_version": tagger.versions.get("lookalike", ""),
    }
    return members, definition, list(result.warnings)


@router.post(
    "",
    dependencies=[require_key(route("POST"))],
    operation_id="portrait__audiences_create",
    status_code=201,
    responses={200: {"model": AudienceDryRun, "description": "A dry run: the size, nothing stored."}},
)
def create_audience(
    body: AudienceCreate, request: Request, service: Service
) -> AudienceRecord | AudienceDryRun:
    """Create an audience from a filter over tags and features, an id list or a lookalike request (scope
    ``audiences:write``). With ``dry_run`` only the size and its split by tier come back (200)."""
    book = book_of(service)
    caller = _caller(request, service)
    with _answers():
        if body.dry_run:
            warnings: list[str] = []
            if body.filter is not None:
                size, by_tier = book.dry_run(body.filter)
            else:
                if body.customer_ids is not None:
                    members = pd.DataFrame({ID: book.population.known(body.customer_ids)[0]})
                else:
                    assert body.lookalike is not None
                    members, _, warnings = _lookalike(service, book, body.lookalike)
                size, by_tier = book.population.members_breakdown(members)
            content = AudienceDryRun(
                size=size, population=book.population.size, by_tier=by_tier, warnings=warnings
            )
            return Response(content.model_dump_json(), media_type="application/json", status_code=200)  # type: ignore[return-value]
        options = {
            "name": body.name,
            "creator": caller,
            "control_share": body.control_share,
            "stratify_by": body.stratify_by,
        }
        if body.filter is not None:
            return book.create_filter(body.filter, **options)
        if body.customer_ids is not None:
            return book.create_ids(body.customer_ids, **options)
        assert body.lookalike is not None
        members, definition, warnings = _lookalike(service, book, body.lookalike)
        return book.create_ranked(members, definition, kind="lookalike", warnings=warnings, **options)


@router.get("", dependencies=[require_key(route("GET"))], operation_id="portrait__audiences_list")
def list_audiences(service: Service) -> AudienceList:
    """Every stored audience, newest first (scope ``audiences:read``)."""
    return AudienceList(audiences=book_of(service).list())


@router.post(
    "/plan", dependencies=[require_key(route("POST", "/plan"))], operation_id="portrait__audiences_plan"
)
def plan_lookalike(body: AudiencePlanRequest, service: Service) -> AudiencePlan:
    """Plan a lookalike before creating it: audience size against expected precision and recall, and the
    presets narrow / balanced / broad (about 2.5 / 5 / 10 % of the population). Refuses seeds of fewer than
    100 known customers or of most of the population (scope ``audiences:write``)."""
    book = book_of(service)
    tagger: Tagger = service.tagger
    with _answers():
        if tagger.lookalike is None:
            raise Unavailable(tagger.load_errors.get("lookalike", "the lookalike model is not loaded"))
        seed = _seed(book, body.seed_ids, body.seed_audience_id)
        curve = tagger.lookalike.reach_curve(seed, exclude_ids=body.exclude_ids)
    return AudiencePlan(
        seed_size=curve.seed_size,
        seed_known=curve.seed_known,
        unknown_seed_ids=curve.unknown_seed_ids[:100],
        population=curve.population,
        candidates=curve.candidates,
        estimated_similar=curve.estimated_similar,
        method=curve.method,
        model_version=tagger.versions.get("lookalike", ""),
        curve=[_point(p) for p in curve.points],
        presets={k: _point(p) for k, p in curve.presets.items()},
        warnings=curve.warnings,
        note=curve.note,
    )


def _point(point: ReachPoint) -> ReachPointOut:
    return ReachPointOut(**vars(point))


@router.get(
    "/{audience_id}",
    dependencies=[require_key(route("GET", "/{audience_id}"))],
    operation_id="portrait__audiences_show",
)
def show_audience(audience_id: str, service: Service) -> AudienceRecord:
    """One audience: definition, creator, created time, model versions, size, holdout and outcomes."""
    with _answers():
        return book_of(service).get(audience_id)


@router.delete(
    "/{audience_id}",
    dependencies=[require_key(route("DELETE", "/{audience_id}"))],
    operation_id="portrait__audiences_delete",
)
def delete_audience(audience_id: str, request: Request, service: Service) -> AudienceRecord:
    """Delete an audience (scope ``audiences:write``); audited. Returns what was deleted."""
    with _answers():
        return book_of(service).delete(audience_id, _caller(request, service))


@router.get(
    "/{audience_id}/export",
    dependencies=[require_key(route("GET", "/{audience_id}/export"))],
    operation_id="portrait__audiences_export",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}, PARQUET_TYPE: {}}, "description": "The members."},
        409: {"description": NO_HOLDOUT},
    },
)
def export_audience(
    audience_id: str,
    request: Request,
    service: Service,
    format: Annotated[Literal["csv", "parquet"], Query(description="csv or parquet")] = "csv",
    group: Annotated[
        Literal["treatment", "control"] | None, Query(description="Only this holdout group.")
    ] = None,
) -> Response:
    """The members (``customer_id``, ``score`` for lookalikes, ``group`` with a holdout) as CSV or Parquet
    (scope ``audiences:read``); audited."""
    with _answers():
        data = book_of(service).export(audience_id, format, _caller(request, service), group)
    name = f"{audience_id}{'-' + group if group else ''}.{format}"
    return Response(
        data,
        media_type="text/csv" if format == "csv" else PARQUET_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/{audience_id}/insight",
    dependencies=[require_key(route("GET", "/{audience_id}/insight"))],
    operation_id="portrait__audiences_insight",
)
def audience_insight(audience_id: str, service: Service) -> Insight:
    """How the audience differs from the population: per attribute and feature, share or mean in both,
    lift, a test with a multiple-testing correction, and the top distinguishing traits in words."""
    with _answers():
        return book_of(service).insight(audience_id)


@router.get(
    "/{audience_id}/insight.html",
    dependencies=[require_key(route("GET", "/{audience_id}/insight.html"))],
    operation_id="portrait__audiences_insight_html",
    response_class=HTMLResponse,
)
def audience_insight_html(audience_id: str, service: Service) -> HTMLResponse:
    """The insight as a self-contained HTML report with charts, for people."""
    book = book_of(service)
    with _answers():
        record = book.get(audience_id)
        result = book.insight(audience_id)
    return HTMLResponse(insight_html(record, result))


@router.post(
    "/{audience_id}/holdout",
    dependencies=[require_key(route("POST", "/{audience_id}/holdout"))],
    operation_id="portrait__audiences_holdout",
)
def make_holdout(
    audience_id: str, body: HoldoutRequest, request: Request, service: Service
) -> AudienceRecord:
    """Split the audience into treatment and control, stratified by a tier, by a stable hash of customer and
    audience (a customer keeps its side across exports and additions)."""
    with _answers():
        return book_of(service).make_holdout(
            audience_id, body.control_share, body.stratify_by, _caller(request, service)
        )


@router.post(
    "/{audience_id}/members",
    dependencies=[require_key(route("POST", "/{audience_id}/members"))],
    operation_id="portrait__audiences_add_members",
)
def add_members(audience_id: str, body: MembersRequest, request: Request, service: Service) -> AudienceRecord:
    """Add customers to an audience; with a holdout they are assigned too, the others keep their side."""
    with _answers():
        return book_of(service).add_members(audience_id, body.customer_ids, _caller(request, service))


@router.post(
    "/{audience_id}/outcomes",
    dependencies=[require_key(route("POST", "/{audience_id}/outcomes"))],
    operation_id="portrait__audiences_outcomes",
    responses={409: {"description": NO_HOLDOUT}},
)
def record_outcomes(
    audience_id: str, body: OutcomesRequest, request: Request, service: Service
) -> LiftReport:
    """Who converted: the incremental lift of treatment over control with its confidence interval."""
    with _answers():
        return book_of(service).record_outcomes(
            audience_id, body.converted_ids, _caller(request, service), body.confidence
        )


ROUTES: tuple[str, ...] = (
    route("POST"),
    route("GET"),
    route("POST", "/plan"),
    route("GET", "/{audience_id}"),
    route("DELETE", "/{audience_id}"),
    route("GET", "/{audience_id}/export"),
    route("GET", "/{audience_id}/insight"),
    route("GET", "/{audience_id}/insight.html"),
    route("POST", "/{audience_id}/holdout"),
    route("POST", "/{audience_id}/members"),
    route("POST", "/{audience_id}/outcomes"),
)
"""Every route of this router, as its ``ROUTE_SCOPES`` key."""

__all__ = ["PREFIX", "ROUTES", "book_of", "population", "route", "router"]

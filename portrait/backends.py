"""The servers of the production profile: URL handling, reachability checks and database creation.

Shared by the Feast store (``features/store.py``), MLflow (``portrait/registry.py``) and serving. Nothing
here connects at import time; every check is bounded by a timeout so a dead server gives a fast, clear
error (:class:`BackendUnavailable`, with the password removed from the URL) instead of a hang.

* PostgreSQL URLs are SQLAlchemy URLs. Portrait uses psycopg 3, so ``postgres://`` and ``postgresql://``
  are rewritten to ``postgresql+psycopg://`` (SQLAlchemy would otherwise pick psycopg2, not installed).
  :func:`ensure_postgres_database` creates the database when the server answers but it does not exist.
* Redis URLs (``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS) are turned into
  Feast's ``host:port,key=value`` connection string, with socket timeouts.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qsl, unquote, urlsplit

logger = logging.getLogger(__name__)

PSYCOPG_SCHEME = "postgresql+psycopg"
_ensured: set[str] = set()
_ensured_lock = threading.Lock()


class BackendUnavailable(RuntimeError):
    """A server Portrait needs (PostgreSQL, Redis, an MLflow server) cannot be reached."""


def redact(url: str) -> str:
    """``url`` without its credentials (``scheme://***@host/...``), safe for logs and error messages."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}://{netloc}{sep}{tail}"


def is_postgres(url: str) -> bool:
    """Whether ``url`` is a PostgreSQL URL (any driver)."""
    return url.split("://", 1)[0].split("+", 1)[0] in ("postgres", "postgresql")


def normalize_postgres_url(url: str) -> str:
    """Use the psycopg 3 driver for bare ``postgres://`` / ``postgresql://`` URLs; leave others alone."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        return f"{PSYCOPG_SCHEME}://{rest}"
    return url


def with_connect_timeout(url: str, seconds: int) -> str:
    """``url`` with libpq's ``connect_timeout`` (unless it already has one), so connects cannot hang."""
    if not is_postgres(url) or "connect_timeout=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}connect_timeout={max(int(seconds), 1)}"


def ensure_postgres_database(url: str, *, timeout_s: int = 5) -> bool:
    """Make sure the database of ``url`` exists; returns True when it had to be created.

    Connects to the database itself first; when the server answers "database does not exist", connects
    to the ``postgres`` maintenance database with the same credentials and creates it (the role needs
    ``CREATEDB``). Raises :class:`BackendUnavailable` when the server cannot be reached or refuses.
    A URL already checked in this process is not checked again.
    """
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    url = normalize_postgres_url(url)
    if url in _ensured:
        return False
    parsed = make_url(url)
    name = parsed.database or "postgres"
    args = {"connect_timeout": max(int(timeout_s), 1)}

    def _connect(target: sa.URL, **kwargs: object) -> sa.Connection:
        engine = sa.create_engine(target, poolclass=NullPool, connect_args=args, **kwargs)
        return engine.connect()

    created = False
    try:
        with _connect(parsed):
            pass
    except DBAPIError as exc:
        # At connect time psycopg reports no SQLSTATE, so ask the maintenance database whether the
        # target exists rather than parsing (possibly localized) server messages.
        reason = _first_line(exc.orig)
        try:
            with _connect(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT") as conn:
                exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
                if exists.first() is not None:
                    raise BackendUnavailable(f"PostgreSQL at {redact(url)} refused the connection: {reason}")
                quoted = '"' + name.replace('"', '""') + '"'
                try:
                    conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
                    created = True
                    logger.info("created PostgreSQL database %s at %s", name, redact(url))
                except DBAPIError as race:
                    if getattr(race.orig, "sqlstate", None) != "42P04":  # duplicate_database
                        raise BackendUnavailable(
                            f"PostgreSQL database {name!r} at {redact(url)} does not exist and could not "
                            f"be created: {_first_line(race.orig)}"
                        ) from race
        except DBAPIError as exc2:
            raise BackendUnavailable(f"PostgreSQL at {redact(url)} is unreachable: {reason}") from exc2
    with _ensured_lock:
        _ensured.add(url)
    return created


def drop_postgres_database(url: str, *, timeout_s: int = 5) -> None:
    """Drop the database of ``url`` (closing its other sessions); used by tests and benchmarks."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    url = normalize_postgres_url(url)
    parsed = make_url(url)
    engine = sa.create_engine(
        parsed.set(database="postgres"),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": max(int(timeout_s), 1)},
    )
    quoted = '"' + (parsed.database or "").replace('"', '""') + '"'
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    with _ensured_lock:
        _ensured.discard(url)


def check_http(url: str, *, timeout_s: float = 5.0) -> None:
    """Raise :class:`BackendUnavailable` unless an HTTP server (e.g. MLflow's ``/health``) answers."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"{redact(url)} is unreachable: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 500:
        raise BackendUnavailable(f"{redact(url)} answered HTTP {response.status_code}")


def redis_connection_string(url: str, *, timeout_s: float | None = None) -> str:
    """Feast's Redis connection string (``host:port,db=N,password=...``) for a ``redis://`` URL.

    ``timeout_s`` sets redis-py's ``socket_timeout`` and ``socket_connect_timeout`` (Feast passes the
    options to ``redis.Redis``). Query parameters of the URL are passed through as further options.
    """
    if "://" not in url:  # already host:port[,options]
        parts = [url]
    else:
        split = urlsplit(url)
        if split.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a Redis URL: {redact(url)} (expected redis://host:port/db)")
        parts = [f"{split.hostname or 'localhost'}:{split.port or 6379}"]
        db = split.path.lstrip("/")
        if db:
            parts.append(f"db={int(db)}")
        if split.username:
            parts.append(f"username={unquote(split.username)}")
        if split.password:
            parts.append(f"password={unquote(split.password)}")
        if split.scheme == "rediss":
            parts.append("ssl=true")
        parts.extend(f"{k}={v}" for k, v in parse_qsl(split.query))
    if timeout_s is not None:
        present = ",".join(parts)
        for key in ("socket_timeout", "socket_connect_timeout"):
            if f"{key}=" not in present:
                parts.append(f"{key}={timeout_s:g}")
    for part in parts[1:]:
        if "," in part:
            raise ValueError(
                f"Redis option {part.split('=', 1)[0]!r} of {redact(url)} contains ',', which Feast's "
                "connection string cannot carry"
            )
    return ",".join(parts)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "BackendUnavailable",
    "check_http",
    "drop_postgres_database",
    "ensure_postgres_database",
    "is_postgres",
    "normalize_postgres_url",
    "redact",
    "redis_connection_string",
    "with_connect_timeout",
]

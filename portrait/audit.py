"""The audit trail of privileged calls, allowed or denied: one JSON line per call in ``data/audit/audit.jsonl``.

A record holds ``at`` (UTC time), ``caller`` (a keyed fingerprint of the API key, never the key), ``client``
(address of the caller), ``request_id``, ``action`` (``"POST /v1/lookalike"``; outside HTTP, the command),
``outcome`` (``allowed``, ``denied 401``, ``denied 403`` or ``error``), ``status`` (the HTTP status, when
known) and the call's details (``operation``, audience id, sizes, model version, ...).

*Privileged* calls are those that make, hand out, change or delete an audience (``/v1/lookalike``, the
writing and exporting ``/v1/audiences`` routes; the CLI's audience commands): each is recorded when it is
allowed, with its details. *Every* refused attempt at a route that needs an API key is recorded too (the
HTTP layer, ``serving.auditing``, which also passes the request's context here through :data:`CURRENT`).

**Caller fingerprint**: ``key:`` + the first 16 hex digits of HMAC-SHA256(secret, key). The secret is
``settings.audit_secret``, else 32 random bytes generated once per workspace into
``settings.audit_secret_file`` (mode 0600). A plain hash of a weak key can be reversed by trying keys; without
the secret it cannot, and the same key still gets the same fingerprint across calls and restarts.

**Storage**: JSON lines, not SQLite. Each record is one ``write`` to a file opened with ``O_APPEND``, then
``fsync``: concurrent writers (threads, BentoML worker processes) never interleave within a line, a record
is on disk before the call is answered, and the file is what log shippers, ``tail`` and ``grep`` read. SQLite
would add a write lock shared by every worker and a schema, for queries the audit log does not need.

**Failure**: a record that cannot be written (disk full, read-only or missing folder) raises
:class:`AuditUnavailable`; the HTTP layer answers the privileged call with a 503 ``{"error": "audit log
unavailable", ...}`` and :func:`problem` (part of the service's readiness) reports it until a write succeeds
again or :data:`RETRY_AFTER_S` have passed. The record that could not be written is logged at ERROR.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from portrait.settings import Settings

logger = logging.getLogger(__name__)

ALLOWED = "allowed"
ERROR = "error"
RETRY_AFTER_S = 5.0
"""After a failed write, privileged calls are refused (without trying) for this long, then tried again."""
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""What an ``X-Request-ID`` sent by the caller may look like to be kept (else one is generated)."""
UNAVAILABLE = "audit log unavailable"

_LOCK = threading.Lock()
_SECRETS: dict[Path, bytes] = {}
_FAILURES: dict[Path, tuple[str, float]] = {}


class AuditUnavailable(RuntimeError):
    """The audit log cannot be written: the privileged call must not be answered as if it were recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class RequestContext:
    """What the HTTP layer knows of the current request, for the records written while it is served."""

    caller: str
    client: str
    request_id: str
    action: str
    recorded: bool = False
    """Whether a record of this request was written (so the HTTP layer does not add an ``error`` one)."""
    extra: dict[str, Any] = field(default_factory=dict)


CURRENT: ContextVar[RequestContext | None] = ContextVar("portrait_audit_request", default=None)
"""The request being served (set by ``serving.auditing.AuditMiddleware``); None outside HTTP."""


def denied(status: int) -> str:
    return f"denied {status}"


def request_id(sent: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is sane (:data:`REQUEST_ID`), else a new random one."""
    if sent and REQUEST_ID.match(sent):
        return sent
    return uuid.uuid4().hex


def secret(settings: Settings) -> bytes:
    """The fingerprint key: ``settings.audit_secret``, else the workspace's generated key file (created
    once, mode 0600; read once per process)."""
    if settings.audit_secret is not None:
        return settings.audit_secret.get_secret_value().encode()
    path = settings.audit_secret_file
    cached = _SECRETS.get(path)
    if cached is not None:
        return cached
    with _LOCK:
        if path not in _SECRETS:
            _SECRETS[path] = _read_or_create(path)
    return _SECRETS[path]


def _read_or_create(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes().strip()
    try:
        os.write(fd, value + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    logger.info("generated the audit fingerprint key %s (mode 0600)", path)
    return value


def fingerprint(key: str, key_secret: bytes) -> str:
    """``key:`` and 16 hex digits of HMAC-SHA256(``key_secret``, ``key``): names a key without revealing it."""
    return "key:" + hmac.new(key_secret, key.encode(), hashlib.sha256).hexdigest()[:16]


def caller(key: str | None, settings: Settings) -> str:
    """Who called: the fingerprint of ``key``, or ``anonymous`` (with ``auth disabled`` when no keys are set)."""
    if not key:
        return "anonymous (auth disabled)" if not settings.api_keys else "anonymous"
    try:
        return fingerprint(key, secret(settings))
    except OSError as exc:  # no key file and none can be made: the call cannot be audited
        raise AuditUnavailable(f"{UNAVAILABLE}: audit key {settings.audit_secret_file}: {_why(exc)}") from exc


def context_fields(ctx: RequestContext | None = None) -> dict[str, Any]:
    """``caller``, ``client``, ``request_id`` and ``action`` of ``ctx`` (default: the request being served;
    {} outside HTTP)."""
    ctx = ctx or CURRENT.get()
    if ctx is None:
        return {}
    return {"caller": ctx.caller, "client": ctx.client, "request_id": ctx.request_id, "action": ctx.action}


def record(
    path: Path, entry: Mapping[str, Any], *, outcome: str = ALLOWED, status: int | None = None
) -> None:
    """Append one record to the audit log at ``path``, durably (``O_APPEND`` write, then ``fsync``).

    The current request's context (:data:`CURRENT`) fills ``caller``, ``client``, ``request_id`` and
    ``action`` where ``entry`` does not give them. Raises :class:`AuditUnavailable` when it cannot be written
    (or another write failed less than :data:`RETRY_AFTER_S` ago).
    """
    line: dict[str, Any] = {"at": datetime.now(UTC).isoformat()}
    line.update(context_fields())
    line.update(entry)
    line["outcome"] = outcome
    if status is not None:
        line["status"] = status
    data = (json.dumps(line, default=str, separators=(",", ":")) + "\n").encode()
    failed = _recent_failure(path)
    if failed is not None:
        logger.error("audit record not written (%s): %s", failed, data.decode().strip())
        raise AuditUnavailable(f"{UNAVAILABLE}: {failed}")
    try:
        fd = _open_for_append(path)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(28, "short write (No space left on device?)")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        why = f"{path}: {_why(exc)}"
        _FAILURES[path] = (why, time.monotonic())
        logger.error("audit record not written (%s): %s", why, data.decode().strip())
        raise AuditUnavailable(f"{UNAVAILABLE}: {why}") from exc
    _FAILURES.pop(path, None)
    ctx = CURRENT.get()
    if ctx is not None:
        ctx.recorded = True


def problem(path: Path) -> str | None:
    """Why the audit log at ``path`` cannot take records now (None: it can), for readiness.

    A recent failed write is reported as such; otherwise the file is opened for appending (nothing is
    written), which finds a missing, read-only or non-directory folder. A full disk shows at the next write.
    """
    failed = _recent_failure(path)
    if failed is not None:
        return f"{UNAVAILABLE}: {failed}"
    try:
        os.close(_open_for_append(path))
    except OSError as exc:
        return f"{UNAVAILABLE}: {path}: {_why(exc)}"
    return None


def read(path: Path) -> list[dict[str, Any]]:
    """The records of the audit log at ``path``, oldest first."""
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _open_for_append(path: Path) -> int:
    """A descriptor of ``path`` opened for appending (created 0600; its folder made when missing)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o600)


def _recent_failure(path: Path) -> str | None:
    failed = _FAILURES.get(path)
    if failed is None:
        return None
    why, at = failed
    if time.monotonic() - at >= RETRY_AFTER_S:
        return None
    return why


def _why(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


__all__ = [
    "ALLOWED",
    "CURRENT",
    "ERROR",
    "AuditUnavailable",
    "RequestContext",
    "caller",
    "context_fields",
    "denied",
    "fingerprint",
    "problem",
    "read",
    "record",
    "request_id",
    "secret",
]

"""Atomic file writes: the one way Portrait publishes a file.

A writer fills a temporary file beside the target and it is moved into place with ``os.replace`` only
when the writer finished; an exception (or a kill) leaves the previous file intact and no temporary file
behind (on an exception; a killed process may leave a hidden ``.<name>.*.tmp``, never a torn target).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def temp_beside(target: Path) -> Path:
    """A hidden temporary path in the target's folder (same file system, so the rename is atomic)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` in one step."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def publish(moves: Sequence[tuple[Path, Path]]) -> None:
    """Move staged ``(temporary, target)`` files into place, in order (several outputs published together)."""
    for tmp, target in moves:
        os.replace(tmp, target)

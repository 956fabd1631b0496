"""Atomic file writes and temporary files: the one way Portrait publishes a file.

A writer fills a temporary file beside the target and it is moved into place with ``os.replace`` only
when the writer finished; an exception (or a kill) leaves the previous file intact.

Every temporary file or folder is created here, exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``, or
``mkdir``) under an unpredictable name, so a link planted where a temporary file will go cannot redirect
a write: creation fails on anything already there, and a new name is drawn. The name also says which
process made it (``.<target>.<pid>-<host>-<random>.tmp``), so :func:`clean_start` can remove what a killed
process left behind without ever touching the files of a live one. A command's own scratch folder (its
``tempfile`` directory and DuckDB's spill folder) is such a temporary folder too.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

# DuckDB's COPY writes to "tmp_<name>" first, then renames: that is ours too.
_TEMP_NAME = re.compile(r"^(?:tmp_)?\.(?P<name>.*)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]{12}\.tmp$")
_NAME_CHARS = 96  # of the target's name kept in a temporary name (the whole name stays under 255 bytes)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@functools.cache
def _host() -> str:
    """A short tag of this host (or container): pids are only compared on the host that made them."""
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_beside(target: Path, *, directory: bool = False) -> Path:
    """Create a new, empty hidden file (or folder) in the target's folder and return its path.

    The folder is the target's, so the final ``os.replace`` is atomic (same file system). The entry is
    created exclusively: nothing that already exists at the name, link or not, is ever opened or followed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = target.with_name(
            f".{target.name[:_NAME_CHARS]}.{os.getpid()}-{_host()}-{secrets.token_hex(6)}.tmp"
        )
        try:
            if directory:
                os.mkdir(tmp, 0o777)  # the umask applies, as for any folder the process creates
            else:
                os.close(os.open(tmp, _CREATE, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))


def _remove(path: Path) -> None:
    """Remove a temporary file, link or folder (a link is removed, never followed)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        logger.debug("could not remove %s", path, exc_info=True)


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a new temporary file to write; on success it replaces ``target`` in one step.

    A link at ``target`` itself is replaced, not followed.
    """
    target = Path(target)
    tmp = temp_beside(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def write_text_atomic(target: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def publish(moves: Sequence[tuple[Path, Path]]) -> None:
    """Move staged ``(temporary, target)`` files into place, in order (several outputs published together)."""
    for tmp, target in moves:
        os.replace(tmp, target)


# ---- what killed processes leave behind --------------------------------------------------------------


def _owner_gone(name: str, mtime: float) -> bool:
    """Whether the process that created the temporary entry ``name`` (last changed at ``mtime``) is gone.

    Entries of another host, of this process and of a live process are kept. A live process with the same
    pid that started after the entry was last changed is not its creator (the pid was reused).
    """
    import psutil

    match = _TEMP_NAME.match(name)
    if match is None or match["host"] != _host():
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # e.g. access denied: alive, keep its files
        return False
    return started > mtime + 1.0


def remove_stale(roots: Iterable[Path], *, recursive: Iterable[Path] = ()) -> list[Path]:
    """Remove the temporary files and folders of dead processes directly in ``roots`` and anywhere under
    ``recursive``; links are never followed. Returns what was removed."""
    removed: list[Path] = []

    def scan(folder: Path, deep: bool) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:  # missing or unreadable: nothing of ours to clean there
            return
        for entry in entries:
            if _TEMP_NAME.match(entry.name):
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                if _owner_gone(entry.name, mtime):
                    _remove(Path(entry.path))
                    removed.append(Path(entry.path))
                continue
            if deep and entry.is_dir(follow_symlinks=False):
                scan(Path(entry.path), True)

    for root in recursive:
        scan(Path(root), True)
    for root in roots:
        scan(Path(root), False)
    return removed


_scratch: dict[str, object] = {}


def clean_start(workspace: Path, scratch_root: Path, outputs: Iterable[Path] = ()) -> Path:
    """What a command that writes does first: remove what killed processes left behind (anywhere under
    ``workspace`` and ``scratch_root``, and beside each of ``outputs``), then open this process's scratch
    folder in ``scratch_root`` and return it.

    The scratch folder becomes ``tempfile``'s directory (so temporary files of Portrait and of the
    libraries it calls land there) and holds DuckDB's spill folders (:func:`spill_folder`). A killed process
    leaves it behind; the next start removes it. :func:`close_scratch` removes it at a normal exit.
    """
    removed = remove_stale({Path(p).parent for p in outputs}, recursive=[Path(workspace), Path(scratch_root)])
    if removed:
        logger.info("removed %d temporary file(s) left by stopped processes", len(removed))
    current = _scratch.get("path")
    if isinstance(current, Path) and current.is_dir():
        return current
    path = temp_beside(Path(scratch_root) / "scratch", directory=True)
    _scratch.setdefault("tempdir", tempfile.tempdir)  # what close_scratch gives back
    _scratch["path"] = path
    tempfile.tempdir = str(path)
    return path


def close_scratch() -> None:
    """Remove this process's scratch folder and give ``tempfile`` its previous directory back."""
    path = _scratch.pop("path", None)
    if "tempdir" in _scratch:
        tempfile.tempdir = _scratch.pop("tempdir")  # type: ignore[assignment]
    if isinstance(path, Path):
        _remove(path)


@contextmanager
def spill_folder(near: Path) -> Iterator[Path]:
    """A new folder for one DuckDB connection to spill to (its ``temp_directory``): in the command's scratch
    folder (see :func:`clean_start`), else beside ``near``; removed afterwards, and by :func:`clean_start`
    if the process is killed. Each connection gets its own (DuckDB names its spill files alike)."""
    scratch = _scratch.get("path")
    folder = temp_beside(
        (scratch if isinstance(scratch, Path) else Path(near)) / "duckdb-spill", directory=True
    )
    try:
        yield folder
    finally:
        _remove(folder)


# ---- what a failed write says --------------------------------------------------------------------------

_DISK_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# DuckDB reports an OS error in its message: 'Could not write file "<path>": No space left on device'
# (with '"errno":"28"' when the write was asynchronous).
_DUCKDB_PATH = re.compile(r'(?:file|directory)\s*\\?"(?P<path>[^"\\]+)\\?"')
_DUCKDB_ERRNO = re.compile(r'"errno"\s*:\s*"(?P<errno>\d+)"')


def _public_name(path: Path) -> Path:
    """The target a temporary path stands for (the temporary path itself if it is not one of ours)."""
    match = _TEMP_NAME.match(path.name)
    if match is None:
        return path
    return path.with_name(match["name"])


def check_writable(target: Path) -> str | None:
    """Whether a file can be written at ``target``, checked before any work: its folder is created if missing
    and takes a probe file (a :func:`temp_beside` file, removed again). Returns ``cannot write <target>:
    <reason>`` when not, else None."""
    blocking = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        return f"cannot write {target}: {blocking} is a file, not a folder"
    try:
        temp_beside(target).unlink()
    except OSError as exc:
        return f"cannot write {target}: {exc.strerror or exc}"
    return None


def describe_write_error(exc: BaseException) -> str | None:
    """One line for a write that failed on a full, read-only or forbidden disk -- ``cannot write <path>:
    <reason>``, naming the file the user knows rather than its temporary name -- or None for other errors."""
    text = str(exc)
    code = exc.errno if isinstance(exc, OSError) else None
    path = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    if code is None:  # DuckDB's IOException carries the OS error in its text only
        found = _DUCKDB_ERRNO.search(text)
        if found:
            code = int(found["errno"])
        else:
            code = next(
                (c for c in _DISK_ERRORS if os.strerror(c).lower() in text.lower()),
                None,
            )
        where = _DUCKDB_PATH.search(text)
        path = where["path"] if where else None
    if code not in _DISK_ERRORS:
        return None
    reason = _DISK_ERRORS[code]
    if not path:
        return f"cannot write: {reason}"
    return f"cannot write {_public_name(Path(os.fsdecode(path)))}: {reason}"


__all__ = [
    "atomic_path",
    "check_writable",
    "describe_write_error",
    "clean_start",
    "close_scratch",
    "publish",
    "remove_stale",
    "spill_folder",
    "temp_beside",
    "write_text_atomic",
]

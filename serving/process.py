"""The service as a child process: ``bentoml serve serving.service:Portrait`` on a port of 127.0.0.1.

What the HTTP tests, the replica test and the benchmarks start when they need a real server: one place that
knows how to start it (its own session, so that its workers go with it), when it is ready (``/readyz``), how
much memory it holds (the server and every process under it) and how to stop it (SIGTERM to its process
group, SIGKILL if it lingers) or kill it as a dying machine would (SIGKILL of the whole tree).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from portrait.settings import Settings

SERVICE = "serving.service:Portrait"
ROOT = Path(__file__).resolve().parents[1]


class ServiceExited(RuntimeError):
    """The server process ended before it was ready."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """A ``bentoml serve`` child process on ``127.0.0.1:port``, its output in ``log``.

    ``env`` is the child's whole environment (default: this process's, without any ``PORTRAIT_*``
    variable); ``home`` becomes ``PORTRAIT_HOME``; BentoML's home is the workspace's folder for the port
    (:meth:`~portrait.settings.Settings.bentoml_home`) unless ``env`` names one; ``api_keys`` (key ->
    scopes), when given, ``PORTRAIT_API_KEYS``. The process starts at construction.
    """

    def __init__(
        self,
        home: Path | None,
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        api_keys: Mapping[str, Iterable[str]] | None = None,
        port: int | None = None,
        target: str = SERVICE,
        extra: Iterable[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        child = (
            dict(env)
            if env is not None
            else {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
        )
        if home is not None:
            child["PORTRAIT_HOME"] = str(home)
        if "BENTOML_HOME" not in child:  # its own Prometheus folder (see Settings.bentoml_home)
            workspace = Path(child.get("PORTRAIT_HOME", ROOT))
            child["BENTOML_HOME"] = str(Settings(home=workspace).bentoml_home(self.port))
        if api_keys is not None:
            child["PORTRAIT_API_KEYS"] = json.dumps({key: list(scopes) for key, scopes in api_keys.items()})
        self.env: dict[str, str] = child
        command = [sys.executable, "-m", "bentoml", "serve", target, *extra]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.started = time.perf_counter()
        self.ready_s = float("nan")
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=child, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 now; :class:`ServiceExited` if the process has ended."""
        if self.process.poll() is not None:
            raise ServiceExited(
                f"bentoml serve exited with {self.process.returncode}: {self.log_text()[-3000:]}"
            )
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 240) -> ServiceProcess:
        """Wait until ready (``ready_s`` is then the time since the start); :class:`TimeoutError` after
        ``timeout_s``, :class:`ServiceExited` if the process ends first."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout_s:.0f} s: {self.log_text()[-3000:]}")
            time.sleep(0.5)
        self.ready_s = time.perf_counter() - self.started
        return self

    def pids(self) -> set[int]:
        """The server's and every process's under it."""
        try:
            root = psutil.Process(self.process.pid)
            return {root.pid, *(c.pid for c in root.children(recursive=True))}
        except psutil.Error:
            return set()

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return total

    def stop(self) -> None:
        """SIGTERM to the server's process group (the server and its workers), SIGKILL after 30 s."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL the server and every process under it, as when its machine or container dies. (Killing
        ``bentoml serve`` alone is not enough: workers in sessions of their own keep answering on the
        socket they inherited.)"""
        try:
            tree = [psutil.Process(self.process.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=30)
        self.process.wait(timeout=30)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["SERVICE", "ServiceExited", "ServiceProcess", "free_port"]

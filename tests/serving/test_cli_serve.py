"""`portrait serve` on a port already taken: a clear error naming the fix, not BentoML's traceback."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from portrait.cli import EXIT_UNAVAILABLE, app


def test_serve_on_a_busy_port_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTRAIT_HOME", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == EXIT_UNAVAILABLE
    assert f"127.0.0.1:{port}" in result.output and "PORTRAIT_PORT" in result.output

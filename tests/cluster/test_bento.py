"""`bentoml build` turns the service into a Bento: the code the service imports and uv.lock's dependencies,
no model (a replica loads the registry's champions when it starts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ci_required

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("portrait", "features", "serving", "training")
EXPORT = ["export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-o", "requirements.lock.txt"]


def _uv() -> list[str]:
    """How to run uv here: the module of this interpreter or of python3, or a uv binary."""
    for command in ([sys.executable, "-m", "uv"], ["python3", "-m", "uv"], [shutil.which("uv") or "uv"]):
        try:
            subprocess.run([*command, "--version"], check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        return command
    message = "uv is not installed (the Makefile installs it: python3 -m pip install uv)"
    if ci_required():
        pytest.fail(message)
    pytest.skip(message)


def test_bentoml_build(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for name in ("bentofile.yaml", "pyproject.toml", "uv.lock", "README.md"):
        shutil.copy2(REPO / name, context / name)
    for package in SOURCES:
        shutil.copytree(REPO / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([*_uv(), *EXPORT], cwd=context, check=True, capture_output=True, timeout=300)

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-f", "bentofile.yaml", "--output", "tag", str(context)],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    bentos = list((tmp_path / "bentoml" / "bentos" / "portrait").glob("*/bento.yaml"))
    assert len(bentos) == 1, build.stdout[-2000:]
    bento = bentos[0].parent
    manifest = yaml.safe_load(bentos[0].read_text())
    assert manifest["service"] == "serving.service:Portrait"
    assert manifest["models"] == []  # the champions come from the registry at start-up
    assert {e["name"]: e["value"] for e in manifest["envs"]}["PORTRAIT_PROFILE"] == "production"

    pins = (bento / "env" / "python" / "requirements.txt").read_text()
    for package in ("feast", "mlflow", "lightgbm", "bentoml", "redis"):
        assert f"\n{package}==" in f"\n{pins}", package
    src = bento / "src"
    assert (src / "serving" / "service.py").is_file() and not (src / "tests").exists()
    assert not (src / "training").exists() and not (src / "portrait" / "cli.py").exists()

    # The service imports from the Bento's code alone (nothing it needs was left out).
    check = (
        "import sys, serving.service\n"
        "mods = [m for n, m in sys.modules.items() if n.split('.')[0] in ('portrait', 'features', 'serving', 'training')]\n"
        f"outside = [m.__name__ for m in mods if not str(getattr(m, '__file__', '') or '').startswith({str(src)!r})]\n"
        "assert not outside, outside\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", check], cwd=src, env=env, capture_output=True, text=True, timeout=300
    )
    assert imported.returncode == 0, imported.stderr[-3000:]

"""What every benchmark script shares: writing its own section of ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(text: str, section: str, path: Path = RESULTS) -> None:
    """Replace the ``section`` (e.g. ``## Serving``) of ``path`` with ``text``, or append it.

    Creates the file when absent. Only that section changes; the file is read right before writing,
    because other benchmarks write their own sections, possibly at the same time.
    """
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text.rstrip() + "\n\n", current, count=1)
    else:
        updated = current.rstrip() + "\n\n" + text
    path.write_text(updated.rstrip() + "\n")


def publish(text: str, section: str, *, write: bool = True, path: Path = RESULTS) -> None:
    """Print a benchmark's report and, unless ``write`` is false, put it into its section of ``path``."""
    print("\n" + text)  # noqa: T201 - a benchmark script's output
    if write:
        write_section(text, section, path)
        print(f"written to {path}")  # noqa: T201

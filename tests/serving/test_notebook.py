"""The review notebook runs top to bottom on a small trained workspace."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "1.0-portrait-model-review.ipynb"


def test_review_notebook_executes(served):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(served.home)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the churn run's plots were found and shown
    text = " ".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "C0000001" in text and "test" in text

"""Serving does not load the feature pipeline (Ibis): it only reads the Feast store."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import serving.service
loaded = sorted(m for m in sys.modules if m == 'ibis' or m.startswith('ibis.') or m == 'features.pipeline')
assert not loaded, loaded[:10]
import features.store
from features.feast_repo import feature_views
assert 'features.pipeline' not in sys.modules and 'ibis' not in sys.modules
"""


def test_importing_serving_does_not_import_the_pipeline_or_ibis():
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CHECK], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]

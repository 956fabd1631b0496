"""The insight report rendered by a real browser: Debian's headless Chromium, no mocks.

The report comes from the running service (``GET /v1/audiences/{id}/insight.html``); Chromium opens it twice:
once with a measuring script appended (``--dump-dom`` prints the DOM after the script ran: each chart's
``getBoundingClientRect`` and its bars' sizes), once as it is for a screenshot that must show the charts'
colours. ``make test`` installs Chromium (apt-get); under ``CI`` a missing Chromium fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from portrait.audience.report import AUDIENCE_COLOUR, UP_COLOUR

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
MEASURE = """
<script>
  const charts = Array.from(document.querySelectorAll("svg.chart")).map((svg) => {
    const box = svg.getBoundingClientRect();
    const bars = Array.from(svg.querySelectorAll("rect.bar")).map((r) => r.getBoundingClientRect());
    return {width: box.width, height: box.height, bars: bars.length,
            visible_bars: bars.filter((b) => b.width > 0 && b.height > 0).length};
  });
  const out = document.createElement("pre");
  out.id = "measure";
  out.textContent = JSON.stringify({charts: charts, title: document.title});
  document.body.appendChild(out);
</script>
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Chromium is not installed (Debian: apt-get install chromium; `make test` installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def report(api) -> str:
    r = api.post(
        "/v1/audiences",
        json={"filter": {"field": "churn_tier", "op": "eq", "value": "high"}, "name": "browser"},
    )
    assert r.status_code == 201, r.text
    page = api.get(f"/v1/audiences/{r.json()['id']}/insight.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    return page.text


def test_the_report_is_self_contained(report: str):
    assert "<script" not in report.lower()
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", report, flags=re.I)
    assert not external, external
    assert "@import" not in report and "url(" not in report


def test_the_report_renders_its_charts_in_chromium(report: str, tmp_path: Path):
    page = tmp_path / "report.html"
    page.write_text(report.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    done = run_chromium(
        "--virtual-time-budget=3000", "--dump-dom", page.as_uri(), profile=tmp_path / "profile"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="measure">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, done.stdout[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert measured["title"].startswith("Audience insight")
    charts = measured["charts"]
    assert len(charts) >= 4  # the lift chart and one per tier column at least
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 20, chart
        assert chart["bars"] > 0 and chart["visible_bars"] == chart["bars"], chart


def test_a_screenshot_of_the_report_shows_the_charts(report: str, tmp_path: Path):
    import matplotlib.image as mpimg

    page = tmp_path / "report.html"
    page.write_text(report, encoding="utf-8")
    shot = tmp_path / "report.png"
    done = run_chromium(
        "--window-size=1000,2400", f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "profile"
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = (mpimg.imread(shot)[:, :, :3] * 255).round().astype(int)
    assert (pixels < 250).any(axis=2).mean() > 0.02  # not a blank page

    def share_of(colour: str) -> float:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        return float((np.abs(pixels - rgb).sum(axis=2) < 30).mean())

    assert share_of(AUDIENCE_COLOUR) > 0.001  # the tier charts' audience bars
    assert share_of(UP_COLOUR) > 0.0005  # the lift chart's bars

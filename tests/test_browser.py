"""A real browser opens the demo's pages: headless Chromium renders index.html and a tear sheet.

Chromium runs without a driver: ``--dump-dom`` prints the DOM once the page has loaded and
its scripts ran, ``--screenshot`` writes a PNG. A copy of each page gets a small inline script
that, on ``load``, writes what rendered (title, tables, images with a decoded size, charts'
drawn size) into the DOM, where the dump shows it. The test set-up (``make test``) installs
Chromium from the distribution's packages when it can; where it could not, this test skips
and says so.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kronos_quant.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var charts = Array.prototype.slice.call(document.querySelectorAll("svg"));
  var report = {
    title: document.title,
    tables: document.querySelectorAll("table").length,
    images: images.length,
    images_loaded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    charts: charts.length,
    charts_drawn: charts.filter(function (s) {
      return s.getBoundingClientRect().width > 50;
    }).length,
    text: document.body.innerText.length
  };
  var out = document.createElement("pre");
  out.id = "kq-probe";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed and the test set-up could not install it "
                "(as root: apt-get install -y chromium); the browser check needs a real browser")


def browse(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def probe(page: Path, tmp: Path) -> dict:
    """Load a copy of ``page`` (same folder, so relative links hold) with the probe script."""
    copy = page.with_name(f".probe-{page.name}")
    text = page.read_text(encoding="utf-8")
    cut = text.rfind("</body>")
    copy.write_text(text[:cut] + PROBE + text[cut:], encoding="utf-8")
    done = browse(copy, tmp, "--virtual-time-budget=10000", "--dump-dom")
    found = re.search(r'<pre id="kq-probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not run; chromium said: {done.stderr[-1500:]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


def screenshot(page: Path, tmp: Path) -> np.ndarray:
    from matplotlib.image import imread

    shot = tmp / f"{page.stem}.png"
    done = browse(page, tmp, "--window-size=1200,1600", f"--screenshot={shot}")
    assert shot.is_file(), f"no screenshot; chromium said: {done.stderr[-1500:]}"
    return imread(shot)  # (H, W, 3 or 4) floats in [0, 1]


def assert_not_blank(pixels: np.ndarray) -> None:
    rgb = pixels[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05, "the screenshot is a blank page"
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 50, "almost no colours drawn"


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["-q", "demo", "--out", str(out), "--steps", "forecast,tearsheet",
                 "--pred-len", "4", "--samples", "4", "--score-samples", "2"]) == 0
    return out


def test_the_demo_index_renders_with_its_charts(demo_out, tmp_path):
    seen = probe(demo_out / "index.html", tmp_path)
    assert seen["title"] == "kronos-quant demo"
    assert seen["tables"] >= 8  # key numbers, steps, and each step's numbers and tables
    # Every chart of the steps that ran: fan chart, IC, calibration, equity.
    assert seen["images"] >= 4 and seen["images_loaded"] == seen["images"], seen
    assert_not_blank(screenshot(demo_out / "index.html", tmp_path))


def test_the_tear_sheet_renders_with_the_signal_section(demo_out, tmp_path):
    page = demo_out / "tearsheet" / "tearsheet.html"
    seen = probe(page, tmp_path)
    assert "Tearsheet" in seen["title"]
    assert seen["tables"] >= 3 and seen["charts"] >= 5
    assert seen["charts_drawn"] == seen["charts"], seen
    html = page.read_text(encoding="utf-8")
    assert 'id="kronos-signal-quality"' in html and "RankIC" in html
    assert_not_blank(screenshot(page, tmp_path))

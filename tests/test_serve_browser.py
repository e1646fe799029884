"""A real browser on a running ``kronos-quant serve``: the dashboard's scripts draw the forecast
chart from the API and show the live loop's last decision from its ledger.

The test starts the command on a free loopback port with the embedded demo model and one
``--state`` folder (a live loop replayed here), then headless Chromium loads the forecast page
(``/?example=1`` loads the server's example series and forecasts it) and the live page. The
pages record what they rendered in ``<body data-…>`` attributes, which ``--dump-dom`` shows
once their scripts ran; each page also gets a screenshot (kept in pytest's tmp folder). Skips
only where Chromium is not installed and could not be (see tests/test_browser.py).
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from kronos_quant.strategies.ledger import Ledger, from_ms
from serve_support import hourly_candles, replay_steps, running_serve
from test_browser import FLAGS, assert_not_blank, chromium

from kronos_quant import KronosPredictor
from kronos_quant.testing import tiny_pair

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "build" / "screenshots"


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    tok, net = tiny_pair(0)
    model = KronosPredictor(net, tok, device="cpu", max_context=32)
    candles = hourly_candles()
    folder = tmp_path_factory.mktemp("serve-browser") / "paper"
    for _ in replay_steps(folder, model, candles, candles["AAA"].index[30:40]):
        pass
    return folder


@pytest.fixture(scope="module")
def server(state):
    chromium()  # skip before starting anything when there is no browser
    with running_serve("--state", str(state)) as (url, _output):
        yield url


def render(url: str, tmp: Path, name: str) -> tuple[dict[str, str], str]:
    """The page's body attributes once its scripts ran (and the DOM), plus a screenshot."""
    profile = tmp / f"profile-{name}"
    common = [chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000"]
    done = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                          timeout=180)
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body, f"no page; chromium said: {done.stderr[-1500:]}"
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    shot = tmp / f"{name}.png"
    subprocess.run([*common, "--window-size=1280,1500", f"--screenshot={shot}", url],
                   capture_output=True, text=True, timeout=180)
    assert shot.is_file(), "no screenshot"
    from matplotlib.image import imread

    assert_not_blank(imread(shot))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SHOTS / shot.name)
    return attrs, done.stdout


def test_forecast_page_draws_its_chart_from_the_api(server, tmp_path):
    attrs, dom = render(f"{server}/?example=1", tmp_path, "serve-forecast")
    assert attrs.get("state") == "drawn", attrs
    # history, two bands (two traces each), median, mean; one table row per forecast bar
    assert int(attrs["traces"]) == 7 and int(attrs["rows"]) == 10
    assert dom.count("<tr>") >= 10 + 12  # quantile table and the scores
    assert "main-svg" in dom  # Plotly drew (from the locally served plotly.min.js)
    assert "MSFT (daily, adjusted): close, 32 paths" in dom  # the example, named by the server


def test_live_page_shows_the_ledgers_last_decision(server, state, tmp_path):
    with Ledger(state) as ledger:
        decisions = ledger.table("decisions").sort_values(["ts", "symbol"])
    last = decisions.iloc[-1]
    attrs, dom = render(f"{server}/loops/{state.name}", tmp_path, "serve-live")
    assert attrs.get("state") == "loaded", attrs
    assert attrs["last-decision"] == f"{from_ms(int(last['ts']))} {last['symbol']}"
    assert "Heartbeat" in dom and f"{len(decisions)}" in dom


def test_readme_service_block_runs_as_written(server, tmp_path):
    """The bash block of the README's "## Service and dashboard" section: each ``kronos-quant
    serve`` line parses with the real command's parser, and its curl call, pointed at the
    running server, returns the forecast of the embedded series as JSON."""
    from kronos_quant.assets import ASSETS
    from kronos_quant.cli import build_parser

    section = (ROOT / "README.md").read_text().split("## Service and dashboard", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [c.split("#", 1)[0].strip() for c in block.replace("\\\n", " ").splitlines()]
    serves = [shlex.split(c)[1:] for c in commands if c.startswith("kronos-quant serve")]
    assert len(serves) == 2
    for argv in serves:
        assert build_parser().parse_args(argv).command == "serve"
    curl = next(c for c in commands if c.startswith("curl"))
    (tmp_path / "bars.csv").write_text((ASSETS / "series.csv").read_text())
    done = subprocess.run(["bash", "-c", curl.replace("http://127.0.0.1:8000", server)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert len(reply["timestamps"]) == 10, sorted(reply)

"""``kronos_quant.serve`` through FastAPI's test client: every endpoint, auth, limits, bad bars,
batching, the forecast equal to the library's, and live ledgers read while being written."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from kronos_quant.strategies.ledger import Ledger
from serve_support import SYMBOLS, free_port, hourly_candles, replay_steps, running_serve

from kronos_quant import KronosPredictor
from kronos_quant.forecast import forecast_summary
from kronos_quant.serve import ServeSettings, check_bind, create_app
from kronos_quant.serve.ledger_view import LedgerView
from kronos_quant.signals import score_forecast, score_panel
from kronos_quant.testing import random_walk_bars, tiny_pair

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def model():
    tok, net = tiny_pair(0)
    return KronosPredictor(net, tok, device="cpu", max_context=32)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model, example=random_walk_bars())) as c:
        yield c


def records(frame: pd.DataFrame) -> list[dict]:
    return [{"timestamp": str(t), **{k: float(v) for k, v in row.items()}}
            for t, row in frame.iterrows()]


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index_label="timestamp")


# -- /health and /forecast -----------------------------------------------------------------

def test_health_names_model_and_version(client):
    reply = client.get("/health").json()
    assert reply == {"status": "ok", "model": "kronos", "version": "0.1.0"}


def test_forecast_equals_the_library_json_and_csv(client, model):
    bars = random_walk_bars(40, seed=1)
    fc = model.forecast(bars, pred_len=5, sample_count=8, seed=11)
    body = {"bars": records(bars), "pred_len": 5, "sample_count": 8, "seed": 11,
            "quantiles": [0.1, 0.5, 0.9], "paths": True}
    reply = client.post("/forecast", json=body)
    assert reply.status_code == 200, reply.text
    out = reply.json()
    np.testing.assert_array_equal(np.array(out["paths"]), fc.paths)
    assert out["timestamps"] == [str(t) for t in fc.index]
    table = fc.quantile([0.1, 0.5, 0.9])
    for q in (0.1, 0.5, 0.9):
        for col in fc.columns:
            assert out["quantiles"][f"{q:g}"][col] == table[q][col].tolist()
    assert out["mean"]["close"] == fc.mean()["close"].tolist()
    assert out["scores"] == pytest.approx(score_forecast(fc).to_dict(), nan_ok=True)
    assert out["last"]["close"] == float(fc.last["close"])
    assert out["summary"] == forecast_summary(fc, model_label="kronos")
    assert out["seed"] == 11 and out["sample_count"] == 8 and out["pred_len"] == 5
    # The same bars as CSV with the settings as query parameters give the same numbers.
    csv = client.post("/forecast?pred_len=5&sample_count=8&seed=11&quantiles=0.1,0.5,0.9",
                      content=csv_text(bars), headers={"content-type": "text/csv"})
    assert csv.status_code == 200, csv.text
    assert csv.json()["quantiles"] == out["quantiles"] and "paths" not in csv.json()


def test_forecast_without_seed_returns_the_seed_that_reproduces_it(client, model):
    bars = random_walk_bars(30, seed=2)
    out = client.post("/forecast", json={"bars": records(bars), "pred_len": 3,
                                         "sample_count": 4, "paths": True}).json()
    fc = model.forecast(bars, pred_len=3, sample_count=4, seed=out["seed"])
    np.testing.assert_array_equal(np.array(out["paths"]), fc.paths)
    # The server's defaults fill what a request leaves out.
    defaults = ServeSettings()
    out = client.post("/forecast", json={"bars": records(bars)}).json()
    assert out["pred_len"] == defaults.pred_len and out["sample_count"] == defaults.sample_count
    assert sorted(out["quantiles"]) == [f"{q:g}" for q in defaults.quantiles]


async def _concurrent(app, bodies: list[dict]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        return await asyncio.gather(*(c.post("/forecast", json=b) for b in bodies))


def test_concurrent_requests_share_one_generation_call_and_equal_single_calls(model):
    app = create_app(model, settings=ServeSettings(batch_window_ms=300))
    series = [random_walk_bars(n, seed=k) for k, n in enumerate([30, 30, 25, 30, 28, 30])]
    bodies = [{"bars": records(s), "pred_len": 4, "sample_count": 6, "seed": 100 + k,
               "paths": True} for k, s in enumerate(series)]
    bodies.append({**bodies[0], "pred_len": 3})  # other settings: its own group
    replies = asyncio.run(_concurrent(app, bodies))
    assert [r.status_code for r in replies] == [200] * len(bodies)
    batcher = app.state.batcher
    assert batcher.batches == 2 and batcher.largest == len(series)
    for body, reply, bars in zip(bodies, replies, [*series, series[0]], strict=True):
        fc = model.forecast(bars, pred_len=body["pred_len"], sample_count=6, seed=body["seed"])
        out = reply.json()
        np.testing.assert_array_equal(np.array(out["paths"]), fc.paths)
        # The group's replies are built together; each holds the numbers of its forecast alone.
        table = fc.quantile([0.1, 0.5, 0.9])
        for q in (0.1, 0.5, 0.9):
            for col in fc.columns:
                assert out["quantiles"][f"{q:g}"][col] == table[q][col].tolist()
        assert out["mean"]["volume"] == fc.mean()["volume"].tolist()
        alone = {k: (None if np.isnan(v) else v) for k, v in score_forecast(fc).items()}
        assert out["scores"] == alone
        assert out["summary"] == forecast_summary(fc, model_label="kronos")


def test_a_lone_request_does_not_wait_for_the_batch_window(model):
    """The window only holds a batch while other requests are on their way."""
    app = create_app(model, settings=ServeSettings(batch_window_ms=5000))
    body = {"bars": records(random_walk_bars(30, seed=1)), "pred_len": 2, "sample_count": 2,
            "seed": 0}
    started = time.perf_counter()
    replies = asyncio.run(_concurrent(app, [body]))
    assert replies[0].status_code == 200
    assert time.perf_counter() - started < 2.5  # well under the 5 s window
    assert app.state.batcher.expected == 1


def test_a_failing_model_call_is_a_500_and_the_server_keeps_serving(model, monkeypatch):
    app = create_app(model, settings=ServeSettings(batch_window_ms=200))
    real = model.sample_prepared

    def flaky(series, *args, **kwargs):
        if any(len(s.x) == 23 for s in series):
            raise RuntimeError("CUDA out of memory\nlong details that must not be sent")
        return real(series, *args, **kwargs)

    monkeypatch.setattr(model, "sample_prepared", flaky)
    good = [{"bars": records(random_walk_bars(30, seed=k)), "pred_len": 2, "sample_count": 4,
             "seed": k} for k in range(3)]
    bad = {**good[0], "bars": good[0]["bars"][:23]}
    replies = asyncio.run(_concurrent(app, [good[0], bad, good[1]]))
    assert [r.status_code for r in replies] == [200, 500, 200]
    assert replies[1].json()["detail"] == ("forecast failed (RuntimeError: CUDA out of memory)")
    assert asyncio.run(_concurrent(app, [good[2]]))[0].status_code == 200


def test_the_model_process_gives_the_library_numbers_and_outlives_a_crash(model):
    """--model-process: the same replies as the model thread; a killed model process costs
    the call in flight a 500 and is replaced, and the server keeps serving."""
    app = create_app(model, settings=ServeSettings(model_process=True, batch_window_ms=300))
    series = [random_walk_bars(30, seed=k) for k in range(3)]
    bodies = [{"bars": records(s), "pred_len": 4, "sample_count": 6, "seed": 40 + k,
               "paths": True} for k, s in enumerate(series)]
    with TestClient(app) as client:  # its lifespan starts the process before any request
        replies = asyncio.run(_concurrent(app, bodies))
        assert [r.status_code for r in replies] == [200] * 3
        assert app.state.batcher.largest == 3
        for body, reply, bars in zip(bodies, replies, series, strict=True):
            fc = model.forecast(bars, pred_len=4, sample_count=6, seed=body["seed"])
            np.testing.assert_array_equal(np.array(reply.json()["paths"]), fc.paths)
            assert reply.json()["summary"] == forecast_summary(fc, model_label="kronos")
        frames = {"AAA": series[0], "BBB": series[1]}
        scored = client.post("/score", json={"bars": {k: records(v) for k, v in frames.items()},
                                             "lookback": 20, "pred_len": 3, "sample_count": 4,
                                             "seed": 5})
        assert scored.status_code == 200, scored.text
        from kronos_quant.data import panel_from_frames

        panel = panel_from_frames(frames)
        last = panel.index.get_level_values("datetime").max()
        want = score_panel(model, panel, lookback=20, pred_len=3, sample_count=4, seed=5,
                           start=last, end=last, verbose=False).xs((last, "AAA")).to_dict()
        assert scored.json()["scores"]["AAA"] == pytest.approx(want, nan_ok=True)

        pid = app.state.batcher.executor.submit(os.getpid).result()
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        lost = client.post("/forecast", json=bodies[0])
        assert lost.status_code == 500
        assert "model process died" in lost.json()["detail"]
        again = client.post("/forecast", json=bodies[0])
        assert again.status_code == 200
        assert again.json()["paths"] == replies[0].json()["paths"]


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` started by multiprocessing's spawn (not its resource
    tracker)."""
    kids = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]
    return [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (nobody may reap an orphan here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("stop", ["terminate", "kill"])
def test_the_model_process_ends_with_the_server(stop):
    """Stopped (SIGTERM) or killed (SIGKILL), the server leaves no model process behind."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kronos_quant.cli", "--quiet", "serve",
                               "--port", str(port), "--threads", "1", "--model-process"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):  # bounded: 60 s for the model and its process to start
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        children = _children(server.pid)
        assert len(children) == 1 and _alive(children[0])
        getattr(server, stop)()
        server.wait(timeout=30)
        for _ in range(100):  # bounded: 10 s
            if not _alive(children[0]):
                break
            time.sleep(0.1)
        assert not _alive(children[0]), f"model process {children[0]} outlived the server"
    finally:
        server.kill()


def test_too_many_pending_forecasts_get_503(model):
    app = create_app(model, settings=ServeSettings(batch_window_ms=500, max_pending=2))
    bodies = [{"bars": records(random_walk_bars(30, seed=k)), "pred_len": 2, "sample_count": 2,
               "seed": k} for k in range(5)]
    replies = asyncio.run(_concurrent(app, bodies))
    assert sorted(r.status_code for r in replies) == [200, 200, 503, 503, 503]
    busy = next(r for r in replies if r.status_code == 503)
    assert "max_pending=2" in busy.json()["detail"] and busy.headers["retry-after"] == "1"
    assert app.state.batcher.pending == 0


# -- bad bars and limits -------------------------------------------------------------------

def library_message(model, frame: pd.DataFrame) -> str:
    with pytest.raises((ValueError, TypeError)) as err:
        model.forecast(frame, pred_len=2, sample_count=2, seed=0)
    return str(err.value)


@pytest.mark.parametrize("spoil", ["negative", "text", "missing", "duplicate", "nan"])
def test_bad_bars_get_the_library_message(client, model, spoil):
    bars = random_walk_bars(20, seed=3)
    rows = records(bars)
    if spoil == "negative":
        rows[5]["close"] = -17.6
    elif spoil == "text":
        rows[7]["open"] = "abc"
    elif spoil == "missing":
        rows = [{k: v for k, v in r.items() if k != "low"} for r in rows]
    elif spoil == "duplicate":
        rows[4]["timestamp"] = rows[3]["timestamp"]
    else:
        rows[2]["volume"] = None
    reply = client.post("/forecast", json={"bars": rows, "pred_len": 2, "sample_count": 2})
    assert reply.status_code == 422
    frame = pd.DataFrame.from_records(rows)
    assert reply.json()["detail"] == library_message(model, frame)
    assert "\n" not in reply.json()["detail"]


def test_bad_bodies_are_422_with_one_line(client):
    cases = [(b"{not json", "application/json", "not valid JSON"),
             (b"<xml/>", "application/xml", "unsupported content type"),
             (json.dumps({"bars": [], "bogus": 1}).encode(), "application/json", "bogus"),
             (json.dumps({"bars": [], "pred_len": 0}).encode(), "application/json", "pred_len"),
             (json.dumps({"bars": records(random_walk_bars(20)), "quantiles": [0.5, 1.2]}).encode(),
              "application/json", "quantiles must be numbers in (0, 1)"),
             (b"timestamp,open\n", "text/csv", "bars: no bars given"),
             (b"timestamp,open\n2024-01-02,1\n", "text/csv", "missing price columns")]
    for body, kind, words in cases:
        reply = client.post("/forecast", content=body, headers={"content-type": kind})
        assert reply.status_code == 422, (body, reply.text)
        assert words in reply.json()["detail"], reply.json()


def test_every_limit_is_named(model):
    settings = ServeSettings(pred_len=2, sample_count=4, lookback=10,
                             max_body_bytes=20_000, max_bars=30, max_pred_len=5, max_samples=8,
                             max_reply_paths=4, max_quantiles=3, max_instruments=2,
                             max_decisions=50)
    bars = records(random_walk_bars(20))
    with TestClient(create_app(model, settings=settings)) as c:
        def detail(body, status=422):
            reply = c.post("/forecast", json=body)
            assert reply.status_code == status, reply.text
            return reply.json().get("detail", "")

        assert "max_bars=30" in detail({"bars": bars + bars})
        assert "max_pred_len=5" in detail({"bars": bars, "pred_len": 6})
        assert "max_samples=8" in detail({"bars": bars, "sample_count": 9})
        assert "max_reply_paths=4" in detail({"bars": bars, "sample_count": 5, "paths": True})
        assert "max_quantiles=3" in detail({"bars": bars, "quantiles": [0.1, 0.2, 0.3, 0.4]})
        detail({"bars": bars, "sample_count": 8, "pred_len": 5}, 200)  # at the limits: fine
        big = {"bars": bars * 10}
        assert "max_body_bytes=20000" in detail(big, 413)
        # A streamed body without Content-Length is counted and cut off too.
        chunks = (json.dumps(big).encode()[i:i + 4096] for i in range(0, 60_000, 4096))
        reply = c.post("/forecast", content=chunks, headers={"content-type": "application/json"})
        assert reply.status_code == 413
        three = {k: bars for k in ("A", "B", "C")}
        reply = c.post("/score", json={"bars": three, "lookback": 10})
        assert reply.status_code == 422 and "max_instruments=2" in reply.json()["detail"]
    # pred_len is also capped by the model's own context.
    with TestClient(create_app(model)) as c:
        reply = c.post("/forecast", json={"bars": bars, "pred_len": 33})
        assert "max_context=32" in reply.json()["detail"]


# -- /score ---------------------------------------------------------------------------------

def test_score_equals_score_panel_at_the_last_date(client, model):
    frames = {name: random_walk_bars(30, seed=k) for k, name in enumerate(["AAA", "BBB", "CCC"])}
    frames["CCC"] = frames["CCC"].iloc[:-1]  # no bar on the last date: not scored
    body = {"bars": {k: records(v) for k, v in frames.items()}, "lookback": 20, "pred_len": 3,
            "sample_count": 4, "seed": 5}
    reply = client.post("/score", json=body)
    assert reply.status_code == 200, reply.text
    out = reply.json()
    from kronos_quant.data import panel_from_frames

    panel = panel_from_frames(frames)
    last = panel.index.get_level_values("datetime").max()
    expected = score_panel(model, panel, lookback=20, pred_len=3, sample_count=4, seed=5,
                           start=last, end=last, verbose=False)
    assert out["datetime"] == str(last) and sorted(out["scores"]) == ["AAA", "BBB"]
    for inst in ("AAA", "BBB"):
        want = expected.xs((last, inst)).to_dict()
        assert out["scores"][inst] == pytest.approx(want, nan_ok=True)
    assert out["settings"]["seed"] == 5 and out["settings"]["lookback"] == 20
    short = client.post("/score", json={**body, "lookback": 200})
    assert short.status_code == 422 and "lookback" in short.json()["detail"]


# -- auth -----------------------------------------------------------------------------------

def test_settings_refuse_defaults_above_their_limits():
    with pytest.raises(ValueError, match="pred_len=10 is above max_pred_len=5"):
        ServeSettings(max_pred_len=5)
    with pytest.raises(ValueError, match="max_bars must be an integer >= 1"):
        ServeSettings(max_bars=0)


def test_check_bind_keeps_strangers_out_without_a_token():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(ValueError, match="set a token"):
            check_bind(host, None)
        check_bind(host, TOKEN)


def test_token_guards_every_endpoint_but_health(model, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    app = create_app(model, states=[tmp_path / "loop"], token=TOKEN)
    bars = records(random_walk_bars(20))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        for method, path in [("get", "/live"), ("get", "/live/loop/equity"),
                             ("get", "/openapi.json"), ("post", "/forecast"),
                             ("post", "/score"), ("get", "/static/plotly.min.js")]:
            reply = getattr(c, method)(path)
            assert reply.status_code == 401, path
            assert reply.headers["www-authenticate"] == "Bearer"
        wrong = c.post("/forecast", json={"bars": bars}, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401
        ok = c.post("/forecast", json={"bars": bars, "pred_len": 2, "sample_count": 2},
                    headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        # Pages send the browser to the login form; a wrong token stays there.
        page = c.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
        assert c.get("/docs", follow_redirects=False).status_code == 303
        assert c.post("/login", data={"token": "no", "next": "/"}).status_code == 401
        login = c.post("/login", data={"token": TOKEN, "next": "/docs"}, follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/docs"
        cookie = login.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert TOKEN not in cookie
        # The cookie now opens pages and API calls alike (the client keeps it).
        assert c.get("/").status_code == 200 and c.get("/live").status_code == 200
        assert "POST" in c.get("/docs").text
        evil = c.post("/login", data={"token": TOKEN, "next": "//evil.example"},
                      follow_redirects=False)
        assert evil.headers["location"] == "/"
        c.post("/logout")
        c.cookies.clear()
        assert c.get("/live").status_code == 401
    assert TOKEN not in caplog.text


def test_without_a_token_everything_is_open(client):
    for path in ("/", "/docs", "/openapi.json", "/live", "/static/plotly.min.js",
                 "/static/forecast.js", "/example.csv"):
        assert client.get(path).status_code == 200, path
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/app.py").status_code == 404
    assert "Plotly" in client.get("/static/plotly.min.js").text[:5000]
    html = client.get("/").text
    assert 'src="/static/plotly.min.js"' in html and "cdn" not in html.lower()
    reply = client.get("/example.csv")
    assert reply.headers["content-disposition"] == 'inline; filename="example.csv"'
    example = pd.read_csv(pd.io.common.StringIO(reply.text))
    assert list(example.columns)[:5] == ["timestamp", "open", "high", "low", "close"]


# -- live loops -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def candles():
    return hourly_candles()


def test_two_live_loops_watched_while_one_writes(model, candles, tmp_path):
    a, b = tmp_path / "alpha", tmp_path / "beta"
    times = candles["AAA"].index
    for _ in replay_steps(a, model, candles, times[30:40]):
        pass
    with Ledger(a) as done:
        alpha_decisions = len(done.table("decisions"))
    app = create_app(model, states=[a, b])
    with TestClient(app) as c:
        loops = c.get("/live").json()["loops"]
        assert [lp["name"] for lp in loops] == ["alpha", "beta"]
        assert loops[1]["status"] == "waiting"
        assert c.get("/live/beta/equity").status_code == 404
        seen = []
        for ledger in replay_steps(b, model, candles, times[30:45]):
            # A reader holding a snapshot open does not block the writer (WAL).
            view = app.state.views["beta"]
            with view.snapshot() as db:
                before = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
                ledger.conn.execute("BEGIN IMMEDIATE")
                ledger.conn.execute("UPDATE meta SET value = value WHERE key = 'exchange'")
                ledger.conn.execute("COMMIT")
                assert db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == before
            decided = len(ledger.table("decisions"))
            reply = c.get("/live/beta/decisions", params={"limit": 1000}).json()
            assert len(reply["decisions"]) == decided
            seen.append(decided)
            alpha = c.get("/live").json()["loops"][0]
            assert alpha["decisions"] == alpha_decisions
        assert seen == sorted(seen) and seen[-1] == 2 * 15
        with pytest.raises(Exception, match="readonly"):
            with app.state.views["beta"].snapshot() as db:
                db.execute("DELETE FROM decisions")


@pytest.fixture(scope="module")
def watched(model, candles, tmp_path_factory):
    state = tmp_path_factory.mktemp("live") / "hourly"
    for _ in replay_steps(state, model, candles, candles["AAA"].index[30:42]):
        pass
    return state


def test_live_endpoints_match_the_ledger(model, watched, candles):
    files = sorted(p.name for p in watched.iterdir())
    stamp = (watched / Ledger.FILE).stat().st_mtime_ns
    with TestClient(create_app(model, states=[watched])) as c, Ledger(watched) as ledger:
        decisions = ledger.table("decisions")
        summary = c.get("/live").json()["loops"][0]
        assert summary["decisions"] == len(decisions) == 24
        assert summary["symbols"] == SYMBOLS and summary["timeframe"] == "1h"
        assert summary["stale"] is False and summary["stale_after_s"] == 2 * 3600 + 60
        last = decisions["ts"].max()
        since = c.get("/live/hourly/decisions", params={"since": int(last) - 1}).json()
        assert {d["symbol"] for d in since["decisions"]} == set(SYMBOLS)
        iso = c.get("/live/hourly/decisions",
                    params={"since": str(pd.Timestamp(last, unit="ms") - pd.Timedelta("1h"))})
        assert len(iso.json()["decisions"]) == 2
        latest = since["decisions"][-1]
        row = decisions[(decisions["ts"] == last) & (decisions["symbol"] == latest["symbol"])]
        assert latest["forecast"] == json.loads(row["forecast"].iloc[0])
        assert set(latest["scores"]) >= {"prob_up", "expected_return"}
        assert c.get("/live/hourly/decisions", params={"since": "soon"}).status_code == 422
        assert c.get("/live/hourly/decisions", params={"limit": 0}).status_code == 422
        pos = c.get("/live/hourly/positions").json()
        held = {s: p.qty for s, p in ledger.positions().items() if p.qty}
        assert {p["symbol"]: p["qty"] for p in pos["positions"]} == held
        assert pos["cash"] == pytest.approx(ledger.cash())
        eq = c.get("/live/hourly/equity").json()
        assert eq["equity"] == ledger.table("equity").sort_values("ts")["equity"].tolist()
        assert pos["equity"] == pytest.approx(eq["equity"][-1])
        assert c.get("/live/nope/positions").status_code == 404
        # Coverage against the recorded candles, computed here independently.
        inside = checked = 0
        for _, d in decisions.iterrows():
            fc = json.loads(d["forecast"])["path"]
            for k, stamp_text in enumerate(fc["stamps"]):
                t = pd.Timestamp(stamp_text)
                if t > candles["AAA"].index[41] or t not in candles[d["symbol"]].index:
                    continue  # not yet seen by the loop, or no such candle (a session gap)
                close = candles[d["symbol"]]["close"].loc[t]
                checked += 1
                inside += fc["q10"][k] <= close <= fc["q90"][k]
        cov = c.get("/live/hourly/coverage").json()
        assert (cov["checked"], cov["inside"]) == (checked, inside) and checked >= 10
    # Reading never wrote: same files, same ledger bytes.
    assert sorted(p.name for p in watched.iterdir()) == files
    assert (watched / Ledger.FILE).stat().st_mtime_ns == stamp


def test_heartbeat_turns_stale_after_two_bars(watched, tmp_path):
    view = LedgerView("hourly", watched)
    fresh = view.summary()
    assert fresh["heartbeat_age_s"] < 600 and not fresh["stale"] and fresh["skipped"] == 0
    later = view.summary(now=time.time() + 2 * 3600 + 120)
    assert later["stale"] and later["heartbeat_age_s"] > later["stale_after_s"]
    # A skipped candle (ledgers that record them) is a sign of life too.
    copy = tmp_path / "copy"
    copy.mkdir()
    with Ledger(watched) as src, Ledger(copy) as dst:
        src.conn.backup(dst.conn)
        with dst.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS skipped (symbol TEXT, timeframe TEXT, "
                       "ts INTEGER, reason TEXT, at REAL)")
            db.execute("INSERT INTO skipped VALUES ('AAA', '1h', 0, 'no candle', ?)",
                       (fresh["heartbeat"] + 3600,))
    moved = LedgerView("copy", copy).summary(now=fresh["heartbeat"] + 2 * 3600 + 120)
    assert moved["skipped"] == 1 and moved["last_skip_reason"] == "no candle"
    assert moved["heartbeat"] == fresh["heartbeat"] + 3600 and not moved["stale"]


# -- the command ----------------------------------------------------------------------------

def test_serve_command_refuses_other_hosts_without_a_token(capsys, monkeypatch):
    from kronos_quant.cli import main

    monkeypatch.delenv("KRONOS_QUANT_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "9"]) == 2
    assert "set a token" in capsys.readouterr().err


def test_make_demo_ends_with_the_command_that_serves_its_live_loop(tmp_path, capsys):
    import shlex

    from kronos_quant.cli import build_parser, main
    from kronos_quant.cli.serve import build_app

    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--steps", "live", "--live-candles", "3",
                 "--samples", "4"]) == 0
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith("dashboard: kronos-quant serve --state ")
    argv = shlex.split(last.removeprefix("dashboard: ").split("#")[0])[1:]
    args = build_parser().parse_args(argv)
    assert args.command == "serve" and args.state == [str(out / "live" / "state")]
    with TestClient(build_app(args)) as c:
        loop = c.get("/live").json()["loops"][0]
        assert loop["status"] == "ok" and loop["decisions"] > 0
        assert c.get("/example.csv").status_code == 200


def test_a_running_server_never_logs_its_token():
    with running_serve(env={"KRONOS_QUANT_TOKEN": TOKEN}) as (url, output):
        bars = records(random_walk_bars(20))
        assert httpx.post(f"{url}/forecast", json={"bars": bars}).status_code == 401
        ok = httpx.post(f"{url}/forecast", json={"bars": bars, "pred_len": 2},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert ok.status_code == 200
        login = httpx.post(f"{url}/login", data={"token": TOKEN, "next": "/"})
        assert login.status_code == 303
    log = output[0]
    assert "token required" in log and '"POST /forecast HTTP/1.1" 200' in log
    assert TOKEN not in log

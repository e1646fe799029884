"""The main-job command runs offline, every step for real, and writes its files."""
from __future__ import annotations

import html
import json

import pandas as pd
import pytest

from kronos_quant.assets import UNIVERSE, load_universe
from kronos_quant.cli import main
from kronos_quant.demo import plan_steps
from kronos_quant.demo.steps import STEPS, write_universe


def test_demo_forecast_step_writes_chart_and_tables(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--steps", "forecast", "--pred-len", "8",
                 "--samples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "[1/1] forecast" in printed and "total" in printed
    assert (out / "forecast" / "fan.png").stat().st_size > 10_000
    paths = pd.read_csv(out / "forecast" / "paths.csv")
    assert len(paths) == 4 * 8 and paths["sample"].nunique() == 4
    quantiles = pd.read_csv(out / "forecast" / "quantiles.csv")
    assert (quantiles["close_q10"] <= quantiles["close_q90"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["forecast"] and summary["forecast"]["status"] == "ok"
    page = (out / "index.html").read_text()
    assert 'src="forecast/fan.png"' in page and "does not beat a random walk" in page


def test_the_whole_demo_runs_every_engine_and_they_agree(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--pred-len", "4", "--samples", "4",
                 "--score-samples", "4", "--live-candles", "4"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == list(STEPS)
    assert {name: r["status"] for name, r in summary.items()} == dict.fromkeys(STEPS, "ok")
    for name in STEPS:
        assert f"{name}: " in printed and summary[name]["seconds"] > 0
    bt = summary["backtrader"]["numbers"]
    same, bars = map(int, bt["bars with the same holdings as vectorbt"].split(" / "))
    assert same == bars > 400 and bt["largest holding difference (relative)"] < 1e-6
    assert abs(bt["final value"] / summary["vectorbt"]["numbers"]["final value"] - 1) < 1e-6
    vb = summary["vectorbt"]["numbers"]  # one Sharpe: the index's is vectorbt's stats()
    assert vb["Sharpe [95% CI] (s.e.)"].startswith(f"{vb['vectorbt stats() Sharpe']:.2f} [")
    assert vb["buy-and-hold return"] == pytest.approx(bt["buy-and-hold return"])
    assert "vectorbt: excess over buy-and-hold [95% CI]" in (out / "index.html").read_text()
    days, total = map(int, summary["qlib"]["numbers"][
        "days holding the same names as our portfolio layer"].split(" / "))
    assert days == total > 400
    assert summary["live"]["numbers"]["decisions"] == 2 * 4
    ev = summary["evaluate"]["numbers"]
    assert (ev["80% band coverage (conformal, later half)"]
            > ev["80% band coverage (raw, later half)"])
    # The random-walk statement is backed by tests: RankIC with its p-value, DM vs the walk.
    assert 0 <= ev["RankIC expected_return p-value (Newey–West)"] <= 1
    assert ev["Diebold–Mariano vs random walk (t, p)"].startswith("t ")
    verdict = summary["evaluate"]["verdict"]
    assert "Diebold–Mariano" in verdict and "Newey–West p = " in verdict
    page = (out / "index.html").read_text()
    assert html.escape(verdict) in page
    for name, result in summary.items():
        for path in result["files"].values():
            rel = str(pd.io.common.Path(path).relative_to(out))
            assert rel in page, f"{name}: {rel} not linked from index.html"
    for sheet in ("tearsheet/tearsheet.html", "qlib/tearsheet.html", "live/tearsheet.html"):
        assert "<html" in (out / sheet).read_text()[:2000].lower()


def test_the_random_walk_verdict_follows_the_tests():
    from kronos_quant.demo.steps import random_walk_verdict

    row = pd.Series({"rank_ic_mean": 0.01, "rank_ic_p": 0.6, "rank_ic_n": 99})
    last = pd.Series({"mae": 0.03, "mae_rw": 0.026, "mae_dm_t": 4.5, "mae_dm_p": 1e-5,
                      "dates": 100})
    text = random_walk_verdict(row, last, "expected_return", 5)
    assert "does not beat a random walk: it is significantly less accurate" in text
    assert "t = +4.50, p = 1e-05, over 100 dates" in text and "not distinguishable" in text
    tie = random_walk_verdict(row, pd.Series({**last, "mae_dm_t": -1.0, "mae_dm_p": 0.3}),
                              "x", 5)
    assert "the difference is not significant" in tie
    better = random_walk_verdict(pd.Series({**row, "rank_ic_p": 0.001}),
                                 pd.Series({**last, "mae_dm_t": -3.0, "mae_dm_p": 0.004}), "x", 5)
    assert "beats the random walk at the 0.05 level" in better
    assert ": distinguishable from zero" in better


def test_a_step_subset_brings_its_prerequisites():
    assert plan_steps(["tearsheet"]) == ["scores", "evaluate", "vectorbt", "tearsheet"]
    assert plan_steps(["live"]) == ["live"]
    with pytest.raises(ValueError, match="unknown demo step"):
        plan_steps(["nope"])


def test_a_missing_engine_is_skipped_with_its_pip_command(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vectorbt" else real(name, *a))
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--steps", "vectorbt,backtrader",
                 "--score-samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert ('vectorbt: vectorbt backtest … skipped '
            '(needs pip install "kronos-quant[vectorbt]")') in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["vectorbt"]["status"] == "skipped"
    assert summary["backtrader"]["status"] == "ok"
    assert "no cross-engine comparison" in summary["backtrader"]["notes"][0]


def test_the_bundled_universe_is_the_demo_models_data(tmp_path):
    pytest.importorskip("bokeh_sampledata")
    rebuilt = write_universe(tmp_path / "universe.csv")
    assert rebuilt.read_bytes() == UNIVERSE.read_bytes()
    panel = load_universe()
    assert (sorted(panel.index.get_level_values("instrument").unique())
            == ["AAPL", "GOOG", "IBM", "MSFT"])
    assert UNIVERSE.stat().st_size < 1_000_000


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--model", "only-model-given"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: give both --model and --tokenizer" in err


@pytest.mark.parametrize("argv, message", [
    (["demo", "--pred-len", "0"], "argument --pred-len: must be an integer >= 1, got '0'"),
    (["demo", "--samples", "-3"], "argument --samples: must be an integer >= 1, got '-3'"),
    (["demo", "--lookback", "15"], "argument --lookback: must be an integer >= 16, got '15'"),
    (["demo", "--steps", "forecast,bogus"], "argument --steps: unknown step(s) ['bogus']"),
    (["demo", "--max-context", "0"], "argument --max-context: must be an integer >= 1, got '0'"),
    (["demo", "--pred-len", "2.5"], "argument --pred-len: must be an integer >= 1, got '2.5'"),
    (["score", "--panel", "p.csv", "--lookback", "0"],
     "argument --lookback: must be an integer >= 16"),
    (["score", "--panel", "p.csv", "--pred-len", "0"],
     "argument --pred-len: must be an integer >= 1"),
    (["score", "--panel", "p.csv", "--samples", "0"],
     "argument --samples: must be an integer >= 1"),
    (["score", "--panel", "p.csv", "--batch-size", "0"],
     "argument --batch-size: must be an integer >= 1"),
    (["score", "--panel", "p.csv", "--top-k", "-1"], "argument --top-k: must be an integer >= 0"),
])
def test_integer_options_are_validated_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_an_explicit_pred_len_is_honoured(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--steps", "forecast", "--pred-len", "3",
                 "--samples", "2"]) == 0
    assert len(pd.read_csv(out / "forecast" / "quantiles.csv")) == 3


def test_forecast_command_writes_chart_paths_quantiles_and_summary(tmp_path, capsys):
    from kronos_quant.assets import ASSETS

    bars = pd.read_csv(ASSETS / "series.csv")
    bars.insert(1, "symbol", "MSFT")
    source = tmp_path / "bars.parquet"
    bars.to_parquet(source)
    out = tmp_path / "fc"
    assert main(["-q", "forecast", "--input", str(source), "--pred-len", "5", "--samples", "6",
                 "--quantiles", "0.2,0.8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 paths × 5 bars" in printed and "P(up)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["series"] == "bars" and "demo model" in summary["model"]
    assert summary["last_timestamp"].startswith("2013-03-01")
    paths = pd.read_csv(out / "paths.csv")
    assert len(paths) == 30
    horizon = paths[paths["timestamp"] == paths["timestamp"].max()]["close"]
    assert summary["prob_up"] == pytest.approx((horizon > summary["last_close"]).mean())
    quantiles = pd.read_csv(out / "quantiles.csv", index_col="timestamp")
    assert list(quantiles.columns[:3]) == ["open_mean", "open_q20", "open_q80"]
    assert (quantiles["close_q20"] <= quantiles["close_q80"]).all()
    assert (out / "fan.png").stat().st_size > 10_000


@pytest.mark.parametrize("setup, argv, message", [
    ("two", ["--input", "{two}"], "holds 2 series in column 'instrument' (A, B); pick one"),
    ("two", ["--input", "{two}", "--instrument", "C"], "instrument 'C' is not in column"),
    (None, ["--input", "{missing}"], "no such file"),
    ("txt", ["--input", "{txt}"], "expected a .csv or .parquet file, got '.txt'"),
])
def test_forecast_command_bad_input_is_one_line(setup, argv, message, tmp_path, capsys):
    from kronos_quant.assets import ASSETS

    bars = pd.read_csv(ASSETS / "series.csv")
    two = pd.concat([bars.assign(instrument="A"), bars.assign(instrument="B")])
    two.to_csv(tmp_path / "two.csv", index=False)
    (tmp_path / "bars.txt").write_text("x")
    names = {"two": tmp_path / "two.csv", "missing": tmp_path / "nope.csv",
             "txt": tmp_path / "bars.txt"}
    args = [a.format(**names) for a in argv]
    assert main(["forecast", *args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err

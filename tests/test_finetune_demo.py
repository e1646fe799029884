"""The embedded demo model and ``kronos-quant demo`` on it."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import kronos_quant.assets as demo
from kronos_quant.cli import main


def test_embedded_assets_are_complete_small_and_honest():
    assets = demo.embedded_demo()
    assert assets is not None, f"embedded demo model missing from {demo.ASSETS}"
    weights = [assets.tokenizer_dir / "model.safetensors", assets.model_dir / "model.safetensors"]
    assert sum(p.stat().st_size for p in weights) <= 10 * 2 ** 20
    card = (demo.ASSETS / "MODEL_CARD.md").read_text()
    assert "not the published Kronos" in card and "random walk" in card
    assert "--quick" not in card.split("\n")[2]  # a real build, not the recipe check
    metrics = json.loads((demo.ASSETS / "metrics.json").read_text())
    assert metrics["quick"] is False and metrics["predictor"]["steps"] > 100
    series = pd.read_csv(assets.series_path, index_col="timestamps", parse_dates=True)
    assert len(series) >= assets.lookback and series.index.is_monotonic_increasing


def test_demo_uses_the_embedded_model_and_writes_chart_and_scores(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--steps", "forecast", "--samples", "4",
                 "--pred-len", "5"]) == 0
    printed = capsys.readouterr().out
    assert "model: kronos-quant demo model" in printed and "not the published Kronos" in printed
    summary = json.loads((out / "forecast" / "summary.json").read_text())
    assert summary["series"].startswith("MSFT")
    assert (out / "forecast" / "fan.png").stat().st_size > 10_000
    scores = summary["scores"]
    assert {"expected_return", "prob_up"} <= set(scores)
    assert np.isfinite(list(scores.values())).all() and 0 <= scores["prob_up"] <= 1
    paths = pd.read_csv(out / "forecast" / "paths.csv")
    assert len(paths) == 4 * 5


def test_demo_falls_back_with_a_message_when_assets_are_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "ASSETS", tmp_path / "missing")
    code = main(["-q", "demo", "--out", str(tmp_path / "o"), "--steps", "forecast",
                 "--samples", "2", "--pred-len", "3", "--lookback", "64"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "embedded demo model is missing" in printed and "random weights" in printed
    assert (tmp_path / "o" / "forecast" / "summary.json").is_file()


def test_model_and_tokenizer_flags_switch_the_model(tmp_path, capsys, tiny_dirs):
    tok_dir, model_dir = tiny_dirs
    code = main(["-q", "demo", "--out", str(tmp_path / "o"), "--steps", "forecast",
                 "--model", str(model_dir), "--tokenizer", str(tok_dir), "--samples", "2",
                 "--pred-len", "3"])
    assert code == 0
    assert f"model: {model_dir} + {tok_dir}" in capsys.readouterr().out


def test_real_training_data_is_split_adjusted():
    pytest.importorskip("bokeh_sampledata")
    from kronos_quant.demo.build_model import real_stock_panel

    panel = real_stock_panel()
    aapl = panel.xs("AAPL", level="instrument")["close"]
    # AAPL split 2:1 on 2005-02-28: the raw close halves (88.99 -> 44.86), the adjusted one not.
    move = aapl.loc["2005-02-28"] / aapl.loc["2005-02-25"]
    assert 0.95 < move < 1.05, move
    assert set(panel.index.get_level_values("instrument")) == {"AAPL", "FB", "GOOG", "IBM", "MSFT"}

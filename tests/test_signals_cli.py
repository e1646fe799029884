"""`kronos-quant score` and `kronos-quant evaluate` end to end on tiny saved checkpoints."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from signals_support import one_thread  # noqa: F401  (autouse fixture)

import kronos_quant.predictor as predictor_module
from kronos_quant import KronosPredictor
from kronos_quant.cli import main
from kronos_quant.data import load_panel, synthetic_panel
from kronos_quant.signals import BUILTIN_SCORERS, score_panel


@pytest.fixture()
def setup(tmp_path, tiny_dirs):
    tok_dir, model_dir = tiny_dirs
    csv = tmp_path / "panel.csv"
    synthetic_panel(6, 45, seed=2, predictable=0.5).reset_index().to_csv(csv, index=False)
    model_args = ["--model", str(model_dir), "--tokenizer", str(tok_dir), "--max-context", "32"]
    score_args = ["--panel", str(csv), "--lookback", "16", "--pred-len", "3", "--samples", "4",
                  "--seed", "1"]
    return tmp_path, csv, model_args + score_args, (tok_dir, model_dir)


def test_score_then_evaluate(setup, capsys):
    tmp, csv, args, (tok_dir, model_dir) = setup
    out, calib_png = tmp / "scores.parquet", tmp / "calib.png"
    assert main(["-q", "score", *args, "--cache-dir", str(tmp / "cache"), "--out", str(out),
                 "--calibration", str(calib_png)]) == 0
    printed = capsys.readouterr().out
    assert "scored 180 (date, instrument) windows" in printed and "cover80" in printed
    assert calib_png.stat().st_size > 5_000
    scores = pd.read_parquet(out)
    assert list(scores.index.names) == ["datetime", "instrument"]
    assert list(scores.columns) == list(BUILTIN_SCORERS)
    # The command computes exactly what the Python API computes.
    predictor = KronosPredictor.from_pretrained(str(model_dir), str(tok_dir), max_context=32)
    api = score_panel(predictor, load_panel(csv), lookback=16, pred_len=3, sample_count=4,
                      seed=1, verbose=False)
    pd.testing.assert_frame_equal(scores, api, check_freq=False)

    summary_csv, ic_png = tmp / "summary.csv", tmp / "ic.png"
    assert main(["evaluate", "--scores", str(out), "--panel", str(csv), "--horizon", "3",
                 "--out", str(summary_csv), "--plot", str(ic_png)]) == 0
    printed = capsys.readouterr().out
    assert "RankIC" in printed and "momentum_20" in printed and "random_walk" in printed
    assert printed.count("execution next_open") == 1 and "score metadata" in printed
    summary = pd.read_csv(summary_csv, index_col="signal")
    assert set(BUILTIN_SCORERS) | {"random_walk", "momentum_20", "reversal_5"} == set(summary.index)
    assert np.isfinite(summary.loc["expected_return", "rank_ic_mean"])
    assert ic_png.stat().st_size > 5_000


def test_rerun_uses_the_cache_and_csv_output(setup, capsys, monkeypatch):
    tmp, csv, args, _ = setup
    cache = ["--cache-dir", str(tmp / "cache")]
    assert main(["-q", "score", *args, *cache, "--out", str(tmp / "a.csv"),
                 "--scorers", "prob_up,ref_last"]) == 0

    def no_model(*a, **k):
        raise AssertionError("model called on a cached rerun")

    monkeypatch.setattr(predictor_module, "generate", no_model)
    assert main(["-q", "score", *args, *cache, "--out", str(tmp / "b.csv"),
                 "--scorers", "prob_up,ref_last"]) == 0
    a, b = pd.read_csv(tmp / "a.csv"), pd.read_csv(tmp / "b.csv")
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["datetime", "instrument", "prob_up", "ref_last"]
    assert main(["evaluate", "--scores", str(tmp / "b.csv"), "--panel", str(csv),
                 "--signals", "ref_last", "--no-baselines", "--horizon", "2"]) == 0
    table = capsys.readouterr().out
    assert "ref_last" in table and "prob_up" not in table and "momentum" not in table


@pytest.mark.parametrize("extra, message", [
    (["--scorers", "expected_return,nope"], "unknown scorer 'nope'"),
    (["--lookback", "30", "--end", "2022-01-20"], "too few bars for lookback=30"),
    (["--lookback", "400"], "--lookback 400 is longer than the model's context of 32 bars"),
])
def test_score_reports_bad_input_in_one_line(setup, capsys, extra, message):
    tmp, _, args, _ = setup
    assert main(["score", *args, *extra, "--out", str(tmp / "s.parquet")]) == 2
    assert message in capsys.readouterr().err


def test_score_needs_a_model_and_evaluate_needs_known_signals(setup, capsys):
    tmp, csv, args, (_, model_dir) = setup
    # Without --model/--tokenizer: the embedded demo model, as `forecast` does; one alone: no.
    assert main(["score", "--panel", str(csv), "--lookback", "30", "--pred-len", "2",
                 "--samples", "2", "--freq", "10", "--scorers", "prob_up",
                 "--out", str(tmp / "demo.parquet")]) == 0
    assert "model: kronos-quant demo model" in capsys.readouterr().out
    assert pd.read_parquet(tmp / "demo.parquet").attrs["max_context"] == 140
    assert main(["score", "--panel", str(csv), "--model", str(model_dir), "--out",
                 str(tmp / "s.parquet")]) == 2
    assert "give both --model and --tokenizer, or neither" in capsys.readouterr().err
    assert main(["-q", "score", *args, "--scorers", "prob_up",
                 "--out", str(tmp / "s.parquet")]) == 0
    assert main(["evaluate", "--scores", str(tmp / "s.parquet"), "--panel", str(csv),
                 "--signals", "sharpe"]) == 2
    assert "--signals ['sharpe'] are not columns" in capsys.readouterr().err
    assert main(["evaluate", "--scores", str(tmp / "missing.parquet"), "--panel", str(csv)]) == 2


def test_evaluate_prints_the_execution_and_the_score_metadata(tmp_path, capsys):
    from kronos_quant.data import planted_signal

    panel = synthetic_panel(6, 45, seed=2, predictable=0.5)
    csv, scores_path = tmp_path / "panel.csv", tmp_path / "scores.parquet"
    panel.reset_index().to_csv(csv, index=False)
    scores = planted_signal(panel).to_frame()
    scores.attrs = {"pred_len": 3, "lookback": 16, "sample_count": 4}
    scores.to_parquet(scores_path)  # pandas keeps DataFrame.attrs in the Parquet metadata
    base = ["evaluate", "--scores", str(scores_path), "--panel", str(csv), "--no-baselines"]
    assert main([*base, "--horizon", "3"]) == 0
    printed = capsys.readouterr().out
    # Said once, heading the table (it used to be printed twice).
    assert printed.count("next_open: score known after the close of bar t, traded at the "
                         "open") == 1
    assert "pred_len: 3" in printed and "lookback: 16" in printed
    assert "differs from the scores' forecast length" not in printed
    assert main([*base, "--horizon", "2", "--execution", "same_close"]) == 0
    printed = capsys.readouterr().out
    assert "execution same_close" in printed and "market-on-close" in printed
    assert "horizon 2 bars differs from the scores' forecast length pred_len=3" in printed
    # The convention changes the numbers: the table is not the same under another execution.
    assert main([*base, "--horizon", "2"]) == 0
    assert capsys.readouterr().out.split("L/S =")[1] != printed.split("L/S =")[1]
    with pytest.raises(SystemExit):
        main([*base, "--execution", "tomorrow"])
    assert "invalid choice: 'tomorrow'" in capsys.readouterr().err


def test_evaluate_prints_p_values_and_one_verdict_per_signal(tmp_path, capsys):
    from kronos_quant.data import planted_signal

    panel = synthetic_panel(10, 160, seed=5, predictable=0.5)
    csv, scores_path = tmp_path / "panel.csv", tmp_path / "scores.parquet"
    panel.reset_index().to_csv(csv, index=False)
    planted_signal(panel).to_frame().to_parquet(scores_path)
    out = tmp_path / "summary.csv"
    argv = ["evaluate", "--scores", str(scores_path), "--panel", str(csv), "--horizon", "1",
            "--momentum-window", "10", "--out", str(out)]
    assert main([*argv, "--alpha", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert "p(RankIC)" in printed and "model minus baseline, paired by date" in printed
    assert "significance (two-sided Newey–West tests, level 0.01" in printed
    verdict = next(line for line in printed.splitlines()
                   if line.strip().startswith("planted_signal: rank_ic"))
    assert "significant at 0.01" in verdict and "momentum_10" in verdict
    summary = pd.read_csv(out, index_col=0)
    assert summary.loc["planted_signal", "rank_ic_p"] < 0.01
    assert "rank_ic_vs_momentum_10_p" in summary.columns
    with pytest.raises(SystemExit):
        main([*argv, "--alpha", "5"])
    assert "must be between 0 and 1, got 5" in capsys.readouterr().err

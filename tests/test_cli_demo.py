"""The main-job command runs offline and writes its files."""
from __future__ import annotations

import pandas as pd
import pytest

from kronos_quant.cli import main


def test_demo_writes_chart_and_tables(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--pred-len", "8", "--samples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "wrote fan_chart" in printed
    assert (out / "forecast_fan.png").stat().st_size > 10_000
    paths = pd.read_csv(out / "forecast_paths.csv")
    assert len(paths) == 4 * 8 and paths["sample"].nunique() == 4
    summary = pd.read_csv(out / "forecast_summary.csv")
    assert (summary["close_q10"] <= summary["close_q90"]).all()


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--model", "only-model-given"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: give both --model and --tokenizer" in err


@pytest.mark.parametrize("argv, message", [
    (["demo", "--pred-len", "0"], "argument --pred-len: must be an integer >= 1, got '0'"),
    (["demo", "--samples", "-3"], "argument --samples: must be an integer >= 1, got '-3'"),
    (["demo", "--lookback", "1"], "argument --lookback: must be an integer >= 2, got '1'"),
    (["demo", "--max-context", "0"], "argument --max-context: must be an integer >= 1, got '0'"),
    (["demo", "--pred-len", "2.5"], "argument --pred-len: must be an integer >= 1, got '2.5'"),
    (["score", "--panel", "p.csv", "--lookback", "0"], "argument --lookback: must be an integer >= 2"),
    (["score", "--panel", "p.csv", "--pred-len", "0"], "argument --pred-len: must be an integer >= 1"),
    (["score", "--panel", "p.csv", "--samples", "0"], "argument --samples: must be an integer >= 1"),
    (["score", "--panel", "p.csv", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    (["score", "--panel", "p.csv", "--top-k", "-1"], "argument --top-k: must be an integer >= 0"),
])
def test_integer_options_are_validated_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_an_explicit_pred_len_is_honoured(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--pred-len", "3", "--samples", "2"]) == 0
    assert len(pd.read_csv(out / "forecast_summary.csv")) == 3

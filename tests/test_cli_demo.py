"""The main-job command runs offline and writes its files."""
from __future__ import annotations

import pandas as pd

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

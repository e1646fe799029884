"""``kronos-quant backtest`` end to end (real vectorbt and QuantStats) and the vectorbt example."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("vectorbt")
pytest.importorskip("quantstats")

from kronos_quant.adapters.vectorbt import backtest  # noqa: E402

from kronos_quant import TradeSpec  # noqa: E402
from kronos_quant import backtest as bt  # noqa: E402
from kronos_quant.cli import backtest as backtest_cli  # noqa: E402
from kronos_quant.data import planted_signal, synthetic_panel  # noqa: E402
from kronos_quant.portfolio import target_weights  # noqa: E402
from kronos_quant.predictor import checkpoint_label  # noqa: E402
from kronos_quant.signals.store import write_scores  # noqa: E402
from kronos_quant.testing import save_tiny_pair  # noqa: E402

OUTPUTS = ["equity.png", "summary.json", "tearsheet.html", "weights.parquet"]
ROOT = Path(__file__).resolve().parents[1]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kronos-quant")
    parser.add_argument("-q", "--quiet", action="store_true")
    backtest_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bt")
    panel = synthetic_panel(10, 160, predictable=0.5, seed=3)
    panel.to_parquet(root / "panel.parquet")
    write_scores(planted_signal(panel).to_frame(), root / "scores.parquet")
    return root, panel


def test_backtest_from_scores_writes_every_output(files):
    root, panel = files
    out = root / "out"
    args = _parse(["-q", "backtest", "--engine", "vectorbt", "--panel", str(root / "panel.parquet"),
                   "--scores", str(root / "scores.parquet"), "--method", "topk", "--topk", "3",
                   "--n-drop", "1", "--fees", "0.001", "--out", str(out)])
    assert args.func(args) == 0
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    weights = pd.read_parquet(out / "weights.parquet")
    expected = target_weights(planted_signal(panel), topk=3, n_drop=1)
    pd.testing.assert_frame_equal(weights, expected, check_freq=False)
    summary = json.loads((out / "summary.json").read_text())
    pf = backtest(expected, panel, fees=0.001)  # the same book through the library API
    assert summary["total_return"] == pytest.approx(pf.total_return(), rel=1e-9)
    assert summary["orders"] == pf.orders.count()
    assert summary["turnover"] == pytest.approx(
        float((expected - expected.shift(1).fillna(0.0)).abs().sum(axis=1).mean()))
    assert summary["rank_ic"] > 0.05 and summary["max_drawdown"] < 0
    assert {"sharpe", "ic", "spec", "periods_per_year"} <= set(summary)
    assert summary["spec"] == TradeSpec(topk=3, n_drop=1, fees=0.001).to_dict()
    assert "coverage_80" not in summary  # not computed from a scores file
    assert summary["model"] is None  # planted scores carry no model fingerprint
    page = (out / "tearsheet.html").read_text(encoding="utf-8")
    assert "kronos-signal-quality" in page and "buy-and-hold (equal weight)" in page.lower()


def test_backtest_scores_with_the_model_and_reports_coverage(files, tmp_path):
    root, panel = files
    tok_dir, model_dir = save_tiny_pair(tmp_path / "tiny")
    small = panel[panel.index.get_level_values("instrument").isin(["SYN000", "SYN001", "SYN002",
                                                                   "SYN003"])].iloc[:4 * 40]
    small.to_parquet(tmp_path / "small.parquet")
    args = _parse(["-q", "backtest", "--panel", str(tmp_path / "small.parquet"),
                   "--model", str(model_dir), "--tokenizer", str(tok_dir), "--lookback", "16",
                   "--pred-len", "2", "--samples", "4", "--freq", "5", "--calibration",
                   "--topk", "2", "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["signal"] == "expected_return" and 0.0 <= summary["coverage_80"] <= 1.0
    assert summary["horizon"] == 5  # bars between rebalances
    assert summary["model"] == checkpoint_label(model_dir, tok_dir)  # also on the equity chart
    page = (tmp_path / "out" / "tearsheet.html").read_text(encoding="utf-8")
    assert "band coverage vs nominal" in page and "sample_count" in page  # score attrs


def test_model_label_from_the_model_options_or_the_scores_fingerprint():
    scores = pd.DataFrame({"s": [0.1]})
    scores.attrs["model_fingerprint"] = "0123456789abcdef"
    assert bt.scores_model_label(None, None, scores) == "weights 0123456789ab"
    assert bt.scores_model_label("NeoQuasar/Kronos-small", "NeoQuasar/Kronos-Tokenizer-base",
                                 scores) == (
        "NeoQuasar/Kronos-small + NeoQuasar/Kronos-Tokenizer-base")


def test_a_registered_engine_receives_the_same_book(files, tmp_path):
    root, panel = files
    seen = []

    def recording(job: bt.BacktestJob) -> bt.EngineResult:
        seen.append(job)
        return bt.ENGINES["vectorbt"].run(job)

    bt.register_engine(bt.Engine("recording", recording, "test engine"))
    try:
        args = _parse(["-q", "backtest", "--engine", "recording", "--panel",
                       str(root / "panel.parquet"), "--scores", str(root / "scores.parquet"),
                       "--topk", "2", "--execution", "next_close", "--out", str(tmp_path)])
        assert args.func(args) == 0
    finally:
        del bt.ENGINES["recording"]
    (job,) = seen
    assert job.execution == "next_close" and job.fees == 0.0
    assert isinstance(job.options, bt.BacktestOptions) and job.options.spec.topk == 2
    assert job.spec == job.options.spec and job.spec.execution == "next_close"
    pd.testing.assert_frame_equal(job.weights, target_weights(planted_signal(panel), topk=2))
    assert json.loads((tmp_path / "summary.json").read_text())["engine"] == "recording"


def test_bad_invocations(files, tmp_path, capsys):
    root, _ = files
    base = ["backtest", "--panel", str(root / "panel.parquet"), "--out", str(tmp_path)]
    args = _parse(base)
    with pytest.raises(ValueError, match="either --scores FILE or --model"):
        args.func(args)
    args = _parse(base + ["--scores", str(root / "scores.parquet"), "--signal", "nope"])
    with pytest.raises(ValueError, match="--signal 'nope' is not a numeric score column"):
        args.func(args)
    for bad in (["--topk", "0"], ["--fees", "-0.1"], ["--engine", "zipline"]):
        with pytest.raises(SystemExit):
            _parse(base + bad)
        assert "backtest: error: argument" in capsys.readouterr().err


def test_vectorbt_example_runs_offline_on_the_demo_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("vectorbt_topk",
                                                  ROOT / "examples" / "vectorbt_topk.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    path = example.main(["--instruments", "4", "--bars", "60", "--lookback", "30", "--pred-len",
                         "2", "--samples", "2", "--freq", "10", "--topk", "2",
                         "--out", str(tmp_path)])
    page = path.read_text(encoding="utf-8")
    assert "Sharpe" in page and "expected_return" in page
    printed = capsys.readouterr().out
    assert "Total Return [%]" in printed and "RankIC" in printed


def test_both_backtest_commands_take_the_same_trading_terms_with_defaults_shown(capsys,
                                                                                  caplog):
    from kronos_quant.cli import build_parser
    from kronos_quant.cli.options import trade_spec
    from kronos_quant.tradespec import TERMS

    parser = build_parser()
    for command in ("backtest", "qlib-backtest"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        blocks, name = {}, None  # option → its help text (argparse's layout)
        for line in capsys.readouterr().out.splitlines():
            if line.startswith("  --"):
                name = line.split()[0]
            if name is not None:
                blocks[name] = blocks.get(name, "") + " " + line.strip()
        for term in TERMS:
            assert "default:" in blocks["--" + term.replace("_", "-")], (command, term)
    args = parser.parse_args(["backtest", "--panel", "p", "--out", "o", "--topk", "3",
                              "--fees", "0.001", "--init-cash", "5000"])
    with caplog.at_level("WARNING"), pytest.warns(DeprecationWarning, match="init_cash"):
        spec = trade_spec(args)
    assert spec == TradeSpec(topk=3, fees=0.001, cash=5000.0)
    assert "--init-cash is deprecated; use --cash" in caplog.text
    plain = parser.parse_args(["qlib-backtest", "--scores", "s", "--provider", "p",
                               "--benchmark", "B"])
    assert trade_spec(plain) == TradeSpec()  # an absent option is the spec's default


def test_the_library_call_is_the_command(files, tmp_path):
    """run_backtest(BacktestOptions(...)) from Python writes what the command writes."""
    root, _ = files
    common = dict(panel=root / "panel.parquet", scores=root / "scores.parquet",
                  spec=TradeSpec(topk=3, n_drop=1, fees=0.001), verbose=False)
    run = bt.run_backtest(bt.BacktestOptions(out=tmp_path / "lib", **common))
    args = _parse(["-q", "backtest", "--panel", str(root / "panel.parquet"), "--scores",
                   str(root / "scores.parquet"), "--topk", "3", "--n-drop", "1", "--fees",
                   "0.001", "--out", str(tmp_path / "cli")])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "cli" / "summary.json").read_text()) == run.summary
    assert sorted(p.name for p in run.files.values()) == OUTPUTS
    with pytest.raises(ValueError, match="unknown engine 'zipline'"):
        bt.run_backtest(bt.BacktestOptions(out=tmp_path / "x", engine="zipline", **common))

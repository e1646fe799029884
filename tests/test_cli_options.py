"""Integer options of every command: a bad value is one usage line naming the option."""
from __future__ import annotations

import argparse

import pytest

from kronos_quant.cli import backtest as backtest_cli
from kronos_quant.cli import live as live_cli
from kronos_quant.cli import qlib as qlib_cli
from kronos_quant.cli import signals as signals_cli
from kronos_quant.cli.options import scoring_options

# (register module, argv up to the option, option, smallest valid value)
CASES = [
    (live_cli, ["live", "--exchange", "x", "--timeframe", "1m", "--state", "s"], "--lookback", 16),
    (live_cli, ["live", "--exchange", "x", "--timeframe", "1m", "--state", "s"], "--retries", 1),
    (live_cli, ["live", "--exchange", "x", "--timeframe", "1m", "--state", "s"],
     "--max-cycles", 1),
    (qlib_cli, ["qlib-backtest", "--scores", "s", "--provider", "p", "--benchmark", "b"],
     "--topk", 1),
    (qlib_cli, ["qlib-backtest", "--scores", "s", "--provider", "p", "--benchmark", "b"],
     "--n-drop", 0),
    (backtest_cli, ["backtest", "--panel", "p", "--out", "o"], "--topk", 1),
    (backtest_cli, ["backtest", "--panel", "p", "--out", "o"], "--n-drop", 0),
    (backtest_cli, ["backtest", "--panel", "p", "--out", "o"], "--samples", 1),
    (signals_cli, ["score", "--panel", "p"], "--pred-len", 1),
    (signals_cli, ["score", "--panel", "p"], "--lookback", 16),
    (signals_cli, ["evaluate", "--scores", "s", "--panel", "p"], "--horizon", 1),
    (signals_cli, ["evaluate", "--scores", "s", "--panel", "p"], "--quantiles", 2),
    (signals_cli, ["evaluate", "--scores", "s", "--panel", "p"], "--top-k", 1),
    (signals_cli, ["evaluate", "--scores", "s", "--panel", "p"], "--momentum-window", 1),
    (signals_cli, ["evaluate", "--scores", "s", "--panel", "p"], "--reversal-window", 1),
]


def _parser(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kronos-quant")
    module.register(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.parametrize("module, argv, option, minimum", CASES,
                         ids=[f"{c[1][0]}{c[2]}" for c in CASES])
def test_integer_option_bad_values_are_one_usage_error(module, argv, option, minimum, capsys):
    parser = _parser(module)
    dest = option.lstrip("-").replace("-", "_")
    assert getattr(parser.parse_args([*argv, option, str(minimum)]), dest) == minimum
    for bad in (str(minimum - 1), "-3", "2.5", "ten"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([*argv, option, bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == (f"kronos-quant {argv[0]}: error: argument {option}: "
                           f"must be an integer >= {minimum}, got {bad!r}"), err
        assert not any("Traceback" in line for line in err)


def test_backtest_scores_with_the_options_of_score():
    """`backtest --model` and `score` read one set of walk-forward options, into one dict."""
    scoring = ["--lookback", "24", "--pred-len", "3", "--samples", "4", "--freq", "W",
               "--start", "2021-02-01", "--seed", "7", "--T", "0.8", "--top-k", "5",
               "--top-p", "0.7", "--calendar", "XNYS"]
    score = _parser(signals_cli).parse_args(["score", "--panel", "p", *scoring])
    backtest = _parser(backtest_cli).parse_args(["backtest", "--panel", "p", "--out", "o",
                                                 *scoring])
    expected = dict(lookback=24, pred_len=3, sample_count=4, freq="W", start="2021-02-01",
                    end=None, seed=7, T=0.8, top_k=5, top_p=0.7, calendar="XNYS")
    assert scoring_options(score) == expected
    assert scoring_options(backtest) == expected
    default = scoring_options(_parser(backtest_cli).parse_args(
        ["backtest", "--panel", "p", "--out", "o"]))
    assert default["freq"] == 1 and default["lookback"] == 64

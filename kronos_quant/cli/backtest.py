"""``kronos-quant backtest``: scores → target weights → an engine → tear sheet and summary.

The command computes the target weights once (:func:`kronos_quant.portfolio.target_weights`)
and hands them, with the execution convention, to the chosen engine, so every engine trades
the same book. It writes ``weights.parquet``, ``equity.png``, ``tearsheet.html`` (QuantStats
plus the signal-quality section) and ``summary.json`` into ``--out``. The job itself is
:func:`kronos_quant.backtest.run_backtest`; engines are entries of
:data:`kronos_quant.backtest.ENGINES` (add one with
:func:`~kronos_quant.backtest.register_engine`).
"""
from __future__ import annotations

import argparse

from ..backtest import DEFAULT_SCORER, ENGINES, BacktestOptions, run_backtest
from ..data import CALENDAR_DAYS_PER_YEAR, TRADING_DAYS_PER_YEAR
from .options import (
    add_model_args,
    add_scoring_args,
    add_trade_args,
    int_option,
    scoring_options,
    trade_spec,
)


def options_from_args(args: argparse.Namespace) -> BacktestOptions:
    """The typed options of a parsed ``kronos-quant backtest`` command line."""
    return BacktestOptions(
        panel=args.panel, out=args.out, engine=args.engine, scores=args.scores,
        signal=args.signal, model=args.model, tokenizer=args.tokenizer, device=args.device,
        max_context=args.max_context, scoring=scoring_options(args), cache_dir=args.cache_dir,
        batch_size=args.batch_size, calibration=args.calibration, spec=trade_spec(args),
        horizon=args.horizon, periods_per_year=args.periods_per_year,
        engine_options={"provider": args.provider, "region": args.region},
        verbose=not args.quiet)


def _run(args: argparse.Namespace) -> int:
    run = run_backtest(options_from_args(args))
    summary, text = run.summary, run.metrics.formatted()
    print(f"{summary['engine']}: total return {text['total return']}, Sharpe {text['Sharpe']}, "
          f"max drawdown {text['max drawdown']}, excess over buy-and-hold "
          f"{text['excess over buy-and-hold']}, turnover {text['turnover per rebalance']} per "
          "rebalance" + (f", RankIC {summary['rank_ic']:+.4f}" if "rank_ic" in summary else ""))
    for path in run.files.values():
        print(f"wrote {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("backtest", help="backtest scores in an engine; tear sheet + summary",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=sorted(ENGINES), default="vectorbt",
                   help="; ".join(f"{e.name}: {e.description}" for e in ENGINES.values()))
    p.add_argument("--panel", required=True,
                   help="long CSV/Parquet file or folder of per-symbol files")
    p.add_argument("--scores", default=None,
                   help="scores file (kronos-quant score); or use --model")
    p.add_argument("--signal", default=None,
                   help=f"score column to trade (default: the first); with --model, the scorer "
                        f"(default: {DEFAULT_SCORER})")
    add_model_args(p)
    add_scoring_args(p, title="scoring with --model (walk-forward, as kronos-quant score)")
    p.add_argument("--calibration", action="store_true",
                   help="with --model: also report band coverage")
    add_trade_args(p, deprecated="init_cash")
    q = p.add_argument_group("--engine qlib")
    q.add_argument("--provider", default=None,
                   help="Qlib provider directory (default: written from --panel into "
                        "OUT/qlib_provider)")
    q.add_argument("--region", default="us", choices=["cn", "us"],
                   help="Qlib price limits: cn 9.5%%, us none (default: us)")
    p.add_argument("--horizon", type=int_option(1), default=None,
                   help="evaluation horizon in bars (default: bars between rebalances)")
    p.add_argument("--periods-per-year", type=int_option(1), default=None,
                   help=f"annualisation (default: {TRADING_DAYS_PER_YEAR} bars a year for daily "
                        f"bars, {CALENDAR_DAYS_PER_YEAR} when the data has weekend bars)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run)

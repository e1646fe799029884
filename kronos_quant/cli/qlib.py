"""``kronos-quant qlib-data`` and ``kronos-quant qlib-backtest``.

``qlib-data`` writes (or appends to) a Qlib provider directory from a panel and checks that
Qlib reads back exactly what was written; ``qlib-backtest`` runs Qlib's TopkDropout strategy
on a scores file (``kronos-quant score`` output) and writes the report, the risk tables and
the cumulative-return plot.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..io import atomic_path
from .options import add_trade_args, trade_spec


def _data(args: argparse.Namespace) -> int:
    from ..adapters.qlib_data import check_provider, write_provider

    if args.panel is None and not args.check:
        raise ValueError("give --panel to write a provider directory, or --check to verify one")
    panel = None
    if args.panel is not None:
        from ..data import load_panel

        panel = load_panel(args.panel)
        summary = write_provider(panel, args.out, markets=args.market, freq=args.freq,
                                 verbose=not args.quiet)
        print(f"wrote {summary}")
    if args.check:
        report = check_provider(args.out, panel=panel, freq=args.freq, region=args.region)
        print(report)
        return 0 if report.ok else 1
    return 0


def _backtest(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..adapters.qlib import compare_scorers, run_topk_dropout
    from ..signals.store import read_scores

    scores = read_scores(args.scores)
    columns = args.columns.split(",") if args.columns else list(scores.columns)
    missing = [c for c in columns if c not in scores.columns]
    if missing:
        raise ValueError(f"score columns {missing} not in {args.scores}; "
                         f"it has {list(scores.columns)}")
    options = dict(spec=trade_spec(args), benchmark=args.benchmark, region=args.region,
                   start=args.start, end=args.end, verbose=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if len(columns) > 1:
        table, figure = compare_scorers(scores[columns], args.provider, out_dir=out, **options)
        with pd.option_context("display.width", 160, "display.max_columns", 10):
            print(table.round(4))
        print(f"wrote {out / 'scorers.csv'} and {figure}")
        return 0
    result = run_topk_dropout(scores, args.provider, column=columns[0], out_dir=out, **options)
    for name, table in (("report.csv", result.report), ("risk.csv", result.risk)):
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp)
    print(result.risk.round(4))
    print(f"wrote {out / 'report.csv'}, {out / 'risk.csv'} and {result.figure}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``qlib-data`` and ``qlib-backtest``."""
    data = subparsers.add_parser(
        "qlib-data", help="write or check a Qlib provider directory",
        description="Write a panel as a Qlib provider directory (appending new dates and "
                    "instruments to an existing one; past values are never rewritten) and/or "
                    "check that Qlib reads back exactly what was written.")
    data.add_argument("--panel", help="CSV/Parquet panel or folder of per-symbol files")
    data.add_argument("--out", required=True, help="provider directory (appended to if present)")
    data.add_argument("--market", action="append",
                      help="also list every instrument under this market name (repeatable)")
    data.add_argument("--freq", default="day", help="Qlib freq: day (default) or e.g. 1min")
    data.add_argument("--region", default="cn", choices=["cn", "us"], help="for --check")
    data.add_argument("--check", action="store_true",
                      help="read everything back through Qlib and compare (with --panel: "
                           "against the panel too); exit 1 on any difference")
    data.set_defaults(func=_data)

    bt = subparsers.add_parser(
        "qlib-backtest", help="Qlib TopkDropout backtest of a scores file",
        description="Qlib's TopkDropoutStrategy on a scores file, with the trading terms every "
                    "engine reads (a TradeSpec: --topk, --n-drop, --fees, ...; method topk, "
                    "long only). Qlib's own rules (lots, price limits, tie order, delistings) "
                    "are listed in docs/qlib.md.")
    bt.add_argument("--scores", required=True, help="scores file (kronos-quant score output)")
    bt.add_argument("--provider", required=True, help="Qlib provider directory")
    bt.add_argument("--benchmark", required=True, help="benchmark instrument of the provider")
    bt.add_argument("--columns", help="score columns, comma-separated (default: all; several "
                                      "are compared side by side)")
    bt.add_argument("--region", default="cn", choices=["cn", "us"],
                    help="price limits: cn 9.5%%, us none (default: cn)")
    bt.add_argument("--start", help="first trading day (default: the day after the first score)")
    bt.add_argument("--end", help="last trading day (default: the day after the last score)")
    bt.add_argument("--out", default="qlib_backtest", help="output folder (default: qlib_backtest)")
    add_trade_args(bt, deprecated="account")
    bt.set_defaults(func=_backtest)

"""``kronos-quant demo`` (what ``make demo`` runs); the demo itself is :mod:`kronos_quant.demo`."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from .. import assets
from .. import demo as demo_app
from ..demo import STEPS, DemoContext, DemoSettings, demo_series, plan_steps, run_demo
from ..inputs import MIN_CONTEXT
from ..strategies.ledger import Ledger
from .options import add_model_args, check_lookback, int_option
from .serve import dashboard_command


def _command(args: argparse.Namespace) -> int:
    bundled = None
    if args.model is None and args.tokenizer is None:
        bundled = assets.embedded_demo()
        if bundled is None:
            print(f"note: the embedded demo model is missing from {assets.ASSETS}; using a "
                  "random-weight nano model instead (rebuild it: kronos-quant finetune "
                  f"demo-model --out {assets.ASSETS})")
    steps = plan_steps(args.steps)  # bad names fail before the model loads
    # The demo model is small: one thread is fastest, and on a shared machine OpenMP threads
    # spinning against other jobs make it many times slower.
    torch.set_num_threads(args.threads)
    for name in demo_app.CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    predictor, label = assets.demo_predictor(args.model, args.tokenizer, device=args.device,
                                             max_context=args.max_context, assets=bundled)
    print(f"model: {label}")
    # `is None`, not `or`: an explicit value is always honoured (0 is refused by argparse).
    lookback = args.lookback if args.lookback is not None else (
        bundled.lookback if bundled else demo_app.FALLBACK_LOOKBACK)
    pred_len = args.pred_len if args.pred_len is not None else (
        bundled.pred_len if bundled else demo_app.FALLBACK_PRED_LEN)
    series, name = demo_series(bundled, lookback)
    check_lookback(lookback, context=predictor.max_context,
                   bars=len(series) if bundled else None, source=f"the bundled series ({name})")
    settings = DemoSettings(pred_len=pred_len, samples=args.samples, seed=args.seed,
                            live_candles=args.live_candles, score_samples=args.score_samples)
    ctx = DemoContext(Path(args.out), predictor, label, series, name, settings,
                      verbose=not args.quiet)
    run = run_demo(ctx, steps)
    width = max(len(n) for n in run.results)
    print("\nsummary (seconds per step):")
    for step_name, result in run.results.items():
        extra = f"  {result.notes[0]}" if result.status != "ok" and result.notes else ""
        print(f"  {step_name:<{width}}  {result.status:<7} {result.seconds:6.1f}{extra}")
    print(f"  {'total':<{width}}  {'':<7} {run.seconds:6.1f}")
    print(f"open {run.index.resolve()}")
    state = Path(args.out) / "live" / "state"  # the live step's ledger, if it ran
    print(f"dashboard: {dashboard_command(state if (state / Ledger.FILE).is_file() else None)}")
    return 0 if run.ok else 1


def _step_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEPS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown step(s) {unknown or [text]}; choose from "
                                         f"{','.join(STEPS)}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="offline demo of the whole plugin (make demo)",
                              description=demo_app.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--out", default="kronos_demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--steps", type=_step_list, default=None,
                   help=f"comma-separated subset of {','.join(STEPS)} (default: all)")
    p.add_argument("--pred-len", type=int_option(1), default=None,
                   help="bars the fan chart forecasts (default: the demo model's horizon, 20)")
    p.add_argument("--lookback", type=int_option(MIN_CONTEXT), default=None,
                   help="context bars of the fan chart (default: the demo model's lookback, 120)")
    p.add_argument("--samples", type=int_option(1), default=32, help="fan chart sample paths")
    p.add_argument("--score-samples", type=int_option(1), default=16,
                   help="sample paths per walk-forward window")
    p.add_argument("--live-candles", type=int_option(2), default=30,
                   help="recorded candles the live loop replays")
    p.add_argument("--threads", type=int_option(1), default=1,
                   help="torch CPU threads (default: 1, fastest for the small demo model)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_command)

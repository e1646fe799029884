"""``kronos-quant score`` and ``kronos-quant evaluate``.

``score`` runs walk-forward Kronos forecasts over a panel and writes one row per (date,
instrument) and one column per scorer to Parquet (or CSV). Under ``torchrun`` (or with
``--store``) the windows are sharded across processes and GPUs through a partitioned forecast
store (:mod:`kronos_quant.signals.distributed`); rank 0 writes the scores. ``evaluate``
compares such scores with realised forward returns and the random-walk, momentum and reversal
baselines, each mean with its Newey–West p-value, and says which are significant.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from ..data import load_panel
from ..execution import DEFAULT_EXECUTION, EXECUTIONS
from ..inputs import MIN_CONTEXT
from ..io import atomic_path
from ..signals.store import read_scores, write_scores
from .options import (
    add_data_args,
    add_model_args,
    add_scoring_args,
    check_lookback,
    csv_list,
    int_option,
    model_context,
    probability,
    scoring_options,
)


def _sharded(args: argparse.Namespace) -> bool:
    """Score through the sharded forecast store: under torchrun, or when --store is given."""
    return args.store is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1


def _forecast_sharded(args: argparse.Namespace, panel: pd.DataFrame, options: dict):
    """Forecasts of every window on rank 0 (None on other ranks), each rank generating its
    share of the partitions on its own device; raises ShardFailure naming failed ranks."""
    from ..predictor import KronosPredictor
    from ..runtime import backend_name, close_distributed, init_distributed
    from ..signals.distributed import forecast_panel_sharded

    if args.cache_dir is not None:
        raise ValueError("--cache-dir is for one process without --store; the --store "
                         "folder is the cache of a sharded run")
    store = Path(args.store) if args.store else Path(args.out).with_suffix(".forecasts")
    env = init_distributed(args.device, group_of_one=True)
    backend = backend_name()
    try:
        predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device=env.device,
                                                    max_context=args.max_context)
        run = forecast_panel_sharded(predictor, panel, store=store, env=env,
                                     batch_size=args.batch_size,
                                     verbose=not args.quiet and env.is_main, **options)
    finally:
        close_distributed()
    if env.is_main:
        print(f"forecast store {store}: {run.partitions} partitions; computed {run.computed} "
              f"({run.computed_windows} windows) on {env.world_size} process(es) "
              f"[{backend}, {env.device}], reused {run.reused}")
    return run.forecasts


def _default_model(args: argparse.Namespace) -> None:
    """Without --model and --tokenizer, the embedded demo model (as ``forecast`` does)."""
    from ..assets import embedded_demo

    if (args.model is None) != (args.tokenizer is None):
        raise ValueError("give both --model and --tokenizer, or neither")
    if args.model is None:
        assets = embedded_demo()
        if assets is None:
            raise ValueError("--model and --tokenizer are required: the embedded demo model "
                             "is missing from this installation")
        args.model, args.tokenizer = str(assets.model_dir), str(assets.tokenizer_dir)
        print(f"model: {assets.label}")


def _score(args: argparse.Namespace) -> int:
    from ..predictor import KronosPredictor
    from ..signals import ShardFailure, calibrate, forecast_panel, plot_calibration
    from ..signals.scorers import resolve_scorers

    _default_model(args)
    scorers = resolve_scorers(csv_list(args.scorers))
    check_lookback(args.lookback, context=model_context(args.model, args.max_context))
    panel = load_panel(args.panel, date_format=args.date_format, repair=args.repair)
    options = scoring_options(args)
    if _sharded(args):
        try:
            forecasts = _forecast_sharded(args, panel, options)
        except ShardFailure as err:
            # Said by rank 0 and by the failed ranks: torchrun may stop rank 0 first.
            rank = int(os.environ.get("RANK", "0"))
            if rank == 0 or rank in err.failures:
                print(f"kronos-quant score: error: {err}", file=sys.stderr)
            return 1
        if forecasts is None:  # not rank 0: rank 0 writes the scores
            return 0
    else:
        predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer,
                                                    device=args.device,
                                                    max_context=args.max_context)
        forecasts = forecast_panel(predictor, panel, cache_dir=args.cache_dir,
                                   batch_size=args.batch_size, verbose=not args.quiet,
                                   **options)
    scores = forecasts.score(scorers, log=args.log_returns).sort_index()
    out = write_scores(scores, args.out)
    dates = scores.index.get_level_values("datetime")
    print(f"scored {len(scores)} (date, instrument) windows on {dates.nunique()} dates "
          f"({dates.min()} … {dates.max()}) with {len(scorers)} scorers")
    print(f"wrote scores: {out}")
    if args.calibration:
        try:
            calib = calibrate(forecasts, panel, log=args.log_returns)
        except ValueError as err:
            print(f"calibration skipped: {err}")
        else:
            print(calib.table())
            plot_calibration(calib, args.calibration)
            print(f"wrote calibration chart: {args.calibration}")
    return 0


def _scores_here(args: argparse.Namespace, panel: pd.DataFrame) -> pd.DataFrame:
    """``evaluate`` without --scores: score the panel first (the embedded demo model unless
    --model/--tokenizer), forecasting --horizon bars."""
    from ..predictor import KronosPredictor
    from ..signals import score_panel

    _default_model(args)
    check_lookback(args.lookback, context=model_context(args.model, args.max_context))
    predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device=args.device,
                                                max_context=args.max_context)
    return score_panel(predictor, panel, lookback=args.lookback, pred_len=args.horizon,
                       sample_count=args.samples, seed=args.seed, verbose=not args.quiet)


def _evaluate(args: argparse.Namespace) -> int:
    from ..signals import evaluate, plot_ic

    panel = load_panel(args.panel, date_format=args.date_format, repair=args.repair)
    scores = read_scores(args.scores) if args.scores else _scores_here(args, panel)
    source = args.scores or "scored here"
    signals = csv_list(args.signals)
    if signals:
        unknown = [s for s in signals if s not in scores.columns]
        if unknown:
            raise ValueError(f"--signals {unknown} are not columns of {source}: "
                             f"{list(scores.columns)}")
        scores = scores[signals]
    numeric = scores.select_dtypes("number")
    numeric.attrs = dict(scores.attrs)  # the score metadata travels with the chosen columns
    result = evaluate(numeric, panel, horizon=args.horizon,
                      baselines=not args.no_baselines, momentum_window=args.momentum_window,
                      reversal_window=args.reversal_window, quantiles=args.quantiles,
                      top_k=args.top_k, log=args.log_returns, execution=args.execution)
    if result.metadata:  # the execution line heads the table below
        print(f"score metadata ({source}):")
        for key, value in result.metadata.items():
            print(f"  {key}: {value}")
    else:
        print(f"score metadata: none stored in {source}")
    print(result.table())
    verdicts = result.verdicts(args.alpha)
    if verdicts:
        print(f"significance (two-sided Newey–West tests, level {args.alpha:g}; "
              "see docs/statistics.md):")
        print("\n".join(f"  {line}" for line in verdicts))
    if args.out:
        path = Path(args.out)
        with atomic_path(path) as tmp:
            result.summary.to_csv(tmp)
        print(f"wrote summary: {path}")
    if args.plot:
        plot_ic(result, args.plot)
        print(f"wrote IC chart: {args.plot}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("score", help="walk-forward Kronos scores for every instrument",
                              description=__doc__)
    add_model_args(p)
    p.add_argument("--panel", required=True,
                   help="long CSV/Parquet file or folder of per-symbol files")
    add_data_args(p)
    p.add_argument("--scorers", default=None,
                   help="comma-separated scorer names (default: all built-ins)")
    p.add_argument("--log-returns", action="store_true", help="score on log returns")
    add_scoring_args(p)
    p.add_argument("--store", default=None,
                   help="partitioned forecast store (one Parquet file per date block) shared "
                        "by all processes; used under torchrun (default there: <out>.forecasts) "
                        "and resumable: a rerun computes only missing partitions")
    p.add_argument("--calibration", default=None, metavar="PNG",
                   help="also check path calibration against the panel and save a chart here")
    p.add_argument("--out", default="scores.parquet", help="output .parquet or .csv")
    p.set_defaults(func=_score)

    e = subparsers.add_parser("evaluate", help="IC, RankIC, quantile returns vs baselines",
                              description=__doc__)
    e.add_argument("--scores", default=None,
                   help="scores file written by `kronos-quant score` (default: score the panel "
                        "here with --model, else the embedded demo model, over --horizon bars)")
    e.add_argument("--panel", required=True, help="the panel the scores were computed on")
    add_data_args(e)
    add_model_args(e)
    g = e.add_argument_group("scoring here (without --scores)")
    g.add_argument("--lookback", type=int_option(MIN_CONTEXT), default=64,
                   help="context bars per window")
    g.add_argument("--samples", type=int_option(1), default=16, help="sample paths per window")
    g.add_argument("--seed", type=int_option(0), default=0)
    e.add_argument("--horizon", type=int_option(1), default=5,
                   help="forward-return horizon in bars")
    e.add_argument("--execution", choices=EXECUTIONS, default=DEFAULT_EXECUTION,
                   help="when a score at bar t trades: next_open (default, open of t+1), "
                        "next_close (close of t+1) or same_close (close of t: needs "
                        "market-on-close orders)")
    e.add_argument("--signals", default=None, help="comma-separated score columns (default: all)")
    e.add_argument("--quantiles", type=int_option(2), default=5)
    e.add_argument("--top-k", type=int_option(1), default=None, help="top-k set for turnover")
    e.add_argument("--momentum-window", type=int_option(1), default=20)
    e.add_argument("--reversal-window", type=int_option(1), default=5)
    e.add_argument("--log-returns", action="store_true", help="evaluate on log forward returns")
    e.add_argument("--no-baselines", action="store_true")
    e.add_argument("--alpha", type=probability, default=0.05,
                   help="significance level of the verdict lines (default 0.05)")
    e.add_argument("--out", default=None, help="write the summary table to this CSV")
    e.add_argument("--plot", default=None, metavar="PNG", help="save the IC chart here")
    e.set_defaults(func=_evaluate)

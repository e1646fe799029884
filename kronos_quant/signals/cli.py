"""``kronos-quant score`` and ``kronos-quant evaluate``.

``score`` runs walk-forward Kronos forecasts over a panel and writes one row per (date,
instrument) and one column per scorer to Parquet (or CSV). Under ``torchrun`` (or with
``--store``) the windows are sharded across processes and GPUs through a partitioned forecast
store (:mod:`kronos_quant.signals.distributed`); rank 0 writes the scores. ``evaluate``
compares such scores with realised forward returns and the random-walk, momentum and reversal
baselines.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from ..data import load_panel
from ..io import atomic_path, write_atomic


def _freq(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _csv_list(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".attrs.json")


def write_scores(scores: pd.DataFrame, path: str | Path) -> Path:
    """Scores to ``.parquet`` (default) or ``.csv``, keeping the (datetime, instrument) index
    and the frame's ``attrs`` (the scoring settings): inside the Parquet file, or in a
    ``<name>.csv.attrs.json`` sidecar next to a CSV. Written atomically (temp file, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    json.dumps(scores.attrs)  # fail before writing if an attr cannot be stored
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            scores.to_csv(tmp)
            if scores.attrs:
                write_atomic(_sidecar(path), json.dumps(scores.attrs, indent=1, sort_keys=True))
        else:
            scores.to_parquet(tmp)
    return path


def read_scores(path: str | Path) -> pd.DataFrame:
    """Scores written by :func:`write_scores` (or any long table with datetime/instrument),
    with their ``attrs`` restored (from the Parquet file or the CSV's sidecar, if any)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scores file {path} does not exist")
    csv = path.suffix.lower() == ".csv"
    frame = pd.read_csv(path) if csv else pd.read_parquet(path)
    attrs = dict(frame.attrs)
    if csv and _sidecar(path).is_file():
        attrs = json.loads(_sidecar(path).read_text())
    if isinstance(frame.index, pd.MultiIndex):
        frame = frame.reset_index()
    missing = [c for c in ("datetime", "instrument") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: scores need columns 'datetime' and 'instrument'; "
                         f"missing {missing}")
    frame["datetime"] = pd.to_datetime(frame["datetime"])
    frame["instrument"] = frame["instrument"].astype(str)
    frame = frame.set_index(["datetime", "instrument"]).sort_index()
    frame.attrs = attrs
    return frame


def _sharded(args: argparse.Namespace) -> bool:
    """Score through the sharded forecast store: under torchrun, or when --store is given."""
    return args.store is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1


def _forecast_sharded(args: argparse.Namespace, panel: pd.DataFrame, options: dict):
    """Forecasts of every window on rank 0 (None on other ranks), each rank generating its
    share of the partitions on its own device; raises ShardFailure naming failed ranks."""
    import torch.distributed as dist

    from ..finetune.runtime import init_distributed
    from ..predictor import KronosPredictor
    from .distributed import forecast_panel_sharded

    if args.cache_dir is not None:
        raise ValueError("--cache-dir is for one process without --store; the --store "
                         "folder is the cache of a sharded run")
    store = Path(args.store) if args.store else Path(args.out).with_suffix(".forecasts")
    env = init_distributed(args.device)
    if "TORCHELASTIC_RUN_ID" in os.environ and not dist.is_initialized():
        # init_distributed joins no group for a one-process job; under torchrun join it
        # anyway, so one process runs the same collectives (and backend) as many.
        dist.init_process_group(backend="nccl" if env.device.type == "cuda" else "gloo")
    backend = dist.get_backend() if dist.is_initialized() else "no process group"
    try:
        predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device=env.device,
                                                    max_context=args.max_context)
        run = forecast_panel_sharded(predictor, panel, store=store, env=env,
                                     batch_size=args.batch_size,
                                     verbose=not args.quiet and env.is_main, **options)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if env.is_main:
        print(f"forecast store {store}: {run.partitions} partitions; computed {run.computed} "
              f"({run.computed_windows} windows) on {env.world_size} process(es) "
              f"[{backend}, {env.device}], reused {run.reused}")
    return run.forecasts


def _score(args: argparse.Namespace) -> int:
    from ..predictor import KronosPredictor
    from .calibration import calibrate
    from .distributed import ShardFailure
    from .plots import plot_calibration
    from .scorers import resolve_scorers
    from .walkforward import forecast_panel

    if args.model is None or args.tokenizer is None:
        raise ValueError("--model and --tokenizer are required (Hub ids or local directories)")
    scorers = resolve_scorers(_csv_list(args.scorers))
    panel = load_panel(args.panel)
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


def _evaluate(args: argparse.Namespace) -> int:
    from ..execution import describe_execution
    from .evaluation import evaluate
    from .plots import plot_ic

    scores = read_scores(args.scores)
    signals = _csv_list(args.signals)
    if signals:
        unknown = [s for s in signals if s not in scores.columns]
        if unknown:
            raise ValueError(f"--signals {unknown} are not columns of {args.scores}: "
                             f"{list(scores.columns)}")
        scores = scores[signals]
    numeric = scores.select_dtypes("number")
    numeric.attrs = dict(scores.attrs)  # the score metadata travels with the chosen columns
    result = evaluate(numeric, load_panel(args.panel), horizon=args.horizon,
                      baselines=not args.no_baselines, momentum_window=args.momentum_window,
                      reversal_window=args.reversal_window, quantiles=args.quantiles,
                      top_k=args.top_k, log=args.log_returns, execution=args.execution)
    print(f"execution: {describe_execution(result.execution)}")
    if result.metadata:
        print(f"score metadata ({args.scores}):")
        for key, value in result.metadata.items():
            print(f"  {key}: {value}")
    else:
        print(f"score metadata: none stored in {args.scores}")
    print(result.table())
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        result.summary.to_csv(path)
        print(f"wrote summary: {path}")
    if args.plot:
        plot_ic(result, args.plot)
        print(f"wrote IC chart: {args.plot}")
    return 0


def add_scoring_args(parser: argparse.ArgumentParser, *,
                     title: str = "walk-forward forecasts") -> None:
    """The walk-forward forecast options (``--lookback`` … ``--batch-size``) as one argument
    group: ``kronos-quant score`` and every command that scores with ``--model`` use these."""
    from ..inputs import MIN_CONTEXT, int_option

    g = parser.add_argument_group(title)
    g.add_argument("--lookback", type=int_option(MIN_CONTEXT), default=64,
                   help="context bars per window")
    g.add_argument("--pred-len", type=int_option(1), default=5, help="bars forecast per window")
    g.add_argument("--samples", type=int_option(1), default=16, help="sample paths per window")
    g.add_argument("--freq", default="1",
                   help="rebalance every k-th date (int) or a pandas period such as W, ME")
    g.add_argument("--start", default=None, help="first rebalance date (inclusive)")
    g.add_argument("--end", default=None, help="last rebalance date (inclusive)")
    g.add_argument("--seed", type=int_option(0), default=0)
    g.add_argument("--T", type=float, default=1.0, help="sampling temperature")
    g.add_argument("--top-k", type=int_option(0), default=0,
                   help="sample from the k likeliest tokens (0: off)")
    g.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass")
    g.add_argument("--calendar", default=None,
                   help="exchange calendar for daily future stamps, e.g. XNYS (needs the "
                        "[calendars] extra; default: weekdays)")
    g.add_argument("--cache-dir", default=None,
                   help="Parquet forecast cache folder (resumable runs)")
    g.add_argument("--batch-size", type=int_option(1), default=256,
                   help="windows per generation call")


def scoring_options(args: argparse.Namespace) -> dict:
    """Keyword options of :func:`~kronos_quant.signals.forecast_panel` from the options
    :func:`add_scoring_args` added (``cache_dir`` and ``batch_size`` are left to the caller)."""
    return dict(lookback=args.lookback, pred_len=args.pred_len, sample_count=args.samples,
                freq=_freq(args.freq), start=args.start, end=args.end, seed=args.seed,
                T=args.T, top_k=args.top_k, top_p=args.top_p, calendar=args.calendar)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import add_model_args
    from ..execution import DEFAULT_EXECUTION, EXECUTIONS
    from ..inputs import int_option

    p = subparsers.add_parser("score", help="walk-forward Kronos scores for every instrument",
                              description=__doc__)
    add_model_args(p, default_model=None, default_tokenizer=None)
    p.add_argument("--panel", required=True,
                   help="long CSV/Parquet file or folder of per-symbol files")
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
    e.add_argument("--scores", required=True, help="scores file written by `kronos-quant score`")
    e.add_argument("--panel", required=True, help="the panel the scores were computed on")
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
    e.add_argument("--out", default=None, help="write the summary table to this CSV")
    e.add_argument("--plot", default=None, metavar="PNG", help="save the IC chart here")
    e.set_defaults(func=_evaluate)

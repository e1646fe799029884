"""``kronos-quant backtest``: scores → target weights → an engine → tear sheet and summary.

The command computes the target weights once (:func:`kronos_quant.portfolio.target_weights`)
and hands them, with the execution convention, to the chosen engine, so every engine trades
the same book. It writes ``weights.parquet``, ``equity.png``, ``tearsheet.html`` (QuantStats
plus the signal-quality section) and ``summary.json`` into ``--out``.

Engines are entries of :data:`ENGINES`. To add one, write a function taking a
:class:`BacktestJob` and returning an :class:`EngineResult` (import the engine inside it) and
call :func:`register_engine` below the existing ones; ``--engine NAME`` then selects it and
``add_arguments`` may add its own options (read back from ``job.options``).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .data import load_panel, unstack_field
from .execution import DEFAULT_EXECUTION, EXECUTIONS
from .inputs import int_option
from .io import write_atomic
from .portfolio import METHODS, target_weights, turnover

DEFAULT_SCORER = "expected_return"


@dataclass
class BacktestJob:
    """What every engine receives: the panel, the weights to trade and the trading terms."""

    panel: pd.DataFrame
    weights: pd.DataFrame  # rebalance dates × instruments (target_weights output)
    execution: str
    fees: float
    slippage: float
    init_cash: float
    options: argparse.Namespace = field(default_factory=argparse.Namespace)


@dataclass
class EngineResult:
    """What every engine returns: per-bar simple returns and the engine's own result object
    (kept for users of the library API; the command only reads ``returns``)."""

    returns: pd.Series
    native: object = None
    orders: int | None = None


@dataclass(frozen=True)
class Engine:
    name: str
    run: Callable[[BacktestJob], EngineResult]
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


ENGINES: dict[str, Engine] = {}


def register_engine(engine: Engine) -> None:
    """Make ``engine`` selectable with ``--engine engine.name``."""
    ENGINES[engine.name] = engine


def _vectorbt(job: BacktestJob) -> EngineResult:
    from .adapters.vectorbt import backtest

    pf = backtest(job.weights, job.panel, execution=job.execution, fees=job.fees,
                  slippage=job.slippage, cash=job.init_cash)
    return EngineResult(pf.returns(), pf, int(pf.orders.count()))


register_engine(Engine("vectorbt", _vectorbt,
                       "vectorbt Portfolio.from_orders: target percent, one shared-cash group"))


def _backtrader(job: BacktestJob) -> EngineResult:
    from .strategies.backtrader import run

    res = run(job.panel, weights=job.weights, execution=job.execution, fees=job.fees,
              slippage=job.slippage, cash=job.init_cash, stdstats=False)
    return EngineResult(res.returns, res, len(res.result.fills))


register_engine(Engine("backtrader", _backtrader,
                       "backtrader KronosStrategy: orders sized at the fill price, sells first "
                       "(daily returns)"))


# --- inputs ----------------------------------------------------------------------------------

def _scores_from_model(args: argparse.Namespace, panel: pd.DataFrame):
    """Walk-forward scores (and the forecasts, for calibration) from --model/--tokenizer."""
    from .predictor import KronosPredictor
    from .signals import forecast_panel
    from .signals.cli import scoring_options

    predictor = KronosPredictor.from_pretrained(args.model, args.tokenizer, device=args.device,
                                                max_context=args.max_context)
    forecasts = forecast_panel(predictor, panel, cache_dir=args.cache_dir,
                               batch_size=args.batch_size, verbose=not args.quiet,
                               **scoring_options(args))
    scores = forecasts.score([args.signal or DEFAULT_SCORER]).sort_index()
    return scores, forecasts


def load_scores(args: argparse.Namespace, panel: pd.DataFrame):
    """(scores, forecasts or None) from --scores or from the model options."""
    from .signals.cli import read_scores

    if (args.scores is None) == (args.model is None):
        raise ValueError("give either --scores FILE or --model and --tokenizer")
    if args.scores is not None:
        return read_scores(args.scores), None
    if args.tokenizer is None:
        raise ValueError("--model needs --tokenizer")
    return _scores_from_model(args, panel)


def pick_signal(scores: pd.DataFrame, name: str | None) -> str:
    """The score column to trade: ``name`` or, by default, the first numeric column."""
    numeric = list(scores.select_dtypes("number").columns)
    if not numeric:
        raise ValueError("the scores have no numeric column")
    if name is None:
        return numeric[0]
    if name not in numeric:
        raise ValueError(f"--signal {name!r} is not a numeric score column: {numeric}")
    return name


def scores_model_label(args: argparse.Namespace, scores: pd.DataFrame) -> str | None:
    """The model behind the scores: the --model/--tokenizer names, else the weights
    fingerprint the scores file carries (None when it carries none)."""
    from .predictor import checkpoint_label
    from .signals.plots import fingerprint_label

    if args.model is not None:
        return checkpoint_label(args.model, args.tokenizer)
    return fingerprint_label(scores.attrs)


def equal_weight_returns(panel: pd.DataFrame) -> pd.Series:
    """Per-bar close-to-close return of the equal-weight universe (the benchmark every
    backtest and the demo is shown against)."""
    returns = unstack_field(panel, "close").pct_change(fill_method=None).mean(axis=1)
    return returns.fillna(0.0).rename("equal-weight universe")


def rebalance_spacing(weights: pd.DataFrame, calendar: pd.DatetimeIndex) -> int:
    """Median number of bars between rebalances: the holding period the signal is judged on."""
    if len(weights) < 2:
        return 1
    return max(1, int(np.median(np.diff(calendar.get_indexer(weights.index)))))


# --- outputs ---------------------------------------------------------------------------------

def plot_equity(returns: pd.Series, benchmark: pd.Series, path: Path, *, title: str,
                model_label: str | None = None) -> Path:
    """Growth of 1 for the strategy and the benchmark (matplotlib Agg canvas).

    ``model_label`` (e.g. :func:`kronos_quant.predictor.checkpoint_label`) names the model
    behind the scores in the corner, as on every chart (:func:`kronos_quant.charts.save_figure`).
    """
    from .charts import new_figure, save_figure

    fig = new_figure(10, 4.5)
    ax = fig.add_subplot()
    for series, label in ((returns, "strategy"), (benchmark, benchmark.name or "benchmark")):
        ax.plot((1.0 + series.fillna(0.0)).cumprod(), label=label)
    ax.set_title(title)
    ax.set_ylabel("growth of 1")
    ax.legend()
    save_figure(fig, path, model_label)
    return Path(path)


def summarise(returns: pd.Series, weights: pd.DataFrame, *, periods_per_year: int,
              signal: dict) -> dict:
    """Headline numbers of a backtest (QuantStats' definitions, as in the tear sheet)."""
    from .adapters import require_engine
    from .adapters.quantstats import quiet_reports

    with quiet_reports():
        qs = require_engine("quantstats")
        out = {"total_return": float(qs.stats.comp(returns)),
               "sharpe": float(qs.stats.sharpe(returns, periods=periods_per_year)),
               "max_drawdown": float(qs.stats.max_drawdown(returns))}
    out["turnover"] = float(turnover(weights).mean())
    return out | signal


def _run(args: argparse.Namespace) -> int:
    from .adapters.quantstats import evaluate_signal, infer_periods_per_year, tearsheet
    from .signals import calibrate

    engine = ENGINES[args.engine]
    panel = load_panel(args.panel)
    scores, forecasts = load_scores(args, panel)
    signal = pick_signal(scores, args.signal)
    weights = target_weights(scores, column=signal, method=args.method, topk=args.topk,
                             n_drop=args.n_drop)
    job = BacktestJob(panel, weights, args.execution, args.fees, args.slippage, args.init_cash,
                      args)
    result = engine.run(job)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights.to_parquet(out / "weights.parquet")
    returns = result.returns.rename("strategy")
    benchmark = equal_weight_returns(panel)
    calendar = pd.DatetimeIndex(benchmark.index)
    horizon = args.horizon or rebalance_spacing(weights, calendar)
    calibration = (calibrate(forecasts, panel) if forecasts is not None and args.calibration
                   else None)
    report = evaluate_signal(scores[[signal]], panel, horizon=horizon, execution=args.execution,
                             calibration=calibration)
    ppy = args.periods_per_year or infer_periods_per_year(calendar)
    title = f"{signal} {args.method} ({args.engine}, {args.execution})"
    tearsheet(returns, benchmark=benchmark, title=title, output=out / "tearsheet.html",
              periods_per_year=ppy, signal_report=report)
    label = scores_model_label(args, scores)
    plot_equity(returns, benchmark, out / "equity.png", title=title, model_label=label)
    summary = {"engine": args.engine, "model": label, "signal": signal, "method": args.method,
               "topk": args.topk, "n_drop": args.n_drop, "execution": args.execution,
               "fees": args.fees, "slippage": args.slippage, "horizon": horizon,
               "periods_per_year": ppy, "orders": result.orders,
               "start": str(returns.index[0]), "end": str(returns.index[-1])}
    summary |= summarise(returns, weights, periods_per_year=ppy, signal=report.summary())
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"{engine.name}: total return {summary['total_return']:+.2%}, Sharpe "
          f"{summary['sharpe']:.2f}, max drawdown {summary['max_drawdown']:.2%}, turnover "
          f"{summary['turnover']:.3f} per rebalance" +
          (f", RankIC {summary['rank_ic']:+.4f}" if "rank_ic" in summary else ""))
    for name in ("tearsheet.html", "equity.png", "weights.parquet", "summary.json"):
        print(f"wrote {out / name}")
    return 0


def _non_negative(text: str) -> float:
    value = float(text)
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from .cli import add_model_args
    from .signals.cli import add_scoring_args

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
    add_model_args(p, default_model=None, default_tokenizer=None)
    add_scoring_args(p, title="scoring with --model (walk-forward, as kronos-quant score)")
    p.add_argument("--calibration", action="store_true",
                   help="with --model: also report band coverage")
    p.add_argument("--method", choices=METHODS, default="topk")
    p.add_argument("--topk", type=int_option(1), default=10)
    p.add_argument("--n-drop", type=int_option(0), default=None,
                   help="Qlib TopkDropout: at most this many swaps per rebalance")
    p.add_argument("--execution", choices=EXECUTIONS, default=DEFAULT_EXECUTION)
    p.add_argument("--fees", type=_non_negative, default=0.0, help="per order, 0.001 = 10 bp")
    p.add_argument("--slippage", type=_non_negative, default=0.0)
    p.add_argument("--init-cash", type=_positive, default=1_000_000.0)
    p.add_argument("--horizon", type=int_option(1), default=None,
                   help="evaluation horizon in bars (default: bars between rebalances)")
    p.add_argument("--periods-per-year", type=int_option(1), default=None,
                   help="annualisation (default: 252, or 365 when the data has weekend bars)")
    p.add_argument("--out", required=True, help="output folder")
    for engine in ENGINES.values():
        if engine.add_arguments is not None:
            engine.add_arguments(p)
    p.set_defaults(func=_run)

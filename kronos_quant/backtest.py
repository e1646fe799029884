"""Backtests: scores → target weights → an engine → tear sheet and summary.

:func:`run_backtest` computes the target weights once
(:func:`kronos_quant.portfolio.target_weights`) and hands them, with the execution
convention, to the chosen engine, so every engine trades the same book. It writes
``weights.parquet``, ``equity.png``, ``tearsheet.html`` (QuantStats plus the signal-quality
section) and ``summary.json`` into ``options.out``; ``kronos-quant backtest`` is this function
behind a command line.

Engines are entries of :data:`ENGINES`. To add one, write a function taking a
:class:`BacktestJob` and returning an :class:`EngineResult` (import the engine inside it) and
call :func:`register_engine`; ``--engine NAME`` (or ``BacktestOptions(engine=NAME)``) then
selects it. Engine-specific settings travel in ``BacktestOptions.engine_options``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data import load_panel, periods_per_year, unstack_field
from .io import atomic_path, write_atomic
from .metrics import Metrics, backtest_metrics, buy_and_hold_returns, first_trade_bar
from .portfolio import target_weights
from .tradespec import ENGINES as SPEC_ENGINES
from .tradespec import TradeSpec

DEFAULT_SCORER = "expected_return"


@dataclass(frozen=True)
class BacktestOptions:
    """What one backtest runs: the data, where the scores come from, the book and the costs.

    Scores come from a ``scores`` file (``kronos-quant score`` output) or are computed from a
    ``model`` + ``tokenizer`` pair walk-forward, with ``scoring`` the keyword options of
    :func:`kronos_quant.signals.forecast_panel` (``lookback``, ``pred_len``, ...).
    ``horizon`` (evaluation, in bars) defaults to the bars between rebalances and
    ``periods_per_year`` to :func:`kronos_quant.data.periods_per_year` of the panel's dates.
    """

    panel: str | Path
    out: str | Path
    engine: str = "vectorbt"
    scores: str | Path | None = None
    signal: str | None = None
    model: str | None = None
    tokenizer: str | None = None
    device: str | None = None
    max_context: int | None = None  # None: the context the checkpoint was trained on
    scoring: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    batch_size: int = 256
    calibration: bool = False
    spec: TradeSpec = field(default_factory=TradeSpec)  # every trading term, for every engine
    horizon: int | None = None
    periods_per_year: int | None = None
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    verbose: bool = True


@dataclass
class BacktestJob:
    """What every engine receives: the panel, the weights to trade and the trading terms
    (``spec``); ``scores`` (the traded column) for engines that rank names themselves
    (Qlib's TopkDropout)."""

    panel: pd.DataFrame
    weights: pd.DataFrame  # rebalance dates × instruments (target_weights(scores, spec))
    spec: TradeSpec = field(default_factory=TradeSpec)
    scores: pd.Series | None = None
    options: BacktestOptions | None = None  # the run's options (engine_options among them)

    @property
    def execution(self) -> str:
        return self.spec.execution

    @property
    def fees(self) -> float:
        return self.spec.fees


@dataclass
class EngineResult:
    """What every engine returns: per-bar simple returns and the engine's own result object
    (kept for users of the library API; the backtest only reads ``returns``)."""

    returns: pd.Series
    native: object = None
    orders: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # into summary.json (engine_details)


@dataclass(frozen=True)
class Engine:
    name: str
    run: Callable[[BacktestJob], EngineResult]
    description: str


ENGINES: dict[str, Engine] = {}


def register_engine(engine: Engine) -> None:
    """Make ``engine`` selectable with ``--engine engine.name``."""
    ENGINES[engine.name] = engine


def _vectorbt(job: BacktestJob) -> EngineResult:
    from .adapters.vectorbt import backtest

    pf = backtest(job.weights, job.panel, job.spec)
    return EngineResult(pf.returns(), pf, int(pf.orders.count()))


register_engine(Engine("vectorbt", _vectorbt,
                       "vectorbt Portfolio.from_orders: target percent, one shared-cash group"))


def _backtrader(job: BacktestJob) -> EngineResult:
    from .strategies.backtrader import run

    res = run(job.panel, job.spec, weights=job.weights, stdstats=False)
    return EngineResult(res.returns, res, len(res.result.fills))


register_engine(Engine("backtrader", _backtrader,
                       "backtrader KronosStrategy: orders sized at the fill price, sells first "
                       "(daily returns)"))


def _qlib(job: BacktestJob) -> EngineResult:
    """Qlib's TopkDropout on the scores, over ``engine_options["provider"]`` or a provider
    written from the panel beside the outputs; the benchmark is the equal-weight universe;
    ``engine_options["region"]`` (default ``"us"``: no price limits) sets Qlib's limits."""
    from .adapters.qlib import run_topk_dropout
    from .adapters.qlib_data import write_provider

    extra = dict(job.options.engine_options) if job.options is not None else {}
    provider = extra.get("provider")
    if provider is None:
        out = Path(job.options.out) if job.options is not None else Path(".")
        provider = out / "qlib_provider"
        write_provider(job.panel, provider, verbose=False)
    calendar = job.panel.index.get_level_values("datetime").unique().sort_values()
    res = run_topk_dropout(job.scores, provider, job.spec, benchmark=equal_weight_returns(
        job.panel), region=extra.get("region", "us"), end=calendar[-2], tearsheet=False,
        verbose=job.options.verbose if job.options is not None else False)
    net = (res.report["return"] - res.report["cost"]).rename("returns")
    # Qlib stops a day early (it needs the next day to close a step): the book it holds
    # then rides the panel's last bar, as in the other engines; flat before the first trade.
    close = unstack_field(job.panel, "close").ffill()
    held = res.holdings.iloc[-1].reindex(close.columns, fill_value=0.0)
    value = float(res.report["account"].iloc[-1])
    net.loc[calendar[-1]] = float((held * (close.iloc[-1] - close.iloc[-2])).sum()) / value
    trades = int((res.holdings.diff().fillna(res.holdings) != 0).to_numpy().sum())
    return EngineResult(net.reindex(calendar, fill_value=0.0), res, trades,
                        {"differences": res.extra["differences"]})


register_engine(Engine("qlib", _qlib,
                       "Qlib TopkDropoutStrategy (method topk only; its own rules: lots, limits, "
                       "ties, delistings; see docs/qlib.md)"))


# --- inputs ----------------------------------------------------------------------------------

def scores_from_model(options: BacktestOptions, panel: pd.DataFrame):
    """Walk-forward scores (and the forecasts, for calibration) from the options' model."""
    from .predictor import KronosPredictor
    from .signals import forecast_panel

    predictor = KronosPredictor.from_pretrained(options.model, options.tokenizer,
                                                device=options.device,
                                                max_context=options.max_context)
    forecasts = forecast_panel(predictor, panel, cache_dir=options.cache_dir,
                               batch_size=options.batch_size, verbose=options.verbose,
                               **options.scoring)
    scores = forecasts.score([options.signal or DEFAULT_SCORER]).sort_index()
    return scores, forecasts


def load_scores(options: BacktestOptions, panel: pd.DataFrame):
    """(scores, forecasts or None) from the scores file or from the model."""
    from .signals.store import read_scores

    if (options.scores is None) == (options.model is None):
        raise ValueError("give either --scores FILE or --model and --tokenizer")
    if options.scores is not None:
        return read_scores(options.scores), None
    if options.tokenizer is None:
        raise ValueError("--model needs --tokenizer")
    return scores_from_model(options, panel)


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


def scores_model_label(model: str | None, tokenizer: str | None,
                       scores: pd.DataFrame) -> str | None:
    """The model behind the scores: the ``model``/``tokenizer`` names, else the weights
    fingerprint the scores file carries (None when it carries none)."""
    from .predictor import checkpoint_label
    from .signals.plots import fingerprint_label

    if model is not None:
        return checkpoint_label(model, tokenizer)
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


def result_metrics(returns: pd.Series, panel: pd.DataFrame, weights: pd.DataFrame, *,
                   execution: str, cash: float, periods_per_year: int
                   ) -> tuple[Metrics, pd.Series]:
    """An engine's per-bar ``returns`` as :func:`kronos_quant.metrics.backtest_metrics` (from
    the first rebalance of ``weights`` on, against the equal-weight buy-and-hold of ``panel``
    bought just before it), and that benchmark's returns."""
    calendar = pd.DatetimeIndex(returns.index.union(weights.index))
    start = first_trade_bar(weights, calendar, execution=execution)
    benchmark = buy_and_hold_returns(panel, start=start)
    equity = cash * (1.0 + returns).cumprod()
    metrics = backtest_metrics(equity, initial=cash, periods_per_year=periods_per_year,
                               weights=weights, execution=execution, benchmark=benchmark)
    return metrics, benchmark


@dataclass
class BacktestRun:
    """What :func:`run_backtest` did: the summary (also in ``summary.json``), the files it
    wrote and the engine's result."""

    summary: dict[str, Any]
    files: dict[str, Path]
    result: EngineResult
    metrics: Metrics | None = None


def run_backtest(options: BacktestOptions) -> BacktestRun:
    """Run one backtest end to end and write its files into ``options.out``."""
    from .adapters.quantstats import evaluate_signal, tearsheet
    from .signals import calibrate

    if options.engine not in ENGINES:
        raise ValueError(f"unknown engine {options.engine!r}; choose from {sorted(ENGINES)}")
    panel = load_panel(options.panel)
    scores, forecasts = load_scores(options, panel)
    signal = pick_signal(scores, options.signal)
    spec = options.spec.check_engine(options.engine if options.engine in SPEC_ENGINES
                                     else "vectorbt")
    weights = target_weights(scores, spec, column=signal)
    job = BacktestJob(panel, weights, spec, scores[signal], options)
    result = ENGINES[options.engine].run(job)
    out = Path(options.out)
    files = {name: out / name
             for name in ("tearsheet.html", "equity.png", "weights.parquet", "summary.json")}
    with atomic_path(files["weights.parquet"]) as tmp:
        weights.to_parquet(tmp)
    returns = result.returns.rename("strategy")
    calendar = pd.DatetimeIndex(returns.index)
    horizon = options.horizon or rebalance_spacing(weights, calendar)
    calibration = (calibrate(forecasts, panel) if forecasts is not None and options.calibration
                   else None)
    report = evaluate_signal(scores[[signal]], panel, horizon=horizon,
                             execution=spec.execution, calibration=calibration)
    ppy = options.periods_per_year or periods_per_year(calendar)
    metrics, benchmark = result_metrics(returns, panel, weights, execution=spec.execution,
                                        cash=spec.cash, periods_per_year=ppy)
    title = f"{signal} {spec.method} ({options.engine}, {spec.execution})"
    tearsheet(returns, benchmark=benchmark, title=title, output=files["tearsheet.html"],
              periods_per_year=ppy, signal_report=report, metrics=metrics)
    label = scores_model_label(options.model, options.tokenizer, scores)
    plot_equity(returns.loc[pd.Timestamp(metrics.start):], benchmark, files["equity.png"],
                title=title, model_label=label)
    summary = {"engine": options.engine, "model": label, "signal": signal,
               "spec": spec.to_dict(), "horizon": horizon, "orders": result.orders,
               "engine_details": result.details}
    summary |= metrics.to_dict() | report.summary()
    write_atomic(files["summary.json"], json.dumps(summary, indent=2) + "\n")
    return BacktestRun(summary, files, result, metrics)

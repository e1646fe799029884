"""Kronos inside Qlib: a workflow model and data handler, TopkDropout backtests, scorer tables.

* ``KronosModel`` (a ``qlib.model.base.Model``) and ``KronosDataHandler`` (raw OHLCV fields
  plus the label ``Ref($close, -2) / Ref($close, -1) - 1``) for ``qrun`` workflows; see
  examples/qlib_workflow.yaml. Both subclass Qlib classes, so they are built on first access
  (module ``__getattr__``) and this module imports without Qlib.
* :func:`run_topk_dropout`: Qlib's ``TopkDropoutStrategy`` on a score panel, with the
  benchmark and every region convention stated explicitly.
* :func:`compare_scorers`: several score columns side by side, one table and one plot.

Timing. Qlib's strategy decides at trading day ``d`` with the score of the previous calendar
day and deals at ``d``'s ``deal_price``: a score stamped ``t`` trades at bar ``t+1``. That is our
``next_open`` (deal price ``$open``) or ``next_close`` (``$close``) convention of
:mod:`kronos_quant.execution`; ``same_close`` has no Qlib equivalent and is refused.

Provider directories are written and read by :mod:`kronos_quant.adapters.qlib_data`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import periods_per_year
from ..io import atomic_path
from ..metrics import sweep_sharpe
from ..portfolio import target_weights
from ..signals.transforms import check_scores, score_column
from ..tradespec import TradeSpec, resolve_spec
from .qlib_data import (
    ALL_MARKET,
    DAY_FREQ,
    init_qlib,
    read_calendar,
    read_instruments,
    read_provider,
)
from .qlib_parity import qlib_differences
from .qlib_runtime import REGION_DEFAULTS, check_region, import_qlib, quiet_qlib

logger = logging.getLogger(__name__)

__all__ = ["HANDLER_FIELDS", "LABEL", "TopkResult", "run_topk_dropout",
           "compare_scorers", "plot_cumulative", "handler_panel", "read_provider",
           "KronosModel", "KronosDataHandler"]  # noqa: F822 (the last two come from __getattr__)

HANDLER_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "amount")
# Return from the close after the signal day's next bar to the one after: what a score at t
# earns when bought at t+1 (Qlib's convention for SignalRecord/SigAnaRecord labels).
LABEL = "Ref($close, -2) / Ref($close, -1) - 1"
_UNSET = object()


# ----------------------------------------------------------------------------- backtest


@dataclass
class TopkResult:
    """What :func:`run_topk_dropout` returns.

    ``report``: Qlib's daily report (return, bench, cost, turnover, …); ``risk``: Qlib's
    ``risk_analysis`` of the excess return without and with cost (rows mean, std,
    annualized_return, information_ratio, max_drawdown); ``holdings``: shares held after
    each day's trades (day × instrument, 0 = not held); ``settings``: every convention used.
    """

    report: pd.DataFrame
    risk: pd.DataFrame
    holdings: pd.DataFrame
    settings: dict
    figure: Path | None = None
    tearsheet: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def excess_return(self) -> float:
        """Annualised excess return with cost (Qlib's summed-returns convention)."""
        return float(self.risk.loc["annualized_return", "excess_return_with_cost"])


def _check_universe(scores: pd.Series, root: Path, calendar: pd.DatetimeIndex) -> None:
    known = set(read_instruments(root).index)
    names = scores.index.get_level_values("instrument").unique()
    unknown = sorted(n for n in names if n not in known)
    if unknown:
        case = [n for n in unknown if n.upper() in known]
        hint = f" (Qlib symbols are upper-case: {case[0]!r} is stored as {case[0].upper()!r})" \
            if case else ""
        raise ValueError(f"scores hold instruments that are not in {root}: {unknown[:5]}"
                         f"{' …' if len(unknown) > 5 else ''}{hint}")
    stamps = scores.index.get_level_values("datetime").unique()
    outside = stamps[~stamps.isin(calendar)]
    if len(outside):
        raise ValueError(f"score date {outside[0]} is not in the provider calendar "
                         f"({calendar[0]:%Y-%m-%d} … {calendar[-1]:%Y-%m-%d}, "
                         f"{len(calendar)} dates); {len(outside)} score dates are outside it")


def _trade_window(scores: pd.Series, calendar: pd.DatetimeIndex, start: object,
                  end: object) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last trading day: a score at t trades on the next calendar day."""
    stamps = scores.index.get_level_values("datetime")
    pos = calendar.get_indexer(pd.DatetimeIndex([stamps.min(), stamps.max()]))
    # Qlib needs the day after the last trading day to close its final step.
    lo, hi = (calendar[min(pos[0] + 1, len(calendar) - 1)],
              calendar[min(pos[1] + 1, len(calendar) - 2)])
    for name, value in (("start", start), ("end", end)):
        if value is not None and not calendar[0] <= pd.Timestamp(value) <= calendar[-1]:
            raise ValueError(f"{name} {value} is outside the provider calendar "
                             f"({calendar[0]:%Y-%m-%d} … {calendar[-1]:%Y-%m-%d})")
    lo = max(lo, pd.Timestamp(start)) if start is not None else lo
    # end may stop early or follow the book past the last score (to the provider's end).
    hi = min(pd.Timestamp(end), calendar[-2]) if end is not None else hi
    if lo > hi:
        raise ValueError(f"no trading days: the scores span {stamps.min()} … {stamps.max()} "
                         f"and trades run from {lo} to {hi} (a score at t trades at t+1)")
    return lo, hi


def _benchmark(benchmark: str | pd.Series | None, root: Path, calendar: pd.DatetimeIndex,
               lo: pd.Timestamp, hi: pd.Timestamp) -> str | pd.Series:
    if benchmark is None:
        raise ValueError("benchmark is required: an instrument of the provider (e.g. an index "
                         "you wrote with the data) or a pd.Series of daily returns; Qlib would "
                         "otherwise fall back to SH000300, which user data rarely holds")
    if isinstance(benchmark, str):
        spans = read_instruments(root)
        if benchmark not in spans.index:
            raise ValueError(f"benchmark {benchmark!r} is not an instrument of {root} "
                             f"(e.g. {list(spans.index[:5])}); pass a returns Series instead")
        start, stop = spans.loc[benchmark, "start"], spans.loc[benchmark, "end"]
        if start > lo or stop < hi:
            raise ValueError(f"benchmark {benchmark!r} has data {start:%Y-%m-%d} … "
                             f"{stop:%Y-%m-%d}, which does not cover the backtest {lo:%Y-%m-%d} "
                             f"… {hi:%Y-%m-%d}")
        return benchmark
    if not isinstance(benchmark, pd.Series) or not isinstance(benchmark.index, pd.DatetimeIndex):
        raise TypeError("benchmark must be an instrument name or a pd.Series of returns indexed "
                        f"by dates, got {type(benchmark).__name__}")
    days = calendar[(calendar >= lo) & (calendar <= hi)]
    missing = days[~days.isin(benchmark.dropna().index)]
    if len(missing):
        raise ValueError(f"benchmark returns have no value for {missing[0]:%Y-%m-%d} "
                         f"({len(missing)} backtest days missing)")
    return benchmark.reindex(days).astype(np.float64)


def _risk_table(report: pd.DataFrame) -> pd.DataFrame:
    from qlib.contrib.evaluate import risk_analysis

    excess = report["return"] - report["bench"]
    with quiet_qlib():
        tables = {"excess_return_without_cost": risk_analysis(excess, freq=DAY_FREQ)["risk"],
                  "excess_return_with_cost": risk_analysis(excess - report["cost"],
                                                           freq=DAY_FREQ)["risk"]}
    return pd.DataFrame(tables)


def _holdings(positions: Mapping) -> pd.DataFrame:
    rows = {pd.Timestamp(day): {code: pos.get_stock_amount(code) for code in pos.get_stock_list()}
            for day, pos in positions.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index().fillna(0.0)
    return frame.rename_axis(index="datetime", columns="instrument").sort_index(axis=1)


def _limit(region: str, limit_threshold) -> float | None:
    defaults = REGION_DEFAULTS[check_region(region)]
    return defaults["limit_threshold"] if limit_threshold is _UNSET else limit_threshold


def run_topk_dropout(scores: pd.Series | pd.DataFrame, provider_uri: str | Path,
                     spec: TradeSpec | None = None, *, benchmark: str | pd.Series | None,
                     column: str | None = None, limit_threshold=_UNSET, start: object = None,
                     end: object = None, region: str = "cn", out_dir: str | Path | None = None,
                     tearsheet: bool = True, verbose: bool = True, **terms) -> TopkResult:
    """Backtest Qlib's ``TopkDropoutStrategy`` on ``scores`` over a provider directory.

    Parameters
    ----------
    scores
        Series (or one ``column`` of a DataFrame) indexed by ("datetime", "instrument").
    provider_uri
        Qlib provider directory (see :func:`~kronos_quant.adapters.qlib_data.write_provider`).
    spec, **terms
        The trading terms (:class:`~kronos_quant.tradespec.TradeSpec`, default
        ``TradeSpec()``) with keyword terms on top, through :meth:`TradeSpec.to_qlib`:
        ``topk``, ``n_drop`` (None: full rebalance, ``n_drop=topk``), ``invested``
        (``risk_degree``), ``execution`` (deal at ``$open`` or ``$close`` of t+1), ``cash``,
        ``fees`` + ``slippage`` (``open_cost``/``close_cost``), ``min_cost``, ``lot_size``
        (``trade_unit``; None: fractional shares), ``rebalance`` (every k-th score date; the
        other days carry no signal, so Qlib does not trade). Methods other than long-only
        ``topk``, caps and ``same_close`` are refused. ``account``, ``costs``,
        ``risk_degree`` and ``trade_unit`` still work, deprecated.
    benchmark
        Required: an instrument of the provider or a Series of daily returns.
    limit_threshold
        Daily price limit (None disables); default from ``region`` (CN 9.5 %, US none).
    start, end
        Bounds of the trading days (default: the day after the first score to the day after
        the last one; a later ``end`` follows the book further, as our engines do to the
        panel's end, up to the provider's last day but one, which Qlib needs to close).
    out_dir
        Where to write ``cumulative_return.png`` (and the tear sheet); None writes nothing.
    tearsheet
        With ``out_dir``, also write the QuantStats tear sheet ``tearsheet.html`` of the
        daily return after cost against the benchmark (needs ``kronos-quant[reports]``).
    verbose
        Qlib's backtest progress bar.

    Returns
    -------
    TopkResult; ``settings["spec"]`` is the spec, ``extra["differences"]`` compares Qlib's
    held names with ours day by day and lists the Qlib rules that may part them.
    """
    spec = resolve_spec(spec, terms, engine="qlib")
    series = score_column(scores, column).dropna().rename("score")
    if series.empty:
        raise ValueError("scores are empty (or all NaN)")
    weights = target_weights(series, spec.replace(n_drop=spec.to_qlib()["strategy"]["n_drop"]))
    series = series[series.index.get_level_values("datetime").isin(weights.index)]
    root = init_qlib(provider_uri, region=region)
    calendar = read_calendar(root)
    _check_universe(series, root, calendar)
    lo, hi = _trade_window(series, calendar, start, end)
    bench = _benchmark(benchmark, root, calendar, lo, hi)
    qlib = spec.to_qlib()
    limit = _limit(region, limit_threshold)
    settings = {**qlib["strategy"], **qlib["exchange"], "account": qlib["account"],
                "execution": spec.execution, "limit_threshold": limit, "region": region,
                "start": lo, "end": hi,
                "benchmark": benchmark if isinstance(benchmark, str) else "series",
                "spec": spec.to_dict()}
    report, positions = _qlib_backtest(series, bench, settings, verbose)
    holdings = _holdings(positions)
    result = TopkResult(report, _risk_table(report), holdings, settings)
    result.extra["differences"] = qlib_differences(holdings, weights, spec, limit=limit,
                                                   spans=read_instruments(root))
    if out_dir is not None:
        out = Path(out_dir)
        result.figure = plot_cumulative({"strategy": report}, out / "cumulative_return.png")
        if tearsheet:
            from .quantstats import tearsheet as write_tearsheet

            result.tearsheet = write_tearsheet(
                report["return"] - report["cost"], benchmark=report["bench"],
                title="Kronos · Qlib TopkDropout (after cost)", output=out / "tearsheet.html",
                periods_per_year=periods_per_year(report.index))
    return result


def _qlib_backtest(scores: pd.Series, bench, s: dict, verbose: bool) -> tuple[pd.DataFrame, dict]:
    from qlib.backtest import backtest
    from qlib.backtest.executor import SimulatorExecutor
    from qlib.contrib.strategy.signal_strategy import TopkDropoutStrategy

    exchange = {"freq": DAY_FREQ, "codes": sorted(scores.index.get_level_values(1).unique()),
                "deal_price": s["deal_price"], "open_cost": s["open_cost"],
                "close_cost": s["close_cost"], "min_cost": s["min_cost"],
                "trade_unit": s["trade_unit"], "limit_threshold": s["limit_threshold"]}
    with quiet_qlib(progress=verbose):
        strategy = TopkDropoutStrategy(signal=scores, topk=s["topk"], n_drop=s["n_drop"],
                                       risk_degree=s["risk_degree"])
        executor = SimulatorExecutor(time_per_step=DAY_FREQ, generate_portfolio_metrics=True,
                                     verbose=False)
        metrics, _ = backtest(s["start"], s["end"], strategy, executor, benchmark=bench,
                              account=s["account"], exchange_kwargs=exchange)
    report, positions = metrics[f"1{DAY_FREQ}"]
    return report, positions


# ----------------------------------------------------------------------------- comparisons


def plot_cumulative(reports: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """One PNG of cumulative returns (summed, as Qlib's risk tables): each report's strategy
    return after cost, the benchmark, and each excess return after cost."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, rep in reports.items():
        net = rep["return"] - rep["cost"]
        ax.plot(net.index, net.cumsum(), label=f"{name} (after cost)")
        ax.plot(net.index, (net - rep["bench"]).cumsum(), linestyle="--", label=f"{name} excess")
    bench = next(iter(reports.values()))["bench"]
    ax.plot(bench.index, bench.cumsum(), color="black", linewidth=1.2, label="benchmark")
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_ylabel("cumulative return (sum of daily returns)")
    ax.legend(fontsize=8, loc="best")
    fig.autofmt_xdate()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def compare_scorers(scores: pd.DataFrame, provider_uri: str | Path, *,
                    out_dir: str | Path | None = None, trials: int | None = None,
                    **options) -> tuple[pd.DataFrame, Path | None]:
    """:func:`run_topk_dropout` per column of ``scores`` → one table (row per scorer; its
    ``deflated_sharpe`` counts ``trials``, default the scorers) and a cumulative-return plot."""
    check_scores(scores)
    if not isinstance(scores, pd.DataFrame) or scores.shape[1] < 1:
        raise TypeError("compare_scorers needs a DataFrame with one column per scorer")
    rows, reports = {}, {}
    for name in scores.columns:
        result = run_topk_dropout(scores, provider_uri, column=name, tearsheet=False, **options)
        risk, rep = result.risk, result.report
        rows[name] = {
            "excess_annualized": risk.loc["annualized_return", "excess_return_without_cost"],
            "excess_annualized_after_cost": result.excess_return,
            "information_ratio_after_cost": risk.loc["information_ratio",
                                                     "excess_return_with_cost"],
            "max_drawdown_after_cost": risk.loc["max_drawdown", "excess_return_with_cost"],
            "mean_turnover": float(rep["turnover"].mean()),
        }
        reports[str(name)] = rep
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("scorer")
    net = pd.DataFrame({n: r["return"] - r["bench"] - r["cost"] for n, r in reports.items()})
    sweep = sweep_sharpe(net, periods_per_year=periods_per_year(net.index), trials=trials)
    table = table.join(sweep.rename(columns={"sharpe": "excess_sharpe_after_cost"}))
    figure = None
    if out_dir is not None:
        figure = plot_cumulative(reports, Path(out_dir) / "scorers_cumulative_return.png")
        with atomic_path(Path(out_dir) / "scorers.csv") as tmp:
            table.to_csv(tmp)
    return table, figure


# ----------------------------------------------------------------------------- workflow model


def handler_panel(frame: pd.DataFrame) -> pd.DataFrame:
    """A handler's raw feature frame (columns ``("feature", name)`` or ``$name``) → our canonical
    panel; slots without a close (gaps, before listing) are dropped. A provider written from
    plain OHLCV has no ``amount`` (Qlib reads it as NaN): the column is dropped and the
    forecasts derive it from volume and prices, as for any panel without it."""
    from ..data import validate_panel

    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame["feature"] if "feature" in frame.columns.get_level_values(0) else frame
    frame = frame.rename(columns=lambda c: str(c).lstrip("$").lower())
    frame = frame[[c for c in HANDLER_FIELDS if c in frame.columns]]
    if list(frame.index.names) == ["instrument", "datetime"]:
        frame = frame.swaplevel()
    frame = frame[frame["close"].notna()].astype(np.float64).sort_index()
    if "amount" in frame.columns and frame["amount"].isna().any():
        lacking = frame.index[frame["amount"].isna().to_numpy()].get_level_values(-1).unique()
        if frame["amount"].notna().any():
            logger.warning("dropping 'amount': the provider has none for %d instrument(s) (%s); "
                           "it is derived from volume and prices instead", len(lacking),
                           ", ".join(map(str, lacking[:5])))
        frame = frame.drop(columns="amount")
    frame.index = frame.index.set_levels(frame.index.levels[1].astype(str), level="instrument")
    return validate_panel(frame)


def _segment(dataset, segment: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    segments = getattr(dataset, "segments", {})
    if segment not in segments:
        raise ValueError(f"dataset has no segment {segment!r}; it has {list(segments)}")
    start, end = segments[segment]
    return pd.Timestamp(start), pd.Timestamp(end)


def _raw_history(dataset, end: pd.Timestamp) -> pd.DataFrame:
    """Every raw bar of the handler up to ``end``: the windows need history before a segment."""
    from qlib.data.dataset.handler import DataHandlerLP

    with quiet_qlib():
        frame = dataset.handler.fetch(slice(None, end), col_set="feature",
                                      data_key=DataHandlerLP.DK_R)
    return handler_panel(frame)


def _build_handler() -> type:
    from qlib.data.dataset.handler import DataHandlerLP

    class KronosDataHandler(DataHandlerLP):
        """Raw ``$open … $amount`` features (no processors: Kronos normalises each window
        itself) and the label ``Ref($close, -2) / Ref($close, -1) - 1`` for
        ``SignalRecord``/``SigAnaRecord``."""

        def __init__(self, instruments: str | list = ALL_MARKET, start_time=None, end_time=None,
                     *, fields: tuple[str, ...] = HANDLER_FIELDS, label: str = LABEL,
                     freq: str = DAY_FREQ, **kwargs):
            config = {"feature": ([f"${f}" for f in fields], list(fields)),
                      "label": ([label], ["LABEL0"])}
            loader = {"class": "QlibDataLoader", "module_path": "qlib.data.dataset.loader",
                      "kwargs": {"config": config, "freq": freq}}
            super().__init__(instruments=instruments, start_time=start_time, end_time=end_time,
                             data_loader=loader, **kwargs)

    return KronosDataHandler


def _build_model() -> type:
    # Long because it is a class: KronosModel subclasses Qlib's Model, which exists only once
    # Qlib is imported, so the class is built on first use (its methods are short).
    from qlib.model.base import Model

    class KronosModel(Model):
        """Kronos as a Qlib model: ``predict`` returns walk-forward scores of a segment.

        ``model``/``tokenizer`` are Hub ids or directories. ``fit`` is zero-shot (loads the
        pair) unless ``finetune`` holds :class:`~kronos_quant.finetune.FinetuneConfig`
        settings: then the predictor is finetuned on the ``train`` segment, validated on the
        ``valid`` segment (when the dataset has one), and its best checkpoint used.
        ``predict(dataset, segment)`` scores every date of the segment from raw OHLCV windows
        (``lookback`` bars up to the date, history before the segment included) with
        ``scorer``; ``cache_dir`` enables the forecast cache; the Series is indexed
        (datetime, instrument).
        """

        def __init__(self, model: str, tokenizer: str, *, lookback: int = 64, pred_len: int = 2,
                     sample_count: int = 8, scorer: str = "expected_return", seed: int = 0,
                     cache_dir: str | None = None, device: str | None = None,
                     max_context: int | None = None, T: float = 1.0, top_k: int = 0,
                     top_p: float = 0.9,
                     batch_size: int = 256, finetune: dict | None = None, verbose: bool = False):
            self.model, self.tokenizer, self.device = str(model), str(tokenizer), device
            self.max_context, self.finetune, self.verbose = max_context, finetune, verbose
            self.options = dict(lookback=lookback, pred_len=pred_len, sample_count=sample_count,
                                seed=seed, cache_dir=cache_dir, T=T, top_k=top_k, top_p=top_p,
                                batch_size=batch_size)
            self.scorer = scorer
            self._predictor = None

        @property
        def predictor(self):
            if self._predictor is None:
                from ..predictor import KronosPredictor

                self._predictor = KronosPredictor.from_pretrained(
                    self.model, self.tokenizer, device=self.device, max_context=self.max_context)
            return self._predictor

        def fit(self, dataset, reweighter=None) -> KronosModel:
            if self.finetune:
                self._finetune(dataset)
            _ = self.predictor  # zero-shot: loading the pair is the whole fit
            return self

        def _finetune(self, dataset) -> None:
            from ..finetune import FinetuneConfig, run_finetune

            # Qlib's segments give the split: train on "train", validate on "valid".
            end, split = _segment(dataset, "train")[1], {}
            if "valid" in getattr(dataset, "segments", {}):
                valid_start, end = _segment(dataset, "valid")
                split = {"val_start": str(valid_start.date())}
            settings = {"out_dir": "runs/qlib_kronos", **split, **self.finetune,
                        "task": "predictor", "init": self.model, "tokenizer": self.tokenizer,
                        "lookback": self.options["lookback"],
                        "pred_len": self.options["pred_len"]}
            if self.max_context is not None:
                settings["max_context"] = self.max_context
            result = run_finetune(FinetuneConfig.from_dict(settings),
                                  panel=_raw_history(dataset, end))
            best = result.run_dir / "best"
            self.model = str(best if best.exists() else result.run_dir / "last")
            self._predictor = None
            logger.info("KronosModel: finetuned predictor in %s", self.model)

        def predict(self, dataset, segment: str = "test") -> pd.Series:
            from ..signals import score_panel

            start, end = _segment(dataset, segment)
            scores = score_panel(self.predictor, _raw_history(dataset, end),
                                 scorers=[self.scorer], start=start, end=end,
                                 verbose=self.verbose, **self.options)
            return scores[self.scorer].rename("score")

        def __getstate__(self) -> dict:
            # Qlib pickles the fitted model into its recorder: keep the settings, not the weights.
            return {**self.__dict__, "_predictor": None}

    return KronosModel


_BUILDERS = {"KronosModel": _build_model, "KronosDataHandler": _build_handler}
_BUILT: dict[str, type] = {}


def __getattr__(name: str) -> type:
    """Build the Qlib subclasses on first access, so that importing this module needs no Qlib."""
    if name not in _BUILDERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _BUILT:
        import_qlib()
        cls = _BUILDERS[name]()
        cls.__module__, cls.__qualname__ = __name__, name  # picklable by name
        _BUILT[name] = cls
    return _BUILT[name]

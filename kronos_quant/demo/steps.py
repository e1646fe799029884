"""The steps of ``kronos-quant demo``: each one a real run of one part of the plugin.

Every step takes the shared :class:`DemoContext` (output folder, predictor, bundled data,
settings, what earlier steps produced) and returns a :class:`StepResult` with its key
numbers, the files it wrote and HTML tables for the index page. Engines are imported inside
the steps; :data:`STEPS` says which engines each one needs (their extras are in
:data:`kronos_quant.adapters.ENGINE_EXTRAS`), so the runner can skip a step whose engine is
missing and print the pip command that adds it.

Bundled data (offline, shipped in the package): the demo model's series
(``assets/demo/series.csv``) and a small universe of real daily bars
(``assets/universe/us_stocks_daily.csv``: AAPL, GOOG, IBM, MSFT, 2010-09-01 … 2013-03-01,
split- and dividend-adjusted, from the public-domain data the demo model was trained on;
:func:`write_universe` rebuilds it from ``bokeh-sampledata``). Scoring starts on 2011-04-01,
inside the demo model's held-out period (from 2011-03-29).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..adapters import ENGINE_EXTRAS
from ..assets import UNIVERSE, UNIVERSE_START, UNIVERSE_TICKERS, load_universe
from ..backtest import ENGINES, BacktestJob, equal_weight_returns, plot_equity, result_metrics
from ..data import dates, periods_per_year, validate_panel
from ..execution import DEFAULT_EXECUTION, describe_execution
from ..forecast import write_forecast
from ..io import atomic_path
from ..portfolio import target_weights
from ..tradespec import TradeSpec


def write_universe(path: str | Path = UNIVERSE) -> Path:
    """Rebuild the bundled universe CSV from ``bokeh-sampledata`` (the ``[demo-data]`` extra)."""
    from .build_model import real_stock_panel

    panel = real_stock_panel()
    keep = (panel.index.get_level_values("instrument").isin(UNIVERSE_TICKERS)
            & (panel.index.get_level_values("datetime") >= UNIVERSE_START))
    frame = panel[keep].reset_index()
    frame["datetime"] = frame["datetime"].dt.strftime("%Y-%m-%d")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return path


@dataclass
class DemoSettings:
    """What the demo runs; the defaults keep it well under a minute on 2 CPU cores."""

    pred_len: int = 20  # the fan chart's horizon
    samples: int = 32  # paths of the fan chart
    score_lookback: int = 120
    score_pred_len: int = 5
    score_samples: int = 16
    freq: str = "W"
    start: str = "2011-04-01"
    scorer: str = "expected_return"
    topk: int = 2
    n_drop: int = 1
    fees: float = 0.0005
    cash: float = 1_000_000.0
    execution: str = DEFAULT_EXECUTION
    live_symbols: tuple[str, ...] = ("AAPL", "MSFT")
    live_candles: int = 30
    live_samples: int = 16
    seed: int = 0


@dataclass
class StepResult:
    """What one step did: key numbers, files, HTML tables and notes for the index page."""

    numbers: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str = "ok"  # ok, skipped or failed
    seconds: float = 0.0
    verdict: str = ""  # a sentence for the top of the index page (the evaluate step's tests)


@dataclass
class DemoContext:
    """Shared by all steps: where to write, the model, the data and earlier results."""

    out: Path
    predictor: Any
    model_label: str
    series: pd.DataFrame
    series_name: str
    settings: DemoSettings = field(default_factory=DemoSettings)
    verbose: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    _panel: pd.DataFrame | None = None

    @property
    def panel(self) -> pd.DataFrame:
        if self._panel is None:
            self._panel = validate_panel(load_universe())
        return self._panel

    def folder(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def write_csv(frame: pd.DataFrame | pd.Series, path: Path) -> Path:
    """A result table written atomically (the one way the demo writes its CSVs)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp)
    return path


def frame_html(frame: pd.DataFrame, digits: int = 4) -> str:
    return frame.to_html(float_format=lambda v: f"{v:.{digits}f}", border=0, na_rep="–")


# --- steps -----------------------------------------------------------------------------------

def step_forecast(ctx: DemoContext) -> StepResult:
    """Fan chart, paths, quantiles and summary of the bundled series."""
    from ..signals import score_forecast

    s = ctx.settings
    fc = ctx.predictor.forecast(ctx.series, pred_len=s.pred_len, sample_count=s.samples,
                                seed=s.seed, verbose=ctx.verbose, name=ctx.series_name)
    title = f"{ctx.series_name}: {s.samples} paths × {s.pred_len} bars"
    files, summary = write_forecast(fc, ctx.folder("forecast"), model_label=ctx.model_label,
                                    title=title, scores=score_forecast(fc))
    numbers = {"last close": summary["last_close"], "median at horizon": summary["median"],
               "10–90% at horizon": f"{summary['q10']:.2f} … {summary['q90']:.2f}",
               "P(up)": summary["prob_up"], "expected return": summary["expected_return"]}
    return StepResult(numbers, files)


def step_scores(ctx: DemoContext) -> StepResult:
    """Walk-forward forecasts and scores of the universe at every rebalance date."""
    from ..signals import forecast_panel, write_scores

    s = ctx.settings
    forecasts = forecast_panel(ctx.predictor, ctx.panel, lookback=s.score_lookback,
                               pred_len=s.score_pred_len, sample_count=s.score_samples,
                               freq=s.freq, start=s.start, seed=s.seed, verbose=ctx.verbose)
    scores = forecasts.score().sort_index()
    ctx.state.update(forecasts=forecasts, scores=scores)
    folder = ctx.folder("scores")
    files = {"scores": folder / "scores.csv"}
    write_scores(scores, files["scores"])  # keeps the score metadata (attrs) in a sidecar
    dates = scores.index.get_level_values("datetime")
    numbers = {"instruments": len(scores.index.get_level_values("instrument").unique()),
               "rebalance dates": len(dates.unique()), "windows": len(forecasts),
               "first / last date": f"{dates.min().date()} / {dates.max().date()}",
               "scorers": scores.shape[1]}
    latest = scores.xs(dates.max(), level="datetime")[[s.scorer, "prob_up", "volatility"]]
    return StepResult(numbers, files, {"latest scores": frame_html(latest)})


def step_evaluate(ctx: DemoContext) -> StepResult:
    """IC/RankIC vs baselines under the execution convention with Newey–West p-values, the
    forecasts' accuracy against the random walk (Diebold–Mariano), and band calibration with
    split-conformal recalibration."""
    from ..signals import calibrate, evaluate, plot_calibration, plot_ic

    s = ctx.settings
    scores, forecasts = ctx.state["scores"], ctx.state["forecasts"]
    # Four instruments: halves (top two vs bottom two) for the long-short column.
    evaluation = evaluate(scores, ctx.panel, horizon=s.score_pred_len, quantiles=2,
                          execution=s.execution)
    calibration = calibrate(forecasts, ctx.panel)
    ctx.state.update(evaluation=evaluation, calibration=calibration)
    folder = ctx.folder("evaluation")
    files = {"ic_chart": folder / "ic.png", "calibration_chart": folder / "calibration.png",
             "evaluation": folder / "evaluation.csv", "conformal": folder / "conformal.csv",
             "forecast_skill": folder / "forecast_skill.csv"}
    summary, skill = evaluation.summary, calibration.skill.steps
    write_csv(summary, files["evaluation"])
    write_csv(calibration.conformal, files["conformal"])
    write_csv(skill, files["forecast_skill"])
    plot_ic(evaluation, files["ic_chart"], signals=[s.scorer, "prob_up", "momentum_20",
                                                    "reversal_5"], model_label=ctx.model_label)
    plot_calibration(calibration, files["calibration_chart"], model_label=ctx.model_label)
    conformal = calibration.conformal.xs(0.8, level="level")
    best_base = summary[summary["kind"] == "baseline"]["rank_ic_mean"].max()
    row, last = summary.loc[s.scorer], skill.iloc[-1]
    numbers = {f"RankIC {s.scorer}": row["rank_ic_mean"],
               f"RankIC {s.scorer} p-value (Newey–West)": row["rank_ic_p"],
               f"RankIC {s.scorer} dates": int(row["rank_ic_n"]),
               f"IC {s.scorer}": row["ic_mean"],
               "best baseline RankIC": best_base,
               f"MAE vs random walk, step {skill.index[-1]}": f"{last['mae']:.4f} vs "
                                                             f"{last['mae_rw']:.4f}",
               "Diebold–Mariano vs random walk (t, p)": f"t {last['mae_dm_t']:+.2f}, "
                                                       f"p {last['mae_dm_p']:.3g}",
               "direction accuracy vs best constant guess (p)": (
                   f"{last['direction']:.3f} vs {last['direction_baseline']:.3f} "
                   f"(p {last['direction_p']:.3g})"),
               "80% band coverage (raw, later half)": conformal["test_raw"].mean(),
               "80% band coverage (conformal, later half)": conformal["test_conformal"].mean()}
    columns = ["kind", "n_dates", "ic_mean", "rank_ic_mean", "rank_ic_se", "rank_ic_p",
               "hit_rate", "long_short_mean", "long_short_p", "turnover"]
    skill_cols = ["windows", "dates", "mae", "mae_rw", "mae_dm_t", "mae_dm_p", "crps",
                  "crps_vol", "crps_dm_vol_t", "crps_dm_vol_p", "direction",
                  "direction_baseline", "direction_p"]
    tables = {"signals vs baselines (p: Newey–West, two-sided)": frame_html(summary[columns]),
              "forecast accuracy vs the random walk and historical-volatility bands "
              "(Diebold–Mariano, HLN; t < 0: model better)": frame_html(skill[skill_cols]),
              "80% band coverage by step (before / after conformal)": frame_html(
                  conformal[["margin", "test_raw", "test_conformal", "n_cal", "n_test"]])}
    notes = ([describe_execution(s.execution)] + list(evaluation.notes)
             + [v for v in evaluation.verdicts() if v.startswith(f"{s.scorer}:")])
    return StepResult(numbers, files, tables, notes,
                      verdict=random_walk_verdict(row, last, s.scorer, s.score_pred_len))


def random_walk_verdict(row: pd.Series, last: pd.Series, scorer: str, horizon: int, *,
                        alpha: float = 0.05) -> str:
    """Whether the model beats the random walk, as its tests say (DM on MAE, RankIC)."""
    t, p = float(last["mae_dm_t"]), float(last["mae_dm_p"])
    if p < alpha and t < 0:
        verdict = f"beats the random walk at the {alpha:g} level"
    elif p < alpha:
        verdict = "does not beat a random walk: it is significantly less accurate"
    else:
        verdict = "does not beat a random walk: the difference is not significant"
    ric_p = float(row["rank_ic_p"])
    signal = "distinguishable" if ric_p < alpha else "not distinguishable"
    return (f"In this run, its mean forecast of the {horizon}-bar return has MAE "
            f"{last['mae']:.4f} against the random walk's {last['mae_rw']:.4f} "
            f"(Diebold–Mariano with the Harvey–Leybourne–Newbold correction: t = {t:+.2f}, "
            f"p = {p:.3g}, over {int(last['dates'])} dates), so it {verdict}. Its {scorer} "
            f"RankIC is {row['rank_ic_mean']:+.4f} (Newey–West p = {ric_p:.3g}, "
            f"{int(row['rank_ic_n'])} dates): {signal} from zero at {alpha:g}.")


def demo_spec(ctx: DemoContext) -> TradeSpec:
    """The trading terms every engine of the demo reads."""
    s = ctx.settings
    return TradeSpec(topk=s.topk, n_drop=s.n_drop, execution=s.execution, fees=s.fees,
                     cash=s.cash)


def demo_weights(ctx: DemoContext) -> pd.DataFrame:
    """The one weight frame every engine trades: top-k with Qlib's dropout rule."""
    if "weights" not in ctx.state:
        ctx.state["weights"] = target_weights(ctx.state["scores"], demo_spec(ctx),
                                              column=ctx.settings.scorer)
    return ctx.state["weights"]


def _engine_run(ctx: DemoContext, engine: str):
    """Run ``engine`` on the demo's book; its result metrics (from the first rebalance on,
    vs the equal-weight buy-and-hold) go to ``ctx.state[engine + "_metrics"]``."""
    s = ctx.settings
    job = BacktestJob(ctx.panel, demo_weights(ctx), demo_spec(ctx))
    result = ENGINES[engine].run(job)
    ppy = periods_per_year(dates(ctx.panel))
    ctx.state[f"{engine}_metrics"] = result_metrics(
        result.returns, ctx.panel, job.weights, execution=s.execution, cash=s.cash,
        periods_per_year=ppy)
    return result


def _metric_numbers(ctx: DemoContext, engine: str) -> dict[str, Any]:
    """An engine's totals next to buy-and-hold, with their intervals."""
    metrics, _ = ctx.state[f"{engine}_metrics"]
    text = metrics.formatted()
    return {"total return": metrics.total_return, "buy-and-hold return": metrics.benchmark_return,
            "excess over buy-and-hold [95% CI]": text["excess over buy-and-hold"],
            "Sharpe [95% CI] (s.e.)": text["Sharpe"], "max drawdown": metrics.max_drawdown}


def _equity_chart(ctx: DemoContext, returns: pd.Series, path: Path, engine: str) -> Path:
    """Growth of 1 from the first rebalance (before it the book is empty), vs buy-and-hold."""
    s = ctx.settings
    metrics, bench = ctx.state[f"{engine}_metrics"]
    title = (f"{engine}: top-{s.topk} (dropout {s.n_drop}) on {s.scorer}, {s.execution}, "
             f"fees {s.fees:g}")
    return plot_equity(returns.loc[pd.Timestamp(metrics.start):], bench, path, title=title,
                       model_label=ctx.model_label.split(" (")[0])


def step_vectorbt(ctx: DemoContext) -> StepResult:
    """The weights traded in vectorbt (``Portfolio.from_orders``, target percent)."""
    result = _engine_run(ctx, "vectorbt")
    pf = result.native
    ctx.state["vectorbt"] = result
    folder = ctx.folder("vectorbt")
    files = {"equity_chart": _equity_chart(ctx, result.returns, folder / "equity.png", "vectorbt"),
             "weights": folder / "weights.csv", "stats": folder / "stats.csv"}
    write_csv(demo_weights(ctx), files["weights"])
    stats = pf.stats()
    write_csv(stats.to_frame("value"), files["stats"])
    numbers = {"final value": float(pf.final_value())} | _metric_numbers(ctx, "vectorbt") | {
        "vectorbt stats() Sharpe": float(stats["Sharpe Ratio"]), "orders": result.orders}
    return StepResult(numbers, files, notes=[f"trading terms (TradeSpec, every engine): "
                                             f"{demo_spec(ctx).to_json()}"])


def fills_holdings(fills: list[dict], bars: pd.DatetimeIndex, names: pd.Index) -> pd.DataFrame:
    """Shares held after each bar from backtrader fills (datetime, instrument, size)."""
    trades = pd.DataFrame(fills).pivot_table(index="datetime", columns="instrument",
                                             values="size", aggfunc="sum")
    return trades.reindex(index=bars, columns=names).fillna(0.0).cumsum()


def step_backtrader(ctx: DemoContext) -> StepResult:
    """The same weights in backtrader, compared bar by bar with vectorbt when it ran."""
    result = _engine_run(ctx, "backtrader")
    run = result.native
    ctx.state["backtrader"] = result
    folder = ctx.folder("backtrader")
    files = {"equity_chart": _equity_chart(ctx, result.returns, folder / "equity.png",
                                           "backtrader")}
    final = float(run.cerebro.broker.getvalue())
    numbers = {"final value": final} | _metric_numbers(ctx, "backtrader") | {
        "orders": result.orders}
    notes = []
    vb = ctx.state.get("vectorbt")
    if vb is None:
        notes.append("vectorbt did not run: no cross-engine comparison")
        return StepResult(numbers, files, notes=notes)
    assets = vb.native.assets()
    ours = fills_holdings(run.result.fills, assets.index, assets.columns)
    same_names = ((ours.abs() > 1e-9) == (assets.abs() > 1e-9)).all(axis=1)
    share_gap = ((ours - assets).abs() / assets.abs().clip(lower=1.0)).to_numpy().max()
    gap = final / float(vb.native.final_value()) - 1.0
    numbers |= {"bars with the same holdings as vectorbt":
                    f"{int(same_names.sum())} / {len(same_names)}",
                "largest holding difference (relative)": float(share_gap),
                "final equity vs vectorbt": f"{gap * 1e4:+.4f} bp"}
    ctx.state["engine_agreement"] = {"same_bars": int(same_names.sum()), "bars": len(same_names),
                                     "final_gap_bp": gap * 1e4}
    table = pd.DataFrame({"vectorbt": [float(vb.native.final_value()), vb.orders],
                          "backtrader": [final, result.orders]},
                         index=["final value", "orders"])
    return StepResult(numbers, files, {"vectorbt vs backtrader": frame_html(table, 2)}, notes)


def step_qlib(ctx: DemoContext) -> StepResult:
    """A generated Qlib provider directory and Qlib's TopkDropoutStrategy on the scores."""
    from ..adapters.qlib import run_topk_dropout
    from ..adapters.qlib_data import write_provider
    from ..portfolio import align

    s = ctx.settings
    provider = ctx.out / "qlib" / "provider"
    write_provider(ctx.panel, provider, verbose=ctx.verbose)
    reports = importlib.util.find_spec("quantstats") is not None
    result = run_topk_dropout(ctx.state["scores"], provider, demo_spec(ctx), column=s.scorer,
                              benchmark=equal_weight_returns(ctx.panel), region="us",
                              out_dir=ctx.folder("qlib"), tearsheet=reports,
                              verbose=ctx.verbose)
    ctx.state["qlib"] = result
    files = {"provider": provider, "cumulative_chart": result.figure}
    if result.tearsheet is not None:
        files["tearsheet"] = result.tearsheet
    held = result.holdings.fillna(0.0) > 0
    calendar = pd.DatetimeIndex(ctx.panel.index.get_level_values("datetime").unique())
    ours = align(demo_weights(ctx), calendar, execution=s.execution) > 0
    ours = ours.reindex(index=held.index, columns=held.columns, fill_value=False)
    same = (held == ours).all(axis=1)
    report = result.report
    numbers = {"trading days": len(report),
               "return after cost": float((report["return"] - report["cost"]).sum()),
               "benchmark return": float(report["bench"].sum()),
               "annualised excess after cost": result.excess_return,
               "days holding the same names as our portfolio layer":
                   f"{int(same.sum())} / {len(same)}"}
    notes = ["Qlib sums daily returns (its risk_analysis convention); costs: open 5 bp, close "
             "15 bp, min 5; region us (trade unit 1, no limits)"]
    return StepResult(numbers, files, {"Qlib risk analysis": frame_html(result.risk)}, notes)


def step_tearsheet(ctx: DemoContext) -> StepResult:
    """QuantStats tear sheet of the backtest, with the signal-quality section."""
    from ..adapters.quantstats import SignalReport, metrics, tearsheet

    engine = "vectorbt" if "vectorbt" in ctx.state else "backtrader"
    result = ctx.state[engine]
    s = ctx.settings
    report = SignalReport(evaluation=ctx.state.get("evaluation"),
                          calibration=ctx.state.get("calibration"), execution=s.execution,
                          metadata=dict(ctx.state["scores"].attrs))
    headline, bench = ctx.state[f"{engine}_metrics"]  # from the first rebalance on
    returns = result.returns.loc[pd.Timestamp(headline.start):]
    ppy = int(headline.periods_per_year)
    path = tearsheet(returns, benchmark=bench, output=ctx.folder("tearsheet") / "tearsheet.html",
                     title=f"Kronos demo · top-{s.topk} {s.scorer} ({engine}, {s.execution})",
                     periods_per_year=ppy, signal_report=report, metrics=headline)
    table = metrics(returns, benchmark=bench, periods_per_year=ppy, mode="basic")
    rows = [r for r in ("Cumulative Return", "Sharpe", "Max Drawdown", "Volatility (ann.)")
            if r in table.index]
    return StepResult({"engine": engine}, {"tearsheet": path},
                      {"QuantStats metrics": table.loc[rows].to_html(border=0)})


# --- live paper trading over recorded candles ------------------------------------------------

def step_live(ctx: DemoContext) -> StepResult:
    """The live loop (forecast → score → size → paper broker → SQLite ledger) replayed over
    the last recorded daily candles of the universe."""
    import shutil

    from ..strategies.live import LiveConfig
    from ..strategies.live_report import write_tearsheet
    from ..strategies.replay import ReplayFeed, replay_live

    s = ctx.settings
    frames = {sym: ctx.panel.xs(sym, level="instrument") for sym in s.live_symbols}
    config = LiveConfig(exchange=ReplayFeed.exchange_id, symbols=list(s.live_symbols),
                        timeframe="1d", lookback=s.score_lookback, sample_count=s.live_samples,
                        seed=s.seed, late_timeout_s=0.0, initial_cash=100_000.0)
    state = ctx.out / "live" / "state"
    shutil.rmtree(state, ignore_errors=True)  # a rerun of the demo replays afresh
    times = frames[s.live_symbols[0]].index[-s.live_candles:]
    report = replay_live(frames, config, predictor=ctx.predictor, state=state, times=times)
    folder = ctx.folder("live")
    files = {"ledger": state / "ledger.sqlite", "equity": folder / "equity.csv"}
    write_csv(report.equity, files["equity"])
    files["tearsheet"] = write_tearsheet(
        report, folder / "tearsheet.html", periods=periods_per_year(report.equity.index),
        title="Kronos demo · live loop, paper broker, replayed candles")
    numbers = {"decisions": report.decisions, "candle times": len(report.equity),
               "orders": report.orders, "final equity": float(report.equity.iloc[-1]),
               "PnL": report.pnl, "hit rate": report.hit_rate}
    notes = ["replayed candles: the universe's last daily bars, served only once closed; "
             "paper broker fills at the next open with 10 bp fees and 5 bp slippage"]
    return StepResult(numbers, files, notes=notes)


@dataclass(frozen=True)
class Step:
    """One demo step: what it runs, its title, the earlier steps and engines it needs."""

    name: str
    title: str
    run: Callable[[DemoContext], StepResult]
    needs: tuple[str, ...] = ()  # earlier steps
    engines: tuple[str, ...] = ()  # importable engine modules (keys of ENGINE_EXTRAS)


STEPS: dict[str, Step] = {step.name: step for step in (
    Step("forecast", "Forecast fan chart of one series", step_forecast),
    Step("scores", "Walk-forward scores on a small universe", step_scores),
    Step("evaluate", "Evaluation vs baselines and band calibration", step_evaluate, ("scores",)),
    Step("vectorbt", "vectorbt backtest", step_vectorbt, ("scores",), ("vectorbt",)),
    Step("backtrader", "backtrader run of the same weights", step_backtrader, ("scores",),
         ("backtrader",)),
    Step("qlib", "Qlib top-k dropout backtest", step_qlib, ("scores",), ("qlib",)),
    Step("live", "Live paper trading over recorded candles", step_live, (), ("quantstats",)),
    Step("tearsheet", "QuantStats tear sheet", step_tearsheet, ("scores", "evaluate", "vectorbt"),
         ("quantstats", "vectorbt")),
)}


def missing_extras(step: Step) -> list[str]:
    """Extras of ``step`` whose engine is not importable."""
    return sorted({ENGINE_EXTRAS[module] for module in step.engines
                   if importlib.util.find_spec(module) is None})

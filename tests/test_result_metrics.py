"""One set of result metrics everywhere: summary.json, the tear sheet, vectorbt's stats(),
backtrader's returns and the live report agree on the same backtest."""
from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pandas as pd
import pytest

qs = pytest.importorskip("quantstats")
vbt = pytest.importorskip("vectorbt")
pytest.importorskip("backtrader")

from kronos_quant.adapters.quantstats import tearsheet  # noqa: E402
from kronos_quant.adapters.vectorbt import backtest  # noqa: E402
from kronos_quant.strategies.backtrader import run  # noqa: E402
from kronos_quant.strategies.live_report import LiveReport, write_tearsheet  # noqa: E402

from kronos_quant.cli import backtest as backtest_cli  # noqa: E402
from kronos_quant.data import planted_signal, synthetic_panel  # noqa: E402
from kronos_quant.metrics import TOO_SHORT  # noqa: E402
from kronos_quant.portfolio import target_weights  # noqa: E402
from kronos_quant.signals.store import write_scores  # noqa: E402


def _row(page: str, label: str) -> list[str]:
    """The cells of QuantStats' metrics row ``label`` (its table, not our headline)."""
    rows = re.findall(rf"<tr><td>{re.escape(label)}</td>(.*?)</tr>", page)
    return re.findall(r"<td>([^<]*)</td>", rows[-1])


def _late_scores(panel: pd.DataFrame, skip: int) -> pd.Series:
    scores = planted_signal(panel)
    dates = scores.index.get_level_values("datetime")
    return scores[dates >= dates.unique()[skip]]


def test_one_sharpe_in_summary_tearsheet_and_vectorbt_stats(tmp_path):
    # Scores start 60 bars in: flat bars before the first rebalance must not count.
    panel = synthetic_panel(6, 200, predictable=0.3, seed=5)
    scores = _late_scores(panel, 60)
    panel.to_parquet(tmp_path / "panel.parquet")
    write_scores(scores.to_frame(), tmp_path / "scores.parquet")
    parser = argparse.ArgumentParser(prog="kronos-quant")
    parser.add_argument("-q", "--quiet", action="store_true")
    backtest_cli.register(parser.add_subparsers(dest="command", required=True))
    sharpes = {}
    for engine in ("vectorbt", "backtrader"):
        args = parser.parse_args(["-q", "backtest", "--engine", engine, "--panel",
                                  str(tmp_path / "panel.parquet"), "--scores",
                                  str(tmp_path / "scores.parquet"), "--topk", "2", "--fees",
                                  "0.001", "--out", str(tmp_path / engine)])
        assert args.func(args) == 0
        summary = json.loads((tmp_path / engine / "summary.json").read_text())
        page = (tmp_path / engine / "tearsheet.html").read_text(encoding="utf-8")
        assert _row(page, "Sharpe")[-1] == f"{summary['sharpe']:.2f}"  # strategy column
        sharpes[engine] = summary["sharpe"]
        low, high = summary["sharpe_ci"]
        assert low < summary["sharpe"] < high and summary["sharpe_se"] > 0
        assert summary["start"] == str(scores.index.get_level_values(0).unique()[1])
    weights = target_weights(scores, topk=2)
    pf = backtest(weights, panel, fees=0.001)
    assert pf.stats()["Sharpe Ratio"] == pytest.approx(sharpes["vectorbt"], rel=1e-9)
    assert pf.sharpe_ratio() == pytest.approx(sharpes["vectorbt"], rel=1e-9)
    assert sharpes["backtrader"] == pytest.approx(sharpes["vectorbt"], rel=1e-6)


def test_backtrader_returns_are_per_bar_on_intraday_panels():
    panel = synthetic_panel(4, 120, freq="5min", seed=1, predictable=0.3)
    weights = target_weights(planted_signal(panel), topk=2).iloc[::6]
    res = run(panel, weights=weights, cash=1e6, stdstats=False)
    bars = pd.DatetimeIndex(panel.index.levels[0])
    assert bars.normalize().nunique() < len(bars) and res.returns.index.equals(bars)
    assert np.prod(1 + res.returns) == pytest.approx(res.cerebro.broker.getvalue() / 1e6)
    pf = backtest(weights, panel, init_cash=1e6)
    np.testing.assert_allclose(res.returns.reindex(pf.returns().index), pf.returns(),
                               atol=1e-9)


def test_tearsheet_end_of_year_table_shows_only_strategy_years(tmp_path):
    rng = np.random.default_rng(0)
    index = pd.bdate_range("2020-01-01", "2023-03-31")
    bench = pd.Series(rng.normal(4e-4, 0.01, len(index)), index=index, name="EW")
    strategy = pd.Series(rng.normal(4e-4, 0.01, len(index)), index=index)["2021-06-01":]
    page = tearsheet(strategy, benchmark=bench, output=tmp_path / "t.html",
                     periods_per_year=252).read_text(encoding="utf-8")
    eoy = page[page.find("EOY Returns vs Benchmark"):]
    years = re.findall(r"<tr><td>(\d{4})</td>", eoy[:eoy.find("</table>")])
    assert years == ["2021", "2022", "2023"]


def test_tearsheet_year_bars_carry_their_own_year():
    from kronos_quant.adapters.quantstats import _yearly_labels_fixed

    rng = np.random.default_rng(1)
    index = pd.bdate_range("2021-03-01", periods=600)
    strategy = pd.Series(rng.normal(0, 0.01, 600), index=index, name="S")
    bench = pd.Series(rng.normal(0, 0.01, 600), index=index, name="B")
    with _yearly_labels_fixed(qs):
        fig = qs.plots.yearly_returns(strategy, bench, show=False, prepare_returns=False)
    ax = fig.axes[0]
    labels = {round(x, 6): t.get_text() for x, t in zip(ax.get_xticks(), ax.get_xticklabels(),
                                                        strict=True)}
    by_year = (1 + strategy).groupby(strategy.index.year).prod() - 1
    bars = ax.containers[1].patches  # the strategy's bars
    for group, (year, value) in enumerate(by_year.items()):
        centre = np.mean([c.patches[group].get_x() + c.patches[group].get_width() / 2
                          for c in ax.containers])
        assert labels[round(centre, 6)] == str(year)
        assert bars[group].get_height() == pytest.approx(value)


def test_live_tearsheet_of_one_hour_withholds_annualised_figures(tmp_path):
    # 60 one-minute marks gaining 5%: QuantStats alone would report a CAGR near 1e+177 %.
    index = pd.date_range("2024-01-01", periods=60, freq="min")
    equity = pd.Series(10_000 * (1 + 0.05 / 60) ** np.arange(1, 61), index=index)
    report = LiveReport(equity, 10_000.0, 60, 10, 10, 1.0, 30, 59)
    page = write_tearsheet(report, tmp_path / "live.html", title="hour",
                           timeframe_seconds=60).read_text(encoding="utf-8")
    assert set(_row(page, "CAGR﹪")) == set(_row(page, "Sharpe")) == {TOO_SHORT}
    assert "kronos-headline" in page and "+5.12%" in page
    lines = report.lines(periods_per_year=525_600)
    assert f"CAGR: {TOO_SHORT}" in lines and "total return: +5.12%" in lines

"""QuantStats tear sheets and metrics: offline, headless, with our signal-quality section."""
from __future__ import annotations

import logging
import socket
import sys
import warnings
import webbrowser

import numpy as np
import pandas as pd
import pytest

qs = pytest.importorskip("quantstats")

from kronos_quant.adapters.quantstats import (  # noqa: E402
    SECTION_ID,
    SignalReport,
    benchmark_returns,
    evaluate_signal,
    metrics,
    quiet_reports,
    register_returns,
    tearsheet,
    to_returns,
)

from kronos_quant.data import planted_signal, synthetic_panel  # noqa: E402
from kronos_quant.signals import Calibration  # noqa: E402


@pytest.fixture(autouse=True)
def offline_and_headless(monkeypatch):
    """Any network connection or browser launch fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to reach the network or open a browser")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(webbrowser, "open", refuse)


def _returns(n: int = 260, seed: int = 0, *, freq: str = "B", tz: str | None = None) -> pd.Series:
    index = pd.date_range("2022-01-03", periods=n, freq=freq, tz=tz)
    return pd.Series(np.random.default_rng(seed).normal(4e-4, 0.01, n), index=index)


def test_tearsheet_has_metrics_and_signal_section(tmp_path, caplog):
    panel = synthetic_panel(10, 160, predictable=0.5, seed=2)
    scores = planted_signal(panel).to_frame()
    scores.attrs = {"lookback": 64, "pred_len": 5, "model": "planted"}
    report = evaluate_signal(scores, panel, horizon=1, execution="next_open")
    strategy = _returns(160, seed=1)
    strategy.index = panel.index.get_level_values("datetime").unique()
    prices = 100 * (1 + _returns(160, seed=2)).cumprod().set_axis(strategy.index)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        path = tearsheet(strategy, benchmark=prices.rename("EW"), title="planted top-k",
                         output=tmp_path / "sub" / "report.html", signal_report=report)
    noise = [f"{w.filename}: {w.message}" for w in seen
             if any(lib in w.filename for lib in ("quantstats", "seaborn", "matplotlib"))]
    assert not noise and "findfont" not in caplog.text
    page = path.read_text(encoding="utf-8")
    assert path == tmp_path / "sub" / "report.html"
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary left
    assert "planted top-k" in page and "Sharpe" in page and "Max Drawdown" in page
    assert page.index(f'id="{SECTION_ID}"') < page.rindex("</body>")
    section = page[page.index(f'id="{SECTION_ID}"'):]
    for text in ("RankIC", "planted_signal", "momentum_20", "reversal_5", "random_walk",
                 "next_open", "lookback", "pred_len"):
        assert text in section, text
    ic = report.evaluation.summary.loc["planted_signal", "rank_ic_mean"]
    assert f"{ic:.4f}" in section and ic > 0.05
    assert report.summary()["rank_ic"] == pytest.approx(ic)
    # Every figure with its uncertainty: p-values and the paired differences are shown.
    p = report.evaluation.summary.loc["planted_signal", "rank_ic_p"]
    assert report.summary()["rank_ic_p"] == pytest.approx(p) and p < 0.01
    assert "p(RankIC)" in section and "Newey–West" in section
    assert "Model minus baseline, paired by date" in section


def test_coverage_section_against_nominal(tmp_path):
    levels = pd.Index([0.5, 0.8], name="level")
    coverage = pd.DataFrame([[0.40, 0.70], [0.50, 0.78]], index=pd.RangeIndex(1, 3, name="step"),
                            columns=levels)

    steps = coverage.index
    calib = Calibration(coverage, pd.DataFrame(), pd.Series(0.01, index=steps, name="crps"),
                        pd.Series(50, index=steps, name="n"), None)
    report = SignalReport(calibration=calib, execution="same_close")
    table = report.coverage()
    assert table.loc[0.8, "empirical"] == pytest.approx(0.74)
    assert table.loc[0.5, "first_step"] == pytest.approx(0.40)
    assert report.summary() == {"coverage_80": pytest.approx(0.74)}
    html = report.to_html()
    assert "band coverage vs nominal" in html and "0.7400" in html and "same_close" in html


def test_vectorbt_portfolio_and_metrics_frame():
    vbt = pytest.importorskip("vectorbt")
    close = pd.DataFrame({"A": np.linspace(10, 12, 30), "B": np.linspace(10, 9, 30)},
                         index=pd.bdate_range("2023-01-02", periods=30))
    size = close * np.nan
    size.iloc[0] = 0.5
    pf = vbt.Portfolio.from_orders(close, size=size, size_type="targetpercent", group_by=True,
                                   cash_sharing=True, freq="1D")
    returns = to_returns(pf)
    pd.testing.assert_series_equal(returns, pf.returns().rename(returns.name), check_freq=False)
    table = metrics(pf, mode="basic")
    assert isinstance(table, pd.DataFrame) and "Sharpe" in table.index
    expected = qs.stats.sharpe(returns, periods=252)
    assert float(table.loc["Sharpe"].iloc[0]) == pytest.approx(expected, abs=0.01)


def test_register_returns_for_other_engines():
    class Result:
        def __init__(self, r):
            self.r = r

    with pytest.raises(TypeError, match="cannot read returns from a Result"):
        to_returns(Result(_returns()))
    register_returns("test-result", lambda obj: isinstance(obj, Result), lambda obj: obj.r)
    pd.testing.assert_series_equal(to_returns(Result(_returns())), _returns())


def test_benchmark_rules():
    with pytest.raises(TypeError, match="would download it"):
        tearsheet(_returns(), benchmark="SPY", output="never.html")
    prices = pd.Series([100.0, 101.0, 99.99], index=pd.bdate_range("2024-01-01", periods=3))
    np.testing.assert_allclose(benchmark_returns(prices).to_numpy(), [0.01, -0.01])
    rets = pd.Series([0.01, -0.02, 0.03], index=prices.index)
    assert benchmark_returns(rets).equals(rets)
    with pytest.raises(ValueError, match="infinite value at 2024-01-02"):
        to_returns(rets.where(rets > 0, np.inf))


def test_tz_aware_stamps_become_wall_clock():
    returns = _returns(40, tz="America/New_York")
    clean = to_returns(returns)
    assert clean.index.tz is None and clean.index[0] == pd.Timestamp("2022-01-03")
    assert "Sharpe" in metrics(returns, mode="basic").index


def test_quiet_reports_hides_only_library_noise(caplog):
    font_log = logging.getLogger("matplotlib.font_manager")
    before = font_log.level
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_reports():
            font_log.warning("findfont: Font family 'Arial' not found.")
            # stacklevel=1: attributed to this test module, not QuantStats, so it is kept
            warnings.warn("ours", DeprecationWarning, stacklevel=1)
        with pytest.raises(ZeroDivisionError), quiet_reports():
            _ = 1 / 0  # raises ZeroDivisionError inside quiet_reports
    assert [str(w.message) for w in seen] == ["ours"]
    assert "findfont" not in caplog.text
    assert font_log.level == before


def test_missing_quantstats_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "quantstats", None)
    with pytest.raises(ImportError, match=r"kronos-quant\[reports\]"):
        tearsheet(_returns(), output=tmp_path / "r.html")

"""Result metrics and their uncertainty, checked against independent computations."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import signal as sps_signal
from scipy import stats as sps

from kronos_quant.metrics import (
    BOOTSTRAP,
    MIN_BARS,
    TOO_SHORT,
    BootstrapSettings,
    backtest_metrics,
    bootstrap_indices,
    bootstrap_sharpe,
    buy_and_hold_returns,
    deflated_sharpe,
    expected_max_sharpe,
    first_trade_bar,
    sharpe_standard_error,
    sweep_sharpe,
)


def _equity(returns: np.ndarray, *, start: str = "2021-01-04", freq: str = "B",
            initial: float = 100.0) -> pd.Series:
    index = pd.date_range(start, periods=len(returns), freq=freq)
    return pd.Series(initial * np.cumprod(1.0 + returns), index=index)


def _ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float, mu: float,
         sigma: float) -> np.ndarray:
    """AR(1) returns with mean mu and innovation sd sigma, rows independent (burn-in cut)."""
    shocks = rng.normal(0.0, sigma, (shape[0], shape[1] + 200))
    return mu + sps_signal.lfilter([1.0], [1.0, -phi], shocks, axis=1)[:, 200:]


# --- Lo (2002) standard error ---------------------------------------------------------------

def test_lo_standard_error_without_lags_is_the_moment_formula():
    # With no autocorrelation terms the delta method gives Mertens' formula
    # Var(SR) = (1 - skew SR + (kurt - 1) / 4 SR^2) / T, here from scipy's moments.
    r = np.random.default_rng(1).standard_t(5, 400) * 0.01 + 0.001
    sr = r.mean() / r.std()
    var = (1 - sps.skew(r) * sr + (sps.kurtosis(r, fisher=False) - 1) / 4 * sr ** 2) / len(r)
    got = sharpe_standard_error(r, periods_per_year=252, lags=0)
    assert got == pytest.approx(math.sqrt(var * 252), rel=1e-10)


def test_lo_standard_error_with_lags_matches_a_direct_bartlett_sum():
    r = _ar1(np.random.default_rng(2), (1, 300), 0.3, 0.0005, 0.01)[0]
    lags = 5
    mu, var = r.mean(), r.var()
    m = np.column_stack([r - mu, (r - mu) ** 2 - var])
    s = m.T @ m / len(r)
    for lag in range(1, lags + 1):
        gamma = m[lag:].T @ m[:-lag] / len(r)
        s += (1 - lag / (lags + 1)) * (gamma + gamma.T)
    grad = np.array([1 / math.sqrt(var), -mu / (2 * var ** 1.5)])
    expected = math.sqrt(grad @ s @ grad / len(r))
    assert sharpe_standard_error(r, periods_per_year=1, lags=lags) == pytest.approx(expected,
                                                                                    rel=1e-10)


def test_lo_standard_error_tracks_the_sampling_spread_of_autocorrelated_returns():
    # 400 AR(1) paths (phi = 0.4): the spread of their Sharpe ratios is what the Lo standard
    # error estimates; the IID formula understates it by about sqrt((1 + phi) / (1 - phi)).
    rng = np.random.default_rng(3)
    paths = _ar1(rng, (400, 1000), 0.4, 0.0004, 0.01)
    sharpes = paths.mean(axis=1) / paths.std(axis=1, ddof=1)
    lo = np.median([sharpe_standard_error(p, periods_per_year=1) for p in paths[:100]])
    iid = np.median([sharpe_standard_error(p, periods_per_year=1, lags=0) for p in paths[:100]])
    assert lo == pytest.approx(sharpes.std(ddof=1), rel=0.15)
    assert iid < 0.8 * sharpes.std(ddof=1)


# --- stationary bootstrap -------------------------------------------------------------------

def test_bootstrap_indices_are_blocks_of_the_expected_mean_length():
    idx = bootstrap_indices(500, resamples=200, block=8.0, rng=np.random.default_rng(0))
    assert idx.shape == (200, 500) and idx.min() >= 0 and idx.max() < 500
    breaks = np.diff(idx, axis=1) % 500 != 1  # a jump = a new block (or a rare self-restart)
    mean_block = idx.size / (breaks.sum() + len(idx))
    assert mean_block == pytest.approx(8.0, rel=0.1)


def test_bootstrap_sharpe_interval_covers_the_true_sharpe_at_its_nominal_rate():
    # 200 independent samples of 250 bars with a known Sharpe ratio: the 95% interval must
    # cover it in a share of samples inside the binomial 99.9% band around 0.95.
    rng = np.random.default_rng(4)
    mu, sigma, ppy, seeds = 0.0006, 0.01, 252, 200
    true = mu / sigma * math.sqrt(ppy)
    samples = rng.normal(mu, sigma, (seeds, 250))
    settings = BootstrapSettings(resamples=400, seed=0)
    covered = 0
    for k, r in enumerate(samples):
        low, high = bootstrap_sharpe(r, periods_per_year=ppy,
                                     settings=BootstrapSettings(resamples=400, seed=k))
        covered += low <= true <= high
    band = sps.binom.interval(0.999, seeds, 0.95)
    assert band[0] <= covered <= band[1], (covered, band)
    assert settings.confidence == BOOTSTRAP.confidence == 0.95


def test_bootstrap_is_reproducible_by_seed():
    r = np.random.default_rng(5).normal(0, 0.01, 300)
    a = bootstrap_sharpe(r, periods_per_year=252)
    assert a == bootstrap_sharpe(r, periods_per_year=252)
    assert a != bootstrap_sharpe(r, periods_per_year=252, settings=BootstrapSettings(seed=1))


# --- deflated Sharpe ratio ------------------------------------------------------------------

def test_deflated_sharpe_matches_the_papers_worked_example():
    # Bailey and Lopez de Prado (2014), section 5: 100 trials, annualised SR 2.5 with
    # variance 0.5 across trials, 1,250 daily bars (250 a year), skew -3, kurtosis 10:
    # SR0 = 0.1132 per bar and DSR = 0.9004.
    assert expected_max_sharpe(trials=100, sharpe_variance=0.5 / 250) == pytest.approx(
        0.1132, abs=5e-5)
    dsr = deflated_sharpe(2.5, trials=100, sharpe_variance=0.5, bars=1250, skew=-3.0,
                          kurtosis=10.0, periods_per_year=250)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_deflated_sharpe_falls_as_the_number_of_trials_grows():
    values = [deflated_sharpe(1.5, trials=n, sharpe_variance=0.5, bars=750,
                              periods_per_year=252) for n in (1, 2, 10, 100, 1000)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    # one trial: the probabilistic Sharpe ratio against 0 (normal returns)
    sr = 1.5 / math.sqrt(252)
    assert values[0] == pytest.approx(sps.norm.cdf(sr * math.sqrt(749) /
                                                   math.sqrt(1 + sr ** 2 / 2)))


def test_sweep_of_noise_does_not_report_its_best_row_as_skill():
    rng = np.random.default_rng(6)
    index = pd.date_range("2020-01-01", periods=500, freq="B")
    noise = pd.DataFrame(rng.normal(0, 0.01, (500, 100)), index=index)
    table = sweep_sharpe(noise, periods_per_year=252)
    best = table.iloc[0]
    assert best["sharpe"] == table["sharpe"].max() and best["sharpe"] > 1.0
    assert best["deflated_sharpe"] < 0.95 and table.attrs["trials"] == 100
    alone = deflated_sharpe(best["sharpe"], trials=1, sharpe_variance=0.0, bars=500,
                            periods_per_year=252)
    assert alone > best["deflated_sharpe"]
    with pytest.raises(ValueError, match="trials"):
        sweep_sharpe(noise, periods_per_year=252, trials=10)


# --- the metrics themselves -----------------------------------------------------------------

def test_metrics_equal_quantstats_own_functions():
    qs = pytest.importorskip("quantstats")
    r = np.random.default_rng(7).normal(3e-4, 0.012, 300)
    r[0] = -0.02  # a loss on the first bar counts in the drawdown (from the starting equity)
    returns = pd.Series(r, index=pd.date_range("2021-01-04", periods=300, freq="B"))
    m = backtest_metrics(_equity(r), initial=100.0, periods_per_year=252)
    assert m.total_return == pytest.approx(qs.stats.comp(returns), rel=1e-10)
    assert m.sharpe == pytest.approx(qs.stats.sharpe(returns, periods=252), rel=1e-10)
    assert m.sortino == pytest.approx(qs.stats.sortino(returns, periods=252), rel=1e-10)
    assert m.cagr == pytest.approx(qs.stats.cagr(returns, periods=252), rel=1e-10)
    assert m.volatility == pytest.approx(qs.stats.volatility(returns, periods=252), rel=1e-10)
    assert m.max_drawdown == pytest.approx(qs.stats.max_drawdown(returns), rel=1e-10)


def test_metrics_equal_vectorbt_stats_with_its_year_set_to_the_bars():
    pytest.importorskip("vectorbt")
    r = np.random.default_rng(8).normal(3e-4, 0.012, 300)
    returns = pd.Series(r, index=pd.date_range("2021-01-04", periods=300, freq="D"))
    m = backtest_metrics(_equity(r, freq="D"), initial=100.0, periods_per_year=252)
    stats = returns.vbt.returns(freq="1D", year_freq="252 days").stats()
    assert m.sharpe == pytest.approx(stats["Sharpe Ratio"], rel=1e-9)
    assert m.sortino == pytest.approx(stats["Sortino Ratio"], rel=1e-9)
    assert m.cagr == pytest.approx(stats["Annualized Return [%]"] / 100, rel=1e-9)
    assert m.volatility == pytest.approx(stats["Annualized Volatility [%]"] / 100, rel=1e-9)
    assert m.total_return == pytest.approx(stats["Total Return [%]"] / 100, rel=1e-9)
    # vectorbt's drawdown starts at the first bar's value; ours at the equity before it (as
    # QuantStats): the same once the curve starts with its base bar.
    based = pd.concat([pd.Series([0.0], index=[returns.index[0] - pd.Timedelta(days=1)]),
                       returns])
    dd = based.vbt.returns(freq="1D", year_freq="252 days").max_drawdown()
    assert -m.max_drawdown == pytest.approx(-dd, rel=1e-9)


def test_annualised_figures_are_withheld_for_tiny_samples():
    # 60 one-minute bars of a 24/7 market: +5% would be a CAGR of about 1e+177 %.
    r = np.full(60, 0.05 / 60)
    m = backtest_metrics(_equity(r, freq="min"), initial=100.0, periods_per_year=525_600)
    assert m.short and m.cagr is m.sharpe is m.volatility is m.sortino is m.sharpe_ci is None
    assert m.total_return == pytest.approx((1 + 0.05 / 60) ** 60 - 1)
    text = m.formatted()
    assert text["CAGR"] == text["Sharpe"] == TOO_SHORT and text["total return"] == "+5.12%"
    assert m.to_dict()["annualised"] is False and m.to_dict()["cagr"] is None
    # daily bars: the 30-bar floor binds (30 bars are 12% of a year)
    daily = np.random.default_rng(9).normal(0, 0.01, MIN_BARS)
    assert backtest_metrics(_equity(daily[:-1]), periods_per_year=252, initial=100).cagr is None
    assert backtest_metrics(_equity(daily), periods_per_year=252, initial=100).cagr is not None


def test_metrics_start_at_the_first_rebalance_and_read_the_weights():
    # Flat equity until the first rebalance (2 Jan, executed next bar); then 1% a bar.
    index = pd.date_range("2021-01-01", periods=40, freq="D")
    growth = np.r_[np.ones(2), 1.01 ** np.arange(1, 39)]
    equity = pd.Series(1000 * growth, index=index)
    weights = pd.DataFrame({"A": [1.0, 0.0, 0.5], "B": [0.0, 1.0, 0.5]},
                           index=index[[1, 11, 21]])
    assert first_trade_bar(weights, index) == index[2]
    m = backtest_metrics(equity, initial=1000.0, periods_per_year=365, weights=weights)
    assert m.start == str(index[2]) and m.bars == 38
    assert m.total_return == pytest.approx(1.01 ** 38 - 1)
    assert m.turnover == pytest.approx((1 + 2 + 1) / 3)  # buy 1, swap 2, half-swap 1
    assert m.exposure == pytest.approx(1.0) and m.max_drawdown == 0.0
    same_close = backtest_metrics(equity, initial=1000.0, periods_per_year=365,
                                  weights=weights, execution="same_close")
    assert same_close.start == str(index[1]) and same_close.bars == 39


def test_buy_and_hold_holds_equal_amounts_bought_before_the_start():
    index = pd.date_range("2021-01-01", periods=4, freq="D")
    close = {"A": [10.0, 10.0, 20.0, 20.0], "B": [5.0, 5.0, 5.0, np.nan], "C": [np.nan, 1, 2, 4]}
    panel = pd.DataFrame(
        [(d, n, c, c, c, c, 1.0) for n, cs in close.items() for d, c in zip(index, cs,
                                                                           strict=True)
         if not np.isnan(c)],
        columns=["datetime", "instrument", "open", "high", "low", "close", "volume"],
    ).set_index(["datetime", "instrument"]).sort_index()
    bh = buy_and_hold_returns(panel, start=index[1])  # bought at the 1 Jan close: A and B
    # value: 1 (1 Jan), 1 (2 Jan), (2 + 1) / 2 = 1.5, B's bars ended: still 1.5
    np.testing.assert_allclose(bh.to_numpy(), [0.0, 0.5, 0.0])
    assert list(bh.index) == list(index[1:])


def test_excess_over_buy_and_hold_has_a_paired_interval():
    rng = np.random.default_rng(10)
    bench = rng.normal(4e-4, 0.01, 400)
    strat = bench + rng.normal(0, 0.002, 400)  # the benchmark plus small noise
    index = pd.date_range("2021-01-04", periods=400, freq="B")
    m = backtest_metrics(_equity(strat), initial=100.0, periods_per_year=252,
                         benchmark=pd.Series(bench, index=index))
    assert m.benchmark_return == pytest.approx(np.prod(1 + bench) - 1)
    assert m.excess_return == pytest.approx(m.total_return - m.benchmark_return)
    low, high = m.excess_ci
    assert low < m.excess_return < high and high - low < 0.15  # paired: noise only


def test_bad_equity_is_refused_clearly():
    index = pd.date_range("2021-01-01", periods=3, freq="D")
    with pytest.raises(ValueError, match="positive and finite"):
        backtest_metrics(pd.Series([1.0, 0.0, 1.0], index=index), periods_per_year=365)
    with pytest.raises(ValueError, match="periods_per_year"):
        backtest_metrics(pd.Series([1.0, 2.0, 1.0], index=index), periods_per_year=0)

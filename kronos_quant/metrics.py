"""A backtest's result metrics, defined once, with their uncertainty.

:func:`backtest_metrics` turns an equity curve (and optionally the target weights) into the
headline numbers every result shows: ``summary.json`` of ``kronos-quant backtest``, the
tear sheet's headline, the live report and the demo's index. Everything is measured **from
the first rebalance on** (the flat bars before the first trade would dilute every ratio) and
annualised with the bar frequency's periods per year. Definitions follow QuantStats (Sharpe
and volatility with the sample standard deviation, Sortino over the root mean square of the
negative returns, CAGR compounded over ``bars / periods_per_year`` years, drawdown from the
starting equity), so its own functions reproduce them.

Annualised figures need :data:`MIN_BARS` bars and :data:`MIN_YEARS` of a year; below that
they are ``None`` (shown as ``"n/a (too short)"``), never extrapolated.

Uncertainty (defaults in :data:`BOOTSTRAP`):

* :func:`sharpe_standard_error`: Lo (2002) standard error of the Sharpe ratio for serially
  correlated returns: the delta method on the mean and variance moments, with their long-run
  covariance estimated by Newey–West (statsmodels, Bartlett kernel).
* :func:`bootstrap_indices`: the stationary bootstrap of Politis and Romano (1994),
  vectorised; :func:`backtest_metrics` gives a 95% percentile interval for the Sharpe ratio
  and for the excess total return over the equal-weight buy-and-hold of the same universe
  (:func:`buy_and_hold_returns`), resampling both curves with the same blocks.
* :func:`deflated_sharpe` and :func:`sweep_sharpe`: the deflated Sharpe ratio of Bailey and
  López de Prado (2014), the probability that a strategy's true Sharpe ratio is positive
  given how many configurations were tried, for parameter sweeps.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
from scipy import stats as sps

from .data import unstack_field
from .execution import DEFAULT_EXECUTION, execution_lag
from .portfolio import align, turnover
from .stats import newey_west_lag

# Annualised figures need at least this many bars and this share of a year.
MIN_BARS: int = 30
MIN_YEARS: float = 0.05
TOO_SHORT: str = "n/a (too short)"
EULER_GAMMA: float = 0.5772156649015329


@dataclass(frozen=True)
class BootstrapSettings:
    """Defaults of every bootstrap interval here (``None`` arguments mean these).

    ``block``: expected block length of the stationary bootstrap; ``None`` uses
    ``ceil(bars ** (1/3))``, the rate at which the optimal block length grows (Politis and
    White, 2004). ``resamples``: number of bootstrap samples. ``seed``: of the generator, so
    a rerun gives the same interval. ``confidence``: of the two-sided percentile interval.
    """

    block: float | None = None
    resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95


BOOTSTRAP = BootstrapSettings()


def too_short(bars: int, periods_per_year: float) -> bool:
    """Whether ``bars`` returns are too few to annualise (see :data:`MIN_BARS`,
    :data:`MIN_YEARS`)."""
    return bars < MIN_BARS or bars / periods_per_year < MIN_YEARS


def _check_ppy(periods_per_year: float) -> float:
    if isinstance(periods_per_year, bool) or not np.isfinite(periods_per_year) \
            or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    return float(periods_per_year)


# --- point estimates (numpy, along the last axis so resamples vectorise) --------------------

def _sharpe(r: np.ndarray, ppy: float) -> np.ndarray:
    std = r.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, r.mean(axis=-1) / std, np.nan) * math.sqrt(ppy)


def _sortino(r: np.ndarray, ppy: float) -> float:
    downside = math.sqrt(float(np.square(np.minimum(r, 0.0)).sum()) / len(r))
    return float(r.mean() / downside * math.sqrt(ppy)) if downside > 0 else float("nan")


def _total(r: np.ndarray) -> np.ndarray:
    return np.prod(1.0 + r, axis=-1) - 1.0


def _max_drawdown(r: np.ndarray) -> float:
    wealth = np.concatenate([[1.0], np.cumprod(1.0 + r)])  # the starting equity is a peak
    return float((wealth / np.maximum.accumulate(wealth)).min() - 1.0)


# --- uncertainty ----------------------------------------------------------------------------

def sharpe_standard_error(returns: np.ndarray | pd.Series, *, periods_per_year: float,
                          lags: int | None = None) -> float:
    """Standard error of the annualised Sharpe ratio, Lo (2002) for non-IID returns.

    The per-bar Sharpe ratio ``mu / sigma`` is a function of the moments ``(mu, sigma^2)``;
    its variance is ``g' S g / T`` with ``g = (1/sigma, -mu / (2 sigma^3))`` and ``S`` the
    long-run covariance of ``(r - mu, (r - mu)^2 - sigma^2)``, estimated by Newey–West with
    ``lags`` (default :func:`kronos_quant.stats.newey_west_lag`; 0 gives the IID value
    ``(1 + SR^2/2) / T`` for normal returns). Scaled by ``sqrt(periods_per_year)`` like the
    Sharpe ratio itself.
    """
    from statsmodels.stats.sandwich_covariance import S_hac_simple

    r = np.asarray(returns, dtype=np.float64)
    ppy = _check_ppy(periods_per_year)
    n = len(r)
    if n < 3:
        return float("nan")
    mu, var = r.mean(), r.var()
    if var <= 0:
        return float("nan")
    moments = np.column_stack([r - mu, (r - mu) ** 2 - var])  # (T, 2)
    lags = newey_west_lag(n) if lags is None else int(lags)
    # S_hac_simple sums over bars (Bartlett weights 1 - l / (lags + 1)): divide by T.
    s = (S_hac_simple(moments, nlags=lags) if lags > 0 else moments.T @ moments) / n
    grad = np.array([1.0 / math.sqrt(var), -mu / (2.0 * var ** 1.5)])
    return float(math.sqrt(max(grad @ s @ grad, 0.0) / n) * math.sqrt(ppy))


def bootstrap_indices(n: int, *, resamples: int, block: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Stationary-bootstrap row indices, shape ``(resamples, n)`` (Politis and Romano 1994).

    Each resample is a chain of blocks with geometric lengths of mean ``block``: each step
    starts a new block at a uniform random bar with probability ``1 / block``, else takes the
    bar after the previous one (wrapping round the end).
    """
    if n < 1 or resamples < 1 or not block >= 1:
        raise ValueError(f"need n >= 1, resamples >= 1 and block >= 1, got {n}, {resamples}, "
                         f"{block}")
    fresh = rng.random((resamples, n)) < 1.0 / block
    fresh[:, 0] = True
    starts = rng.integers(0, n, size=(resamples, n))
    steps = np.arange(n)
    began = np.maximum.accumulate(np.where(fresh, steps, 0), axis=1)  # step each block began
    return (np.take_along_axis(starts, began, axis=1) + steps - began) % n


def _resampled(n: int, settings: BootstrapSettings):
    """Chunks of stationary-bootstrap indices (at most ~8M entries each, bounded memory)."""
    block = settings.block or max(1.0, math.ceil(n ** (1 / 3)))
    rng = np.random.default_rng(settings.seed)
    per_chunk = max(1, 8_000_000 // max(n, 1))
    left = settings.resamples
    while left > 0:
        take = min(per_chunk, left)
        yield bootstrap_indices(n, resamples=take, block=block, rng=rng)
        left -= take


def _interval(draws: np.ndarray, confidence: float) -> tuple[float, float] | None:
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_sharpe(returns: np.ndarray | pd.Series, *, periods_per_year: float,
                     settings: BootstrapSettings = BOOTSTRAP) -> tuple[float, float] | None:
    """Percentile interval of the annualised Sharpe ratio under the stationary bootstrap."""
    r = np.asarray(returns, dtype=np.float64)
    ppy = _check_ppy(periods_per_year)
    draws = np.concatenate([_sharpe(r[idx], ppy) for idx in _resampled(len(r), settings)])
    return _interval(draws, settings.confidence)


def bootstrap_excess(returns: np.ndarray | pd.Series, benchmark: np.ndarray | pd.Series, *,
                     settings: BootstrapSettings = BOOTSTRAP) -> tuple[float, float] | None:
    """Percentile interval of total return minus the benchmark's total return, both curves
    resampled with the same blocks (so their co-movement is kept)."""
    r = np.asarray(returns, dtype=np.float64)
    b = np.asarray(benchmark, dtype=np.float64)
    if r.shape != b.shape:
        raise ValueError(f"returns and benchmark differ in length: {r.shape} vs {b.shape}")
    draws = np.concatenate([_total(r[idx]) - _total(b[idx])
                            for idx in _resampled(len(r), settings)])
    return _interval(draws, settings.confidence)


# --- deflated Sharpe ratio ------------------------------------------------------------------

def expected_max_sharpe(*, trials: int, sharpe_variance: float) -> float:
    """Expected maximum Sharpe ratio of ``trials`` unskilled configurations whose estimated
    Sharpe ratios have variance ``sharpe_variance`` (Bailey and López de Prado 2014, eq. 2)."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if trials == 1:
        return 0.0
    z = (1 - EULER_GAMMA) * sps.norm.ppf(1 - 1 / trials) \
        + EULER_GAMMA * sps.norm.ppf(1 - 1 / (trials * math.e))
    return math.sqrt(sharpe_variance) * z


def deflated_sharpe(sharpe: float, *, trials: int, sharpe_variance: float, bars: int,
                    skew: float = 0.0, kurtosis: float = 3.0,
                    periods_per_year: float = 1.0) -> float:
    """Deflated Sharpe ratio: P(true Sharpe > 0) after trying ``trials`` configurations.

    ``sharpe`` (the chosen configuration's) and ``sharpe_variance`` (the variance of the
    Sharpe ratios across the configurations tried) are annualised with ``periods_per_year``
    (1: per bar); ``bars`` is the sample length, ``skew`` and ``kurtosis`` (not excess) those
    of the chosen configuration's returns. ``trials=1`` gives the probabilistic Sharpe ratio
    against 0.
    """
    ppy = _check_ppy(periods_per_year)
    sr = sharpe / math.sqrt(ppy)
    sr0 = expected_max_sharpe(trials=trials, sharpe_variance=sharpe_variance / ppy)
    scale = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr ** 2
    if bars < 2 or scale <= 0:
        return float("nan")
    return float(sps.norm.cdf((sr - sr0) * math.sqrt(bars - 1) / math.sqrt(scale)))


def sweep_sharpe(returns: pd.DataFrame, *, periods_per_year: float,
                 trials: int | None = None) -> pd.DataFrame:
    """Sharpe and deflated Sharpe ratio of every configuration of a parameter sweep.

    ``returns``: per-bar returns, one column per configuration tried (same bars).
    ``trials``: configurations tried in all (default: the columns; give more when others
    were tried and dropped). Rows sorted by Sharpe, best first; ``deflated_sharpe`` is each
    row's probability of a positive true Sharpe ratio given the sweep, so the best row of a
    sweep of noise is not reported as skill.
    """
    r = returns.astype(np.float64).dropna(how="any")
    ppy = _check_ppy(periods_per_year)
    trials = r.shape[1] if trials is None else int(trials)
    if trials < r.shape[1]:
        raise ValueError(f"trials ({trials}) is below the {r.shape[1]} configurations given")
    values = r.to_numpy().T  # (configurations, bars)
    sharpe = _sharpe(values, ppy)
    variance = float(np.nanvar(sharpe, ddof=1)) if len(sharpe) > 1 else 0.0
    skew = sps.skew(values, axis=1)
    kurt = sps.kurtosis(values, axis=1, fisher=False)
    dsr = [deflated_sharpe(s, trials=trials, sharpe_variance=variance, bars=r.shape[0],
                           skew=g3, kurtosis=g4, periods_per_year=ppy)
           for s, g3, g4 in zip(sharpe, skew, kurt, strict=True)]
    table = pd.DataFrame({"sharpe": sharpe, "deflated_sharpe": dsr}, index=r.columns)
    table.attrs.update(trials=trials, sharpe_variance=variance, bars=r.shape[0],
                       expected_max_sharpe=expected_max_sharpe(
                           trials=trials, sharpe_variance=variance / ppy) * math.sqrt(ppy))
    return table.sort_values("sharpe", ascending=False)


# --- the benchmark and the start --------------------------------------------------------------

def first_trade_bar(weights: pd.DataFrame, calendar: pd.DatetimeIndex, *,
                    execution: str = DEFAULT_EXECUTION) -> pd.Timestamp:
    """The bar the first rebalance of ``weights`` executes on (metrics start there)."""
    calendar = pd.DatetimeIndex(calendar)
    if weights is None or not len(weights):
        raise ValueError("weights have no rebalance row")
    pos = int(calendar.get_indexer(weights.index[:1])[0])
    if pos < 0:
        raise ValueError(f"the first rebalance date {weights.index[0]} is not a bar")
    pos += execution_lag(execution)
    if pos >= len(calendar):
        raise ValueError(f"the first rebalance ({weights.index[0]}) has no bar to execute on")
    return calendar[pos]


def buy_and_hold_returns(panel: pd.DataFrame, *, start: pd.Timestamp | None = None
                         ) -> pd.Series:
    """Per-bar returns, from ``start`` on, of an equal-weight buy-and-hold of the universe.

    Equal amounts of every instrument with a close on the bar before ``start`` (default: the
    first bar) are bought at that close and held, never rebalanced; a name whose bars stop
    keeps its last close (its value sits idle), names listed later are not bought.
    """
    close = unstack_field(panel, "close")
    bars = pd.DatetimeIndex(close.index)
    pos = 0 if start is None else int(bars.searchsorted(pd.Timestamp(start)))
    base_pos = max(pos - 1, 0)
    base = close.iloc[base_pos]
    held = close.loc[:, base.notna() & (base > 0)].iloc[base_pos:].ffill()
    if held.shape[1] == 0:
        raise ValueError(f"no instrument has a close on {bars[base_pos]} to buy")
    value = (held / held.iloc[0]).mean(axis=1)
    returns = value.pct_change().iloc[1:] if pos > 0 else value.pct_change().fillna(0.0)
    return returns.rename("buy-and-hold (equal weight)")


# --- the one set of result metrics ------------------------------------------------------------

@dataclass(frozen=True)
class Metrics:
    """A backtest's headline numbers, from the first rebalance on (see :func:`backtest_metrics`).

    Annualised figures (``cagr``, ``volatility``, ``sharpe``, ``sortino``, ``sharpe_se``,
    ``sharpe_ci``, ``turnover_per_year``) are ``None`` when the sample is too short
    (:func:`too_short`); intervals are ``(low, high)`` of the bootstrap's ``confidence``.
    """

    start: str
    end: str
    bars: int
    years: float
    periods_per_year: float
    total_return: float
    cagr: float | None
    volatility: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    sharpe_se: float | None = None
    sharpe_ci: tuple[float, float] | None = None
    turnover: float | None = None
    turnover_per_year: float | None = None
    exposure: float | None = None
    benchmark_return: float | None = None
    excess_return: float | None = None
    excess_ci: tuple[float, float] | None = None
    bootstrap: dict | None = None

    @property
    def short(self) -> bool:
        return too_short(self.bars, self.periods_per_year)

    def to_dict(self) -> dict:
        """JSON-ready: plain floats, intervals as lists, ``None`` where not available."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = [float(v) for v in value]
            elif isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        out["annualised"] = not self.short
        return out

    def formatted(self) -> dict[str, str]:
        """Every figure as text, ``n/a (too short)`` for a withheld annualised one."""
        pct = lambda v: f"{v:+.2%}"  # noqa: E731
        ratio = lambda v: f"{v:.2f}"  # noqa: E731
        ci = lambda v, f: f"[{f(v[0])}, {f(v[1])}]"  # noqa: E731

        def show(value, fmt, interval=None):
            if value is None:
                return TOO_SHORT if self.short else "n/a"
            if isinstance(value, float) and not math.isfinite(value):
                return "n/a"
            return fmt(value) + (f" {ci(interval, fmt)}" if interval else "")

        sharpe = show(self.sharpe, ratio, self.sharpe_ci)
        if self.sharpe_se is not None and self.sharpe is not None:
            sharpe += f" (s.e. {self.sharpe_se:.2f})"
        out = {"period": f"{self.start} … {self.end} ({self.bars} bars, {self.years:.2f} y, "
                         f"{self.periods_per_year:g} bars/y)",
               "total return": show(self.total_return, pct),
               "CAGR": show(self.cagr, pct),
               "volatility (ann.)": show(self.volatility, lambda v: f"{v:.2%}"),
               "Sharpe": sharpe,
               "Sortino": show(self.sortino, ratio),
               "max drawdown": show(self.max_drawdown, lambda v: f"{v:.2%}")}
        if self.benchmark_return is not None:
            out["buy-and-hold return"] = show(self.benchmark_return, pct)
            out["excess over buy-and-hold"] = show(self.excess_return, pct, self.excess_ci)
        if self.turnover is not None:
            out["turnover per rebalance"] = show(self.turnover, lambda v: f"{v:.3f}")
            out["turnover per year"] = show(self.turnover_per_year, lambda v: f"{v:.1f}")
        if self.exposure is not None:
            out["exposure (mean gross)"] = show(self.exposure, lambda v: f"{v:.2f}")
        return out

    def lines(self) -> list[str]:
        return [f"{name}: {text}" for name, text in self.formatted().items()]


def _returns_from_equity(equity: pd.Series, initial: float | None) -> pd.Series:
    if not isinstance(equity, pd.Series) or not isinstance(equity.index, pd.DatetimeIndex):
        raise TypeError("equity must be a pandas Series indexed by datetimes")
    values = pd.to_numeric(equity, errors="coerce").astype(np.float64)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        raise ValueError(f"equity must be positive and finite; {values[bad].iloc[0]!r} at "
                         f"{values.index[bad][0]}")
    returns = values.pct_change()
    if initial is None:
        return returns.iloc[1:]
    if not np.isfinite(initial) or initial <= 0:
        raise ValueError(f"initial must be a positive equity, got {initial!r}")
    returns.iloc[0] = values.iloc[0] / initial - 1.0
    return returns


def _weight_metrics(weights: pd.DataFrame, calendar: pd.DatetimeIndex, execution: str,
                    start: pd.Timestamp, years: float | None) -> dict:
    per_rebalance = turnover(weights)
    held = align(weights, calendar, execution=execution).abs().sum(axis=1)
    held = held[held.index >= start]
    mean = float(per_rebalance.mean()) if len(per_rebalance) else 0.0
    return {"turnover": mean, "exposure": float(held.mean()) if len(held) else 0.0,
            "turnover_per_year": None if years is None else float(per_rebalance.sum() / years)}


def backtest_metrics(equity: pd.Series, *, periods_per_year: float,
                     initial: float | None = None, weights: pd.DataFrame | None = None,
                     execution: str = DEFAULT_EXECUTION, start: pd.Timestamp | None = None,
                     benchmark: pd.Series | None = None,
                     bootstrap: BootstrapSettings | None = None) -> Metrics:
    """The result metrics of a backtest, from its first rebalance on.

    Parameters
    ----------
    equity
        Portfolio value per bar (positive), e.g. ``pf.value()`` or ``cash * (1 + r).cumprod()``.
    periods_per_year
        Bars per year of the data (the one definition: :mod:`kronos_quant.data`).
    initial
        Value before the first bar (the starting cash); without it the first bar is the base.
    weights, execution
        Target weights (rebalance dates × instruments) and their execution convention:
        the metrics start at the first rebalance's execution bar, and turnover (two-sided,
        mean per rebalance and per year) and exposure (mean gross weight held per bar) come
        from them. Omitted: no turnover/exposure, and ``start`` (or the first bar) starts.
    start
        First bar to measure (overrides the one from ``weights``).
    benchmark
        Per-bar returns to compare against (e.g. :func:`buy_and_hold_returns`); missing bars
        count as 0. Gives ``benchmark_return``, ``excess_return`` and its interval.
    bootstrap
        Interval settings (default :data:`BOOTSTRAP`).
    """
    ppy = _check_ppy(periods_per_year)
    settings = BOOTSTRAP if bootstrap is None else bootstrap
    returns = _returns_from_equity(equity, initial)
    calendar = pd.DatetimeIndex(equity.index)
    if weights is not None:  # an engine's curve may start at the first execution bar
        calendar = calendar.union(pd.DatetimeIndex(weights.index))
    if start is None and weights is not None:
        start = first_trade_bar(weights, calendar, execution=execution)
    if start is not None:
        returns = returns[returns.index >= pd.Timestamp(start)]
    if len(returns) < 1:
        raise ValueError("no equity bar at or after the first rebalance to measure")
    r = returns.to_numpy()
    n = len(r)
    short = too_short(n, ppy)
    annual = (lambda v: None) if short else (lambda v: float(v))  # noqa: E731
    total = float(_total(r))
    out = {"start": str(returns.index[0]), "end": str(returns.index[-1]), "bars": n,
           "years": n / ppy, "periods_per_year": ppy, "total_return": total,
           "cagr": annual((1.0 + total) ** (ppy / n) - 1.0 if total > -1 else -1.0),
           "volatility": annual(r.std(ddof=1) * math.sqrt(ppy)),
           "sharpe": annual(_sharpe(r, ppy)), "sortino": annual(_sortino(r, ppy)),
           "max_drawdown": _max_drawdown(r), "bootstrap": asdict(settings)}
    if not short:
        out["sharpe_se"] = sharpe_standard_error(r, periods_per_year=ppy)
        out["sharpe_ci"] = bootstrap_sharpe(r, periods_per_year=ppy, settings=settings)
    if weights is not None:
        out |= _weight_metrics(weights, calendar, execution, returns.index[0],
                               None if short else n / ppy)
    if benchmark is not None:
        bench = benchmark.reindex(returns.index).fillna(0.0).to_numpy(np.float64)
        out["benchmark_return"] = float(_total(bench))
        out["excess_return"] = total - out["benchmark_return"]
        if not short:
            out["excess_ci"] = bootstrap_excess(r, bench, settings=settings)
    known = {f.name for f in fields(Metrics)}
    return Metrics(**{k: v for k, v in out.items() if k in known})

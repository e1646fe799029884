"""Significance tests for per-date statistics and forecast errors (see docs/statistics.md).

Everything here works on plain arrays: a 1-D array is one series (NaN values are left out),
a 2-D array (T, K) is K independent series tested at once (vectorised; no NaN allowed).

* :func:`mean_test`: is the mean of a serially correlated series zero? Newey–West (HAC)
  standard error with Bartlett weights ``1 − j/(L+1)``, autocovariances with divisor T, no
  small-sample factor: exactly the standard error of
  statsmodels' ``OLS(x, 1).fit(cov_type="HAC", cov_kwds={"maxlags": L})``. The p-value uses
  Student's t with T − 1 degrees of freedom (statsmodels' ``use_t=True``).
* :func:`newey_west_lag`: the lag rule. Statistics of ``horizon``-bar forward returns taken
  every ``spacing`` bars share ``overlap = ceil(horizon / spacing) − 1`` of their successors'
  bars; the lag is ``max(2·overlap, floor(4 (T/100)^(2/9)))`` (twice the overlap because
  Bartlett weights shrink the overlap's autocovariances; the second term is Newey and West's
  rule of thumb for autocorrelation of unknown form), at most T − 1.
* :func:`diebold_mariano`: equal accuracy of two forecasts from their losses, with the
  Harvey–Leybourne–Newbold (1997) small-sample correction and Student's t(T − 1).
* :func:`direction_test`: direction accuracy against the best constant guess (always "up" or
  always "down", whichever was right more often), one-sided exact binomial test (scipy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class MeanTest:
    """Mean of a series with its HAC standard error, t-statistic, p-value, size and lag.

    Fields are floats for one series and (K,) arrays for K series at once."""

    mean: float | np.ndarray
    se: float | np.ndarray
    t: float | np.ndarray
    p_value: float | np.ndarray
    n: int
    lag: int


@dataclass(frozen=True)
class DirectionTest:
    """Direction accuracy, the best constant guess's accuracy, the count and the p-value of
    "the forecast is right more often than the best constant guess"."""

    accuracy: float
    baseline: float
    n: int
    p_value: float


def _check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    return alternative


def overlap_lags(horizon: int, spacing: float = 1.0) -> int:
    """How many following observations share bars with one ``horizon``-bar return taken
    every ``spacing`` bars: ``ceil(horizon / spacing) − 1`` (0 when they do not overlap)."""
    if horizon < 1 or spacing <= 0:
        raise ValueError(f"need horizon >= 1 and spacing > 0, got {horizon!r}, {spacing!r}")
    return max(0, math.ceil(horizon / spacing - 1e-9) - 1)


def newey_west_lag(n_obs: int, *, overlap: int = 0) -> int:
    """Newey–West lag for ``n_obs`` observations with ``overlap`` overlapping successors:
    ``max(2·overlap, floor(4 (n_obs/100)^(2/9)))``, at most ``n_obs − 1`` (0 if n_obs < 2)."""
    if n_obs < 2:
        return 0
    rule = math.floor(4.0 * (n_obs / 100.0) ** (2.0 / 9.0))
    return int(min(max(2 * int(overlap), rule), n_obs - 1))


def _as_columns(x: np.ndarray | pd.Series) -> tuple[np.ndarray, bool]:
    """(T, K) float array and whether the input was one series (its NaN dropped)."""
    arr = np.asarray(x, dtype="float64")
    if arr.ndim == 1:
        return arr[np.isfinite(arr)][:, None], True
    if arr.ndim != 2:
        raise ValueError(f"expected a 1-D series or a 2-D (T, K) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("a 2-D array of series must be finite; pass series with NaN one by one")
    return arr, False


def long_run_variance(x: np.ndarray, *, lag: int, kernel: str = "bartlett") -> np.ndarray:
    """Long-run variance (K,) of the columns of ``x`` (T, K): ``γ0 + 2 Σ_j w_j γ_j``, j = 1..lag,
    autocovariances with divisor T; ``kernel`` "bartlett" (Newey–West, w_j = 1 − j/(lag+1),
    never negative) or "uniform" (w_j = 1: Diebold–Mariano's truncated sum)."""
    if kernel not in ("bartlett", "uniform"):
        raise ValueError(f"kernel must be 'bartlett' or 'uniform', got {kernel!r}")
    n = x.shape[0]
    lag = int(min(lag, n - 1))
    # Bartlett weights as statsmodels' weights_bartlett (not imported: 0.6 s for one line).
    weights = 1.0 - np.arange(lag + 1) / (lag + 1) if kernel == "bartlett" else np.ones(lag + 1)
    centred = x - x.mean(axis=0)
    lrv = (centred * centred).sum(axis=0) / n
    for j in range(1, lag + 1):  # lags, not dates: the sum over dates is vectorised
        lrv = lrv + 2.0 * weights[j] * (centred[j:] * centred[:-j]).sum(axis=0) / n
    return lrv


def _p_values(stat: np.ndarray, df: int, alternative: str) -> np.ndarray:
    from scipy import stats

    if alternative == "greater":
        return stats.t.sf(stat, df)
    if alternative == "less":
        return stats.t.cdf(stat, df)
    return 2.0 * stats.t.sf(np.abs(stat), df)


def _result(mean: np.ndarray, se: np.ndarray, stat: np.ndarray, n: int, lag: int,
            alternative: str, single: bool) -> MeanTest:
    with np.errstate(invalid="ignore"):
        p = _p_values(stat, n - 1, alternative) if n >= 2 else np.full_like(stat, np.nan)
    if single:
        return MeanTest(float(mean[0]), float(se[0]), float(stat[0]), float(p[0]), n, lag)
    return MeanTest(mean, se, stat, p, n, lag)


def mean_test(x: np.ndarray | pd.Series, *, lag: int | None = None, overlap: int = 0,
              alternative: str = "two-sided", kernel: str = "bartlett") -> MeanTest:
    """Newey–West t-test that the mean of ``x`` is zero (see the module notes).

    ``lag`` defaults to :func:`newey_west_lag` of the series length and ``overlap``;
    ``alternative`` "two-sided", "greater" (mean > 0) or "less". ``kernel="uniform"`` with
    ``lag=overlap`` is Hansen and Hodrick's estimator for overlapping returns (unweighted
    autocovariances; the Bartlett estimate where it is not positive). Fewer than 2
    observations, or a series with no variation, give NaN statistics."""
    _check_alternative(alternative)
    cols, single = _as_columns(x)
    n = cols.shape[0]
    lag = newey_west_lag(n, overlap=overlap) if lag is None else int(min(lag, max(n - 1, 0)))
    mean = cols.mean(axis=0) if n else np.full(cols.shape[1], np.nan)
    if n < 2:
        nan = np.full(cols.shape[1], np.nan)
        return _result(mean, nan, nan, n, lag, alternative, single)
    se = _standard_error(cols, lag, kernel)
    # A constant series (e.g. a baseline that never takes a view) has no standard error.
    scale = np.maximum(np.abs(cols).max(axis=0), 1e-300)
    se = np.where(se > 1e-12 * scale, se, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = mean / se
    return _result(mean, se, stat, n, lag, alternative, single)


def _standard_error(cols: np.ndarray, lag: int, kernel: str) -> np.ndarray:
    """sqrt(long-run variance / T); a non-positive uniform-kernel estimate falls back to
    Bartlett's, and a zero variance gives NaN."""
    lrv = long_run_variance(cols, lag=lag, kernel=kernel)
    if kernel == "uniform" and (lrv <= 0).any():
        lrv = np.where(lrv > 0, lrv, long_run_variance(cols, lag=lag, kernel="bartlett"))
    return np.sqrt(np.where(lrv > 0, lrv, np.nan) / cols.shape[0])


def paired_difference(a: pd.Series, b: pd.Series) -> pd.Series:
    """``a − b`` on the index values where both are finite (paired, e.g. by date)."""
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    return (both.iloc[:, 0] - both.iloc[:, 1]).rename("difference")


def diebold_mariano(loss_a: np.ndarray | pd.Series, loss_b: np.ndarray | pd.Series, *,
                    horizon: int = 1, alternative: str = "two-sided",
                    kernel: str = "uniform") -> MeanTest:
    """Diebold–Mariano test of equal expected loss, with the Harvey–Leybourne–Newbold correction.

    ``loss_a``, ``loss_b``: losses of two forecasts of the same targets, in time order
    (1-D, pairs with a NaN are left out; or 2-D (T, K) for K tests at once). With
    ``d = loss_a − loss_b``, ``DM = mean(d) / sqrt(V / T)`` where V is the long-run variance
    of d over ``horizon − 1`` lags (``kernel="uniform"``: Diebold and Mariano's truncated
    sum; if that is not positive the Bartlett estimate is used), and the statistic reported
    is ``DM · sqrt((T + 1 − 2h + h(h − 1)/T) / T)``, compared with Student's t(T − 1).
    ``mean`` is mean(d): negative means forecast a has the lower loss; ``alternative="less"``
    asks "is a more accurate than b"."""
    _check_alternative(alternative)
    a = np.asarray(loss_a, dtype="float64")
    b = np.asarray(loss_b, dtype="float64")
    if a.shape != b.shape:
        raise ValueError(f"loss_a and loss_b differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 1:
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
    cols, single = _as_columns(a - b)
    n, h, lag = cols.shape[0], int(horizon), max(int(horizon) - 1, 0)
    if h < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon!r}")
    mean = cols.mean(axis=0) if n else np.full(cols.shape[1], np.nan)
    if n < 2:
        nan = np.full(cols.shape[1], np.nan)
        return _result(mean, nan, nan, n, lag, alternative, single)
    se = _standard_error(cols, lag, kernel)
    correction = math.sqrt(max(n + 1 - 2 * h + h * (h - 1) / n, 0.0) / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = mean / se * correction
    return _result(mean, se, stat, n, lag, alternative, single)


def direction_test(predicted: np.ndarray | pd.Series,
                   realised: np.ndarray | pd.Series) -> DirectionTest:
    """Share of correctly predicted directions vs the best constant guess (binomial test).

    Pairs with a NaN or a realised move of exactly 0 are left out; a predicted move of 0
    counts as wrong. The best constant guess is right ``max(share up, share down)`` of the
    time, measured on the same outcomes (a guess with hindsight, so the test is conservative).
    The p-value is the exact one-sided binomial probability of at least this many hits if
    each were right with the baseline's probability; it assumes independent outcomes."""
    from scipy import stats

    p = np.asarray(predicted, dtype="float64").ravel()
    r = np.asarray(realised, dtype="float64").ravel()
    if p.shape != r.shape:
        raise ValueError(f"predicted and realised differ in size: {p.size} vs {r.size}")
    keep = np.isfinite(p) & np.isfinite(r) & (r != 0)
    p, r = p[keep], r[keep]
    n = int(len(r))
    if n == 0:
        return DirectionTest(float("nan"), float("nan"), 0, float("nan"))
    hits = int((np.sign(p) == np.sign(r)).sum())
    up = float((r > 0).mean())
    baseline = max(up, 1.0 - up)
    test = stats.binomtest(hits, n, baseline, alternative="greater")
    return DirectionTest(hits / n, baseline, n, float(test.pvalue))

"""Seeded synthetic bars: trading-session stamps, GARCH(1,1) shocks and OHLCV built around
a path of log returns.

:func:`synthetic_ohlcv` is one series; :func:`kronos_quant.data.synthetic_panel` builds a
canonical panel from the same parts. Everything here is a pure function of its seed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .calendars import business_days, freq_offset

# A-share style sessions; bars are labelled by their start time, so every intraday
# timestamp lies in [09:30, 11:30) or [13:00, 15:00) on a business day.
TRADING_SESSIONS: tuple[tuple[str, str], ...] = (("09:30", "11:30"), ("13:00", "15:00"))


def seeded_rng(seed: int) -> np.random.Generator:
    """numpy's default generator for an integer ``seed`` (a TypeError for anything else)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return np.random.default_rng(seed)


def check_positive(name: str, value: float) -> None:
    """A ValueError naming ``name`` unless ``value`` is a positive finite number."""
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")


def _intraday_stamps(start: pd.Timestamp, n_bars: int, step: pd.Timedelta) -> pd.DatetimeIndex:
    offsets = []
    for open_, close_ in TRADING_SESSIONS:
        lo, hi = pd.Timedelta(f"{open_}:00"), pd.Timedelta(f"{close_}:00")
        offsets.extend(lo + k * step for k in range(int(np.ceil((hi - lo) / step))))
    # +2 days: the first day may be partly before ``start`` or a holiday roll-forward.
    days = business_days(start, n_bars // len(offsets) + 2)
    stamps = days.repeat(len(offsets)) + pd.TimedeltaIndex(np.tile(np.array(offsets), len(days)))
    return stamps[stamps >= start][:n_bars]


def bar_stamps(start: str | pd.Timestamp, n_bars: int, freq: str) -> pd.DatetimeIndex:
    """``n_bars`` bar stamps from ``start``: intraday ``freq`` inside :data:`TRADING_SESSIONS`
    on business days, ``"D"``/``"B"`` on business days, anything else on its own grid."""
    if not isinstance(n_bars, (int, np.integer)) or n_bars < 1:
        raise ValueError(f"n_bars must be a positive int, got {n_bars!r}")
    offset = freq_offset(freq)
    try:
        start_ts = pd.Timestamp(start)
    except ValueError as exc:
        raise ValueError(f"cannot parse start {start!r}") from exc
    if isinstance(offset, pd.offsets.Tick) and pd.Timedelta(offset) < pd.Timedelta(days=1):
        stamps = _intraday_stamps(start_ts, int(n_bars), pd.Timedelta(offset))
    elif isinstance(offset, (pd.offsets.Day, pd.offsets.BusinessDay)) and offset.n == 1:
        stamps = business_days(start_ts, n_bars)
    else:
        stamps = pd.date_range(start_ts.normalize(), periods=int(n_bars), freq=offset)
    return pd.DatetimeIndex(stamps, freq=None)


def garch_shocks(rng: np.random.Generator, shape: tuple[int, int],
                 vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) shocks with Student-t(5) innovations and unconditional std ``vol``."""
    alpha, beta, dof = 0.08, 0.90, 5.0
    z = rng.standard_t(dof, size=shape) * np.sqrt((dof - 2.0) / dof)
    omega = vol**2 * (1.0 - alpha - beta)
    var = np.broadcast_to(vol**2, shape[1:]).astype(float)
    shocks, sigma = np.empty(shape), np.empty(shape)
    for t in range(shape[0]):
        sigma[t] = np.sqrt(var)
        shocks[t] = sigma[t] * z[t]
        var = omega + alpha * shocks[t] ** 2 + beta * var
    return shocks, sigma


def bars_from_returns(
    rng: np.random.Generator, log_ret: np.ndarray, sigma: np.ndarray, base: np.ndarray,
    size: np.ndarray,
) -> dict[str, np.ndarray]:
    """OHLCV+amount arrays (bars x instruments) whose closes follow ``log_ret``."""
    n, k = log_ret.shape
    close = base * np.exp(np.cumsum(log_ret, axis=0))
    prev = np.vstack([base[None, :], close[:-1]])
    open_ = prev * np.exp(0.2 * sigma * rng.standard_normal((n, k)))
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(rng.standard_normal((n, k))))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(rng.standard_normal((n, k))))
    # Activity scales with the size of the move, so volume clusters with volatility.
    activity = 0.5 + np.abs(log_ret) / sigma.mean(axis=0)
    volume = np.maximum(np.round(size * activity * np.exp(0.4 * rng.standard_normal((n, k)))), 1.0)
    amount = volume * (high + low + close) / 3.0
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume,
            "amount": amount}


def synthetic_ohlcv(
    n_bars: int = 500, *, freq: str = "5min", start: str | pd.Timestamp = "2024-01-02 09:30",
    seed: int = 0, base_price: float = 10.0, vol: float = 0.01, drift: float = 0.0,
) -> pd.DataFrame:
    """Seeded single-instrument OHLCV bars with volatility clustering.

    Log returns are ``drift + GARCH(1,1)`` shocks (Student-t innovations, unconditional
    per-bar std ``vol``). Intraday ``freq`` yields bars labelled by start time inside
    :data:`TRADING_SESSIONS` on business days; ``"D"``/``"B"`` yield business days.
    Prices satisfy ``low <= min(open, close) <= max(open, close) <= high``, all > 0;
    volume rises with ``|return|``; ``amount = volume * (high + low + close) / 3``.
    The index is a DatetimeIndex named ``"timestamps"``; columns are
    :data:`kronos_quant.data.PANEL_COLUMNS`.
    """
    rng = seeded_rng(seed)
    for name, value in (("base_price", base_price), ("vol", vol)):
        check_positive(name, value)
    stamps = bar_stamps(start, n_bars, freq)
    shocks, sigma = garch_shocks(rng, (len(stamps), 1), np.array([vol]))
    bars = bars_from_returns(rng, shocks + drift, sigma, np.array([float(base_price)]),
                             np.array([1e5]))
    return pd.DataFrame({c: v[:, 0] for c, v in bars.items()}, index=stamps.rename("timestamps"))

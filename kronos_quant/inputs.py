"""Validation and conversion of user DataFrames into model inputs (the pandas boundary)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .calendars import CalendarLike, future_timestamps

logger = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "amount")
TIMESTAMP_COLUMNS = ("timestamps", "date", "datetime")
MIN_CONTEXT = 2
# Normalisation: x = (x - mean) / (std + NORM_EPS), population std over the context (spec).
NORM_EPS = 1e-5


def _describe_row(timestamps: pd.DatetimeIndex | None, pos: int) -> str:
    return f"row {pos}" + (f" ({timestamps[pos]})" if timestamps is not None else "")


def as_timestamps(values: Any, *, what: str) -> pd.DatetimeIndex:
    """Series / Index / array of datetimes → DatetimeIndex, with a clear error otherwise."""
    if isinstance(values, pd.DatetimeIndex):
        index = values
    else:
        try:
            index = pd.DatetimeIndex(pd.to_datetime(values))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{what} must hold datetimes: {err}") from None
    if index.hasnans:
        raise ValueError(f"{what} has a missing timestamp at position {int(np.argmax(index.isna()))}")
    return index


def find_timestamps(df: pd.DataFrame) -> pd.DatetimeIndex:
    """Timestamps of a frame: its DatetimeIndex, else a timestamps/date/datetime column."""
    if isinstance(df.index, pd.DatetimeIndex):
        return df.index
    lowered = {str(c).lower(): c for c in df.columns}
    for name in TIMESTAMP_COLUMNS:
        if name in lowered:
            return as_timestamps(df[lowered[name]], what=f"column {lowered[name]!r}")
    raise ValueError("no timestamps: give x_timestamp, a DatetimeIndex, or one of the columns "
                     f"{list(TIMESTAMP_COLUMNS)}")


def check_timestamps(ts: pd.DatetimeIndex, *, what: str) -> None:
    """Strictly increasing timestamps, or an error naming the first offending position."""
    if len(ts) > 1:
        steps = np.asarray(ts[1:] - ts[:-1])
        bad = np.flatnonzero(steps <= np.timedelta64(0))
        if bad.size:
            i = int(bad[0]) + 1
            kind = "duplicate" if ts[i] == ts[i - 1] else "non-increasing"
            raise ValueError(f"{what} has a {kind} timestamp at position {i}: "
                             f"{ts[i - 1]} then {ts[i]}")


def bar_matrix(df: pd.DataFrame, timestamps: pd.DatetimeIndex | None = None) -> np.ndarray:
    """The six bar columns as float32 (L, 6), filling volume/amount as the reference does."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError("the context DataFrame is empty")
    missing = [c for c in PRICE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"missing price columns {missing}; required: {list(PRICE_COLUMNS)}")
    present = [c for c in BAR_COLUMNS if c in df.columns]
    for col in present:
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise TypeError(f"column {col!r} must be numeric, got dtype {df[col].dtype}")
    cols = {c: df[c].to_numpy(dtype=np.float64) for c in present}
    for col, values in cols.items():
        bad = ~np.isfinite(values)
        if bad.any():
            pos = int(np.argmax(bad))
            raise ValueError(f"column {col!r} has {values[pos]} at "
                             f"{_describe_row(timestamps, pos)}; fill or drop it first")
    if "volume" not in cols:  # no volume: volume and amount are both zero
        cols["volume"] = np.zeros(len(df))
        cols["amount"] = np.zeros(len(df))
    elif "amount" not in cols:  # amount ≈ volume × typical price
        cols["amount"] = cols["volume"] * df[list(PRICE_COLUMNS)].mean(axis=1).to_numpy()
    return np.stack([cols[c] for c in BAR_COLUMNS], axis=1).astype(np.float32)


def time_features(ts: pd.DatetimeIndex) -> np.ndarray:
    """(L, 5) float32: minute, hour, weekday (Monday 0), day of month, month."""
    return np.stack([ts.minute, ts.hour, ts.day_of_week, ts.day, ts.month], axis=1).astype(np.float32)


@dataclass
class PreparedSeries:
    """One series ready for the model: normalised bars, stamps and the scaling to undo."""

    x: np.ndarray  # (L, 6) float32, normalised and clipped
    x_stamp: np.ndarray  # (L, 5)
    y_stamp: np.ndarray  # (P, 5)
    mean: np.ndarray  # (6,)
    std: np.ndarray  # (6,) population std + NORM_EPS
    x_index: pd.DatetimeIndex
    y_index: pd.Index
    raw: np.ndarray  # (L, 6) float32 in price units

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


def prepare_series(df: pd.DataFrame, *, pred_len: int, x_timestamp: Any = None,
                   y_timestamp: Any = None, clip: float = 5.0,
                   calendar: CalendarLike = None) -> PreparedSeries:
    """Validate one context frame and normalise it per column over the context."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    x_ts = find_timestamps(df) if x_timestamp is None else as_timestamps(x_timestamp,
                                                                          what="x_timestamp")
    if len(x_ts) != len(df):
        raise ValueError(f"x_timestamp has {len(x_ts)} entries for {len(df)} rows")
    check_timestamps(x_ts, what="x_timestamp")
    raw = bar_matrix(df, x_ts)
    if len(raw) < MIN_CONTEXT:
        raise ValueError(f"context has {len(raw)} bar(s); at least {MIN_CONTEXT} are needed")
    if y_timestamp is None:
        y_index: pd.Index = future_timestamps(x_ts, pred_len, calendar=calendar)
    else:
        y_index = pd.Index(y_timestamp) if not isinstance(y_timestamp, pd.Index) else y_timestamp
        if len(y_index) != pred_len:
            raise ValueError(f"y_timestamp has {len(y_index)} entries but pred_len is {pred_len}")
    y_ts = as_timestamps(y_index, what="y_timestamp")
    mean = raw.mean(axis=0)
    std = raw.std(axis=0) + np.float32(NORM_EPS)
    x = np.clip((raw - mean) / std, -clip, clip)
    return PreparedSeries(x=x, x_stamp=time_features(x_ts), y_stamp=time_features(y_ts),
                          mean=mean, std=std, x_index=x_ts, y_index=y_index, raw=raw)

"""Validation and conversion of user DataFrames into model inputs (the pandas boundary).

The one input path: :data:`BAR_COLUMNS` and :data:`DATETIME_ALIASES` are the column names
every loader and the predictor accept (case-insensitively), :func:`clean_bars` the one check
of bar values and :func:`parse_timestamps` the one reading of stamps (tz-aware stamps become
their local wall-clock time, tz dropped, with one log line).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .calendars import CalendarLike, future_timestamps

logger = logging.getLogger(__name__)

# The one definition of the bar columns and the names accepted for them (lower case; frames
# are matched case-insensitively, surrounding spaces ignored).
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "amount")
DATETIME_ALIASES: tuple[str, ...] = ("datetime", "timestamps", "timestamp", "date", "time")
MIN_CONTEXT = 2
# Normalisation: x = (x - mean) / (std + NORM_EPS), population std over the context (spec).
NORM_EPS = 1e-5


def checked_int(value: Any, *, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming ``name`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _prefix(source: str) -> str:
    return f"{source}: " if source else ""


def match_columns(columns: Iterable[Any], names: Iterable[str], *,
                  source: str = "") -> dict[str, Any]:
    """Canonical name → the frame's own label, for each of ``names`` the frame has.

    Matching ignores case and surrounding spaces; two labels for one name (``Close`` and
    ``close``) are an error rather than a silent choice.
    """
    wanted, found = set(names), {}
    for label in columns:
        key = str(label).strip().lower()
        if key in wanted:
            if key in found:
                raise ValueError(f"{_prefix(source)}columns {found[key]!r} and {label!r} both "
                                 f"match {key!r}; keep one")
            found[key] = label
    return found


def wall_clock(index: pd.DatetimeIndex, *, what: str) -> pd.DatetimeIndex:
    """tz-aware stamps → their wall-clock time in their own zone, tz dropped (logged once)."""
    if index.tz is None:
        return index
    logger.info("%s: timezone-aware stamps (%s) converted to their local wall-clock time, "
                "timezone dropped", what, index.tz)
    return index.tz_localize(None)


def parse_timestamps(values: Any, *, what: str) -> pd.DatetimeIndex:
    """Datetimes (or YYYYMMDD integers) → tz-naive DatetimeIndex, with a clear error otherwise."""
    if not isinstance(values, pd.DatetimeIndex):
        series = pd.Series(values) if not isinstance(values, pd.Series) else values
        fmt = None
        if pd.api.types.is_integer_dtype(series):
            # Integer dates such as 20240102 would otherwise be read as nanoseconds since 1970.
            if not series.between(10_000_101, 99_991_231).all():
                raise ValueError(f"{what}: numeric timestamps are ambiguous (only YYYYMMDD "
                                 "integers are read); convert them first")
            series, fmt = series.astype("string"), "%Y%m%d"
        try:
            values = pd.DatetimeIndex(pd.to_datetime(series, format=fmt))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what} cannot be read as datetimes: {err}") from None
    if values.hasnans:
        raise ValueError(f"{what} has a missing timestamp at position "
                         f"{int(np.argmax(values.isna()))}")
    return wall_clock(values, what=what)


def frame_timestamps(df: pd.DataFrame, *, source: str = "",
                     column: str | None = None) -> pd.DatetimeIndex:
    """Timestamps of a frame: ``column`` if given, else its DatetimeIndex, else its one
    datetime column (any of :data:`DATETIME_ALIASES`, in any case)."""
    if column is not None:
        found = match_columns(df.columns, [column.strip().lower()], source=source)
        if not found:
            raise ValueError(f"{_prefix(source)}datetime column {column!r} not found in "
                             f"{list(df.columns)}")
        label = next(iter(found.values()))
    elif isinstance(df.index, pd.DatetimeIndex):
        return parse_timestamps(df.index, what=f"{_prefix(source)}index")
    else:
        found = match_columns(df.columns, DATETIME_ALIASES, source=source)
        if len(found) > 1:
            raise ValueError(f"{_prefix(source)}ambiguous datetime columns "
                             f"{list(found.values())}; keep one or name it explicitly")
        if not found:
            raise ValueError(f"{_prefix(source)}no timestamps: no DatetimeIndex and no datetime "
                             f"column (one of {list(DATETIME_ALIASES)}); columns are "
                             f"{list(df.columns)}")
        label = next(iter(found.values()))
    return parse_timestamps(df[label], what=f"{_prefix(source)}column {label!r}")


def bar_value_problem(column: str, values: np.ndarray) -> tuple[int, str] | None:
    """First position breaking the bar rules and what is wrong there, or None.

    Every value finite, prices (open/high/low/close) > 0, volume and amount >= 0.
    """
    bad = ~np.isfinite(values)
    if bad.any():
        pos = int(np.argmax(bad))
        return pos, f"non-finite value {values[pos]}"
    floor_bad = values <= 0 if column in PRICE_COLUMNS else values < 0
    if floor_bad.any():
        pos = int(np.argmax(floor_bad))
        kind = "non-positive price" if column in PRICE_COLUMNS else "negative value"
        return pos, f"{kind} {values[pos]}"
    return None


def _numeric(values: pd.Series, label: Any, source: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values):
        raise TypeError(f"{_prefix(source)}column {label!r} must be numeric, got dtype bool")
    if not pd.api.types.is_numeric_dtype(values):
        coerced = pd.to_numeric(values, errors="coerce")
        bad = (coerced.isna() & values.notna()).to_numpy()
        if bad.any():
            pos = int(np.argmax(bad))
            raise TypeError(f"{_prefix(source)}column {label!r} is not numeric: value "
                            f"{values.iloc[pos]!r} at row {pos}")
        values = coerced
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def clean_bars(df: pd.DataFrame, *, timestamps: pd.DatetimeIndex | None = None,
               source: str = "") -> pd.DataFrame:
    """The frame's bar columns, checked: the one validator of user bars.

    Columns are matched case-insensitively (:func:`match_columns`); open/high/low/close are
    required; numeric strings are converted; every value must pass :func:`bar_value_problem`.
    Returns float64 columns in :data:`BAR_COLUMNS` order (those present), indexed by
    ``timestamps`` when given. Errors name the column, the row and its timestamp.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError(f"{_prefix(source)}the DataFrame is empty")
    found = match_columns(df.columns, BAR_COLUMNS, source=source)
    missing = [c for c in PRICE_COLUMNS if c not in found]
    if missing:
        raise ValueError(f"{_prefix(source)}missing price columns {missing}; required: "
                         f"{list(PRICE_COLUMNS)}, columns are {list(df.columns)}")
    data = {}
    for name in (c for c in BAR_COLUMNS if c in found):
        values = _numeric(df[found[name]], found[name], source)
        problem = bar_value_problem(name, values)
        if problem is not None:
            pos, what = problem
            where = f"row {pos}" + (f" ({timestamps[pos]})" if timestamps is not None else "")
            raise ValueError(f"{_prefix(source)}column {found[name]!r} has {what} at {where}")
        data[name] = values
    return pd.DataFrame(data, index=timestamps if timestamps is not None else df.index)


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


# Notices said once per process at WARNING, then at DEBUG (forecasts repeat per call).
_WARNED: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    logger.log(logging.DEBUG if key in _WARNED else logging.WARNING, message, *args)
    _WARNED.add(key)


def complete_bars(cols: pd.DataFrame, *, source: str = "") -> pd.DataFrame:
    """Fill missing volume/amount as the reference does (the one definition): no volume →
    volume and amount 0 (a warning the first time in a process, then DEBUG: a forecast loop
    without volume calls this every time); no amount → volume × mean of the four prices."""
    if "volume" not in cols:
        _warn_once("no volume", "%sno volume column: volume and amount are fed to the model "
                   "as 0", _prefix(source))
        cols = cols.assign(volume=0.0, amount=0.0)
    elif "amount" not in cols:
        cols = cols.assign(amount=cols["volume"] * cols[list(PRICE_COLUMNS)].mean(axis=1))
    return cols


def bar_matrix(df: pd.DataFrame, timestamps: pd.DatetimeIndex | None = None, *,
               source: str = "") -> np.ndarray:
    """The six bar columns as float32 (L, 6), checked (:func:`clean_bars`) and completed
    (:func:`complete_bars`)."""
    cols = complete_bars(clean_bars(df, timestamps=timestamps, source=source), source=source)
    return cols[list(BAR_COLUMNS)].to_numpy(np.float64).astype(np.float32)


def time_features(stamps: Any) -> np.ndarray:
    """(..., 5) float32 of datetime64 stamps (..., ): minute, hour, weekday (Monday 0), day of
    month, month. Accepts a tz-naive DatetimeIndex or a datetime64 array of any shape."""
    t = np.asarray(stamps, dtype="datetime64[ns]")
    days, months = t.astype("datetime64[D]"), t.astype("datetime64[M]")  # floor, also pre-1970
    minutes = (t - days).astype("timedelta64[m]").astype(np.int64)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    day = (days - months).astype(np.int64) + 1
    return np.stack([minutes % 60, minutes // 60, weekday, day,
                     months.astype(np.int64) % 12 + 1], axis=-1).astype(np.float32)


@dataclass
class ModelInputs:
    """One series as the model takes it: normalised bars, stamps and the scaling to undo."""

    x: np.ndarray  # (L, 6) float32, normalised and clipped
    x_stamp: np.ndarray  # (L, 5)
    y_stamp: np.ndarray  # (P, 5)
    mean: np.ndarray  # (6,)
    std: np.ndarray  # (6,) population std + NORM_EPS

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


def normalise_bars(raw: np.ndarray, clip: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, std) of float32 bars (L, 6): per-column z-scores over the context, clipped."""
    # Column-major, as a DataFrame's values are (and the reference's): numpy's reduction order,
    # hence the rounding of mean and std, depends on the memory layout.
    raw = np.asfortranarray(raw)
    mean = raw.mean(axis=0)
    std = raw.std(axis=0) + np.float32(NORM_EPS)
    return np.clip((raw - mean) / std, -clip, clip), mean, std


@dataclass
class PreparedSeries(ModelInputs):
    """A validated user frame ready for the model, with its stamps and raw bars."""

    x_index: pd.DatetimeIndex | None = None
    y_index: pd.Index | None = None
    raw: np.ndarray | None = None  # (L, 6) float32 in price units


def _stamp_array(stamps: Any, *, what: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(stamps)
    if arr.dtype.kind != "M":
        raise TypeError(f"{what} must be a datetime64 array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[:len(shape)] != shape:
        raise ValueError(f"{what} must be 2-D, (series, bars) starting with {shape}, "
                         f"got shape {arr.shape}")
    if np.isnat(arr).any():
        k, pos = np.argwhere(np.isnat(arr))[0]
        raise ValueError(f"series {k}: {what} has a missing timestamp at position {pos}")
    return arr.astype("datetime64[ns]")


def prepare_arrays(values: Any, stamps: Any, future_stamps: Any, *,
                   clip: float = 5.0) -> list[ModelInputs]:
    """Equal-length windows given as arrays, checked and normalised exactly as
    :func:`prepare_series` does for one frame each.

    ``values`` (N, L, 6) bars in :data:`BAR_COLUMNS` order (price units, volume and amount
    filled), ``stamps`` (N, L) and ``future_stamps`` (N, P) datetime64, tz-naive. Errors name
    the series, column, row and stamp.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3 or values.shape[2] != len(BAR_COLUMNS):
        raise ValueError(f"values must have shape (series, bars, {len(BAR_COLUMNS)}) with "
                         f"columns {list(BAR_COLUMNS)}, got {values.shape}")
    n, length, _ = values.shape
    if n == 0:
        raise ValueError("no series given")
    if length < MIN_CONTEXT:
        raise ValueError(f"context has {length} bar(s); at least {MIN_CONTEXT} are needed")
    stamps = _stamp_array(stamps, what="stamps", shape=(n, length))
    future = _stamp_array(future_stamps, what="future_stamps", shape=(n,))
    for col, name in enumerate(BAR_COLUMNS):
        problem = bar_value_problem(name, values[:, :, col].reshape(-1))
        if problem is not None:
            (k, row), what = divmod(problem[0], length), problem[1]
            raise ValueError(f"series {k}: column {name!r} has {what} at row {row} "
                             f"({stamps[k, row]})")
    bad = np.argwhere(np.diff(stamps.view(np.int64), axis=1) <= 0)
    if len(bad):
        k, row = bad[0]
        raise ValueError(f"series {k}: stamps are not strictly increasing at position "
                         f"{row + 1}: {stamps[k, row]} then {stamps[k, row + 1]}")
    raw = values.astype(np.float32)  # as bar_matrix: float64 bars rounded to float32
    x_stamp, y_stamp = time_features(stamps), time_features(future)  # (N, L, 5), (N, P, 5)
    out = []
    for k in range(n):
        x, mean, std = normalise_bars(raw[k], clip)
        out.append(ModelInputs(x, x_stamp[k], y_stamp[k], mean, std))
    return out


def prepare_series(df: pd.DataFrame, *, pred_len: int, x_timestamp: Any = None,
                   y_timestamp: Any = None, clip: float = 5.0,
                   calendar: CalendarLike = None) -> PreparedSeries:
    """Validate one context frame and normalise it per column over the context.

    Bars go through :func:`clean_bars`; timestamps come from ``x_timestamp`` or the frame
    (:func:`frame_timestamps`), tz-aware ones as their local wall-clock time. Without
    ``y_timestamp`` the future stamps are :func:`~kronos_quant.calendars.future_timestamps`
    of the context stamps (``calendar`` passed through).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    x_ts = (frame_timestamps(df) if x_timestamp is None
            else parse_timestamps(x_timestamp, what="x_timestamp"))
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
    y_ts = parse_timestamps(y_index, what="y_timestamp")
    x, mean, std = normalise_bars(raw, clip)
    return PreparedSeries(x=x, x_stamp=time_features(x_ts), y_stamp=time_features(y_ts),
                          mean=mean, std=std, x_index=x_ts, y_index=y_index, raw=raw)

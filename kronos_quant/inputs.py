"""Validation and conversion of user DataFrames into model inputs (the pandas boundary).

The one input path: :data:`BAR_COLUMNS` and :data:`DATETIME_ALIASES` are the column names
every loader and the predictor accept (case-insensitively), :func:`clean_bars` the one check
of bar values and :func:`~kronos_quant.stamps.parse_timestamps` the one reading of stamps
(tz-aware stamps become their local wall-clock time, tz dropped, with one log line).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .calendars import CalendarLike, future_timestamps
from .stamps import check_timestamps, epoch_hint, parse_timestamps, row_number
from .stamps import wall_clock as wall_clock  # re-exported: loaders and adapters use it here

logger = logging.getLogger(__name__)

# The one definition of the bar columns and the names accepted for them (lower case; frames
# are matched case-insensitively, surrounding spaces ignored).
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "amount")
DATETIME_ALIASES: tuple[str, ...] = ("datetime", "timestamps", "timestamp", "date", "time")
# Adjusted-close columns: named in a warning, never used (prices come from open/high/low/close).
ADJUSTED_CLOSE_ALIASES: tuple[str, ...] = ("adj close", "adj_close", "adjclose", "adj. close",
                                           "adjusted close", "adjusted_close", "adj")
# The shortest context a forecast accepts: the per-column mean and standard deviation every
# bar is normalised with are too noisy over fewer bars (the published models were trained on
# windows of hundreds of bars, the demo model on 120).
MIN_CONTEXT = 16
# A close-to-open move beyond this factor (either way) is flagged as a likely split.
SPLIT_FACTOR = 0.6
# Ways of repairing impossible bars (high below low, open or close; low above them).
REPAIRS: tuple[str, ...] = ("clip",)
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


def frame_timestamps(df: pd.DataFrame, *, source: str = "", column: str | None = None,
                     date_format: str | None = None, rows: Any = None) -> pd.DatetimeIndex:
    """Timestamps of a frame: ``column`` if given, else its DatetimeIndex, else its one
    datetime column (any of :data:`DATETIME_ALIASES`, in any case). ``date_format`` and
    ``rows`` as in :func:`parse_timestamps`."""
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
            index = df.index
            if not isinstance(index, pd.RangeIndex) and pd.api.types.is_numeric_dtype(index):
                # An index of numbers is the likeliest place for epoch stamps.
                raise ValueError(f"{_prefix(source)}no timestamps: the index "
                                 f"{epoch_hint(pd.Series(index))}")
            raise ValueError(f"{_prefix(source)}no timestamps: no DatetimeIndex and no datetime "
                             f"column (one of {list(DATETIME_ALIASES)}); columns are "
                             f"{list(df.columns)}")
        label = next(iter(found.values()))
    return parse_timestamps(df[label], what=f"{_prefix(source)}column {label!r}",
                            date_format=date_format, rows=rows)


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


def _numeric(values: pd.Series, label: Any, source: str, rows: Any) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values):
        raise TypeError(f"{_prefix(source)}column {label!r} must be numeric, got dtype bool")
    if not pd.api.types.is_numeric_dtype(values):
        coerced = pd.to_numeric(values, errors="coerce")
        bad = (coerced.isna() & values.notna()).to_numpy()
        if bad.any():
            pos = int(np.argmax(bad))
            value = values.iloc[pos]
            hint = ("; thousands separators? read the file with thousands=',' or remove them"
                    if isinstance(value, str) and "," in value
                    and pd.notna(pd.to_numeric(value.replace(",", ""), errors="coerce")) else "")
            raise TypeError(f"{_prefix(source)}column {label!r} is not numeric: value "
                            f"{value!r} at row {row_number(rows, pos)}{hint}")
        values = coerced
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _impossible_bars(data: dict[str, np.ndarray]) -> np.ndarray:
    """Mask of bars whose high is below their low, open or close, or low above open/close."""
    o, h, lo, c = (data[k] for k in PRICE_COLUMNS)
    return (h < np.maximum(np.maximum(o, c), lo)) | (lo > np.minimum(o, c))


def _bar_text(data: dict[str, np.ndarray], pos: int, labels: dict[str, Any]) -> str:
    return ", ".join(f"{labels[k]} {data[k][pos]:g}" for k in PRICE_COLUMNS)


def check_bar_ranges(data: dict[str, np.ndarray], *, labels: dict[str, Any], where: Callable,
                     source: str = "", repair: str | None = None) -> dict[str, np.ndarray]:
    """Refuse (or with ``repair="clip"`` widen) bars whose high/low do not bound open/close.

    ``where(pos)`` names a bar in messages; ``labels`` maps canonical names to the columns as
    written. Clipping sets high to the bar's largest price and low to its smallest and logs
    every change at WARNING.
    """
    if repair is not None and repair not in REPAIRS:
        raise ValueError(f"repair must be None or one of {list(REPAIRS)}, got {repair!r}")
    bad = np.flatnonzero(_impossible_bars(data))
    if bad.size == 0:
        return data
    pos = int(bad[0])
    if repair is None:
        raise ValueError(f"{_prefix(source)}impossible bar at {where(pos)}: "
                         f"{_bar_text(data, pos, labels)} (high must be >= open, close and "
                         f"low; low <= open and close); fix the data or pass repair='clip' "
                         "(--repair clip)")
    stacked = np.stack([data[k] for k in PRICE_COLUMNS])  # (4, L)
    fixed = dict(data, high=stacked.max(axis=0), low=stacked.min(axis=0))
    shown = "; ".join(f"{where(int(i))}: high {data['high'][i]:g} -> {fixed['high'][i]:g}, "
                      f"low {data['low'][i]:g} -> {fixed['low'][i]:g}" for i in bad[:5])
    more = f" (and {bad.size - 5} more)" if bad.size > 5 else ""
    logger.warning("%srepair='clip' widened %d impossible bar(s): %s%s", _prefix(source),
                   bad.size, shown, more)
    return fixed


def _notices(df: pd.DataFrame, data: dict[str, np.ndarray], found: dict[str, Any],
             source: str) -> None:
    """Warn about columns that look like data but are not used as the user may think."""
    adjusted = match_columns(df.columns, ADJUSTED_CLOSE_ALIASES, source=source)
    if adjusted:
        label = next(iter(adjusted.values()))
        warn_once(f"adj {source}", "%scolumn %r is not used: forecasts read open/high/low/"
                   "close as given; if those are unadjusted, splits and dividends look like "
                   "price jumps (scale open/high/low/close by %r / close first)",
                   _prefix(source), label, label)
    if "volume" in data and len(data["volume"]) and not data["volume"].any():
        warn_once(f"zero volume {source}", "%scolumn %r is 0 on every bar: the model gets no "
                   "volume information (as with no volume column)", _prefix(source),
                   found["volume"])


def clean_bars(df: pd.DataFrame, *, timestamps: pd.DatetimeIndex | None = None,
               source: str = "", rows: Any = None, repair: str | None = None) -> pd.DataFrame:
    """The frame's bar columns, checked: the one validator of user bars.

    Columns are matched case-insensitively (:func:`match_columns`); open/high/low/close are
    required; numeric strings are converted; every value must pass :func:`bar_value_problem`
    and every bar :func:`check_bar_ranges` (``repair="clip"`` widens impossible bars instead).
    An adjusted-close column is named in a warning (it is not used), as is a volume of 0 on
    every bar. Returns float64 columns in :data:`BAR_COLUMNS` order (those present), indexed
    by ``timestamps`` when given. Errors name the column as written, the row (``rows[pos]``
    when given, e.g. a file's data rows from 1; else the position) and its timestamp.
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

    def where(pos: int) -> str:
        return f"row {row_number(rows, pos)}" + (f" ({timestamps[pos]})" if timestamps is not None
                                          else "")

    data = {}
    for name in (c for c in BAR_COLUMNS if c in found):
        values = _numeric(df[found[name]], found[name], source, rows)
        problem = bar_value_problem(name, values)
        if problem is not None:
            pos, what = problem
            raise ValueError(f"{_prefix(source)}column {found[name]!r} has {what} at {where(pos)}")
        data[name] = values
    data = check_bar_ranges(data, labels=found, where=where, source=source, repair=repair)
    _notices(df, data, found, source)
    return pd.DataFrame(data, index=timestamps if timestamps is not None else df.index)


def check_name_twins(names: list[str]) -> None:
    """Instrument names that differ only in case or surrounding spaces are almost always one
    symbol typed twice."""
    seen: dict[str, str] = {}
    for name in names:
        twin = seen.setdefault(name.strip().casefold(), name)
        if twin != name:
            how = "case" if twin.strip() != name.strip() else "surrounding spaces"
            raise ValueError(f"instruments {twin!r} and {name!r} differ only in {how}: the same "
                             "symbol twice? rename one or fix the names")


def check_jumps(close: np.ndarray, open_: np.ndarray, *, where: Callable,
                source: str = "") -> None:
    """Warn (once per source) at the first open that gaps from the previous close by more
    than a factor :data:`SPLIT_FACTOR`: most likely a split the prices were not adjusted for."""
    if len(close) < 2:
        return
    ratio = open_[1:] / close[:-1]
    jumps = np.flatnonzero((ratio < SPLIT_FACTOR) | (ratio > 1 / SPLIT_FACTOR))
    if jumps.size:
        pos = int(jumps[0]) + 1
        warn_once(f"jump {source}", "%s%s opens at %g after a close of %g (%+.0f%%): a split "
                   "or other corporate action the prices are not adjusted for? the model reads "
                   "it as a real move; adjust the prices first", _prefix(source), where(pos),
                   open_[pos], close[pos - 1], (ratio[pos - 1] - 1) * 100)


# Notices said once per process at WARNING, then at DEBUG (forecasts repeat per call).
_WARNED: set[str] = set()


def warn_once(key: str, message: str, *args: Any) -> None:
    logger.log(logging.DEBUG if key in _WARNED else logging.WARNING, message, *args)
    _WARNED.add(key)


def complete_bars(cols: pd.DataFrame, *, source: str = "") -> pd.DataFrame:
    """Fill missing volume/amount as the reference does (the one definition): no volume →
    volume and amount 0 (a warning the first time in a process, then DEBUG: a forecast loop
    without volume calls this every time); no amount → volume × mean of the four prices."""
    if "volume" not in cols:
        warn_once("no volume", "%sno volume column: volume and amount are fed to the model "
                   "as 0", _prefix(source))
        cols = cols.assign(volume=0.0, amount=0.0)
    elif "amount" not in cols:
        cols = cols.assign(amount=cols["volume"] * cols[list(PRICE_COLUMNS)].mean(axis=1))
    return cols


def bar_matrix(df: pd.DataFrame, timestamps: pd.DatetimeIndex | None = None, *,
               source: str = "", repair: str | None = None, rows: Any = None) -> np.ndarray:
    """The six bar columns as float32 (L, 6), checked (:func:`clean_bars`, ``repair`` and
    ``rows`` passed through) and completed (:func:`complete_bars`)."""
    cols = complete_bars(clean_bars(df, timestamps=timestamps, source=source, repair=repair,
                                    rows=rows), source=source)
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
    check_context_length(length)
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


def check_context_length(length: int, *, what: str = "context") -> None:
    """Refuse a context shorter than :data:`MIN_CONTEXT` bars."""
    if length < MIN_CONTEXT:
        raise ValueError(f"{what} has {length} bar(s); forecasting needs at least "
                         f"{MIN_CONTEXT} (MIN_CONTEXT): a mean and standard deviation over "
                         "fewer bars make the normalised inputs noise")


def _check_moves(raw: np.ndarray, where: Callable) -> None:
    """A context whose prices never move has nothing to normalise: refuse it; warn at a gap
    that looks like a split. ``raw`` (L, 6) in :data:`BAR_COLUMNS` order."""
    if (raw[:, :4] == raw[0, 0]).all():
        raise ValueError(f"every price is {raw[0, 0]:g} on all {len(raw)} bars: a constant "
                         "series has nothing to forecast from (normalised, it is all zeros)")
    check_jumps(raw[:, 3], raw[:, 0], where=where)


def frame_rows(df: pd.DataFrame) -> np.ndarray | None:
    """The row numbers messages give a frame's rows: its integer index when it has one that
    looks like row numbers (a slice of a file keeps the file's numbers), else None (positions)."""
    index = df.index
    if (isinstance(index, pd.MultiIndex) or not pd.api.types.is_integer_dtype(index)
            or len(index) == 0 or index.min() < 0 or index.max() >= 10**9):
        return None
    return index.to_numpy()


def prepare_series(df: pd.DataFrame, *, pred_len: int, x_timestamp: Any = None,
                   y_timestamp: Any = None, clip: float = 5.0,
                   calendar: CalendarLike = None, repair: str | None = None) -> PreparedSeries:
    """Validate one context frame and normalise it per column over the context.

    Bars go through :func:`clean_bars` (``repair`` passed through); timestamps come from
    ``x_timestamp`` or the frame (:func:`frame_timestamps`), tz-aware ones as their local
    wall-clock time. Contexts shorter than :data:`MIN_CONTEXT` bars and constant ones are
    refused. Without ``y_timestamp`` the future stamps are
    :func:`~kronos_quant.calendars.future_timestamps` of the context stamps (``calendar``
    passed through). Messages name rows by :func:`frame_rows`.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    rows = frame_rows(df)
    x_ts = (frame_timestamps(df, rows=rows) if x_timestamp is None
            else parse_timestamps(x_timestamp, what="x_timestamp"))
    if len(x_ts) != len(df):
        raise ValueError(f"x_timestamp has {len(x_ts)} entries for {len(df)} rows")
    what = ("x_timestamp" if x_timestamp is not None else "the index"
            if isinstance(df.index, pd.DatetimeIndex) else f"column {x_ts.name!r}")
    check_timestamps(x_ts, what=what, rows=rows)
    raw = bar_matrix(df, x_ts, repair=repair, rows=rows)
    check_context_length(len(raw))
    _check_moves(raw, lambda pos: f"row {row_number(rows, pos)} ({x_ts[pos]})")
    if y_timestamp is None:
        y_index: pd.Index = future_timestamps(x_ts, pred_len, calendar=calendar)
    else:
        y_index = pd.Index(y_timestamp) if not isinstance(y_timestamp, pd.Index) else y_timestamp
        if len(y_index) != pred_len:
            raise ValueError(f"y_timestamp has {len(y_index)} entries but pred_len is {pred_len}")
    y_ts = parse_timestamps(y_index, what="y_timestamp")
    check_timestamps(y_ts, what="y_timestamp")
    if y_ts[0] <= x_ts[-1]:
        raise ValueError(f"y_timestamp starts at {y_ts[0]}, not after the last context bar "
                         f"{x_ts[-1]}: forecasts are for the bars after the context")
    x, mean, std = normalise_bars(raw, clip)
    return PreparedSeries(x=x, x_stamp=time_features(x_ts), y_stamp=time_features(y_ts),
                          mean=mean, std=std, x_index=x_ts, y_index=y_index, raw=raw)

"""Reading user timestamps: the one parse of stamps every loader and the predictor use.

Text, datetimes and YYYYMMDD integers become a tz-naive :class:`pandas.DatetimeIndex`
(tz-aware stamps become their local wall-clock time, tz dropped, with one log line). What
cannot be read gets one line naming the value, its row and a fix: epoch numbers get the unit
to convert them with, day-first dates the ``date_format`` that reads them, mixed time zones
the conversion to one zone.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def row_number(rows: Any, pos: int) -> int:
    """The number a message gives position ``pos``: ``rows[pos]`` if given, else ``pos``."""
    return int(pos if rows is None else rows[pos])


def wall_clock(index: pd.DatetimeIndex, *, what: str) -> pd.DatetimeIndex:
    """tz-aware stamps → their wall-clock time in their own zone, tz dropped (logged once)."""
    if index.tz is None:
        return index
    logger.info("%s: timezone-aware stamps (%s) converted to their local wall-clock time, "
                "timezone dropped", what, index.tz)
    return index.tz_localize(None)


def epoch_hint(values: pd.Series) -> str:
    """What to do with numbers where dates were expected (epoch seconds, ms, ...)."""
    first = values.dropna().iloc[0] if values.notna().any() else None
    if first is None or not pd.api.types.is_integer_dtype(values):
        return f"holds numbers (e.g. {first}), not dates; convert them with pd.to_datetime first"
    unit = next(u for limit, u in ((1e11, "s"), (1e14, "ms"), (1e17, "us"), (np.inf, "ns"))
                if abs(first) < limit)
    return (f"holds integers (e.g. {first}) that are not YYYYMMDD dates: epoch stamps? convert "
            f"them first, e.g. pd.to_datetime(values, unit={unit!r})")


def _unreadable_stamps(series: pd.Series, what: str, fmt: str | None,
                       rows: Any) -> ValueError:
    """One-line error for stamps pandas could not read: the first bad value, its row, a fix."""
    text = series.astype("string")
    if text.str.contains(r"(?:[+-]\d\d:?\d\d|Z)$", regex=True).any():
        zones = text.str.extract(r"([+-]\d\d:?\d\d|Z)$")[0].dropna().unique()[:3]
        return ValueError(f"{what} mixes time zones ({', '.join(zones)}); convert every stamp "
                          "to one zone first (e.g. pd.to_datetime(values, utc=True))")
    guess = fmt or pd.tseries.api.guess_datetime_format(str(text.dropna().iloc[0]))
    parsed = pd.to_datetime(series, format=guess, errors="coerce") if guess else None
    bad = (parsed.isna() & series.notna()).to_numpy() if parsed is not None else None
    if bad is None or not bad.any():
        return ValueError(f"{what} cannot be read as datetimes (first value "
                          f"{text.iloc[0]!r}); set the date format (date_format= / "
                          "--date-format), e.g. '%Y-%m-%d %H:%M'")
    pos = int(np.argmax(bad))
    known = f"the given date format {fmt!r}" if fmt else f"the date format {guess!r} of the " \
        "first rows"
    day_first = guess.startswith("%m/%d")
    fix = (f"day-first dates? set the date format (date_format= / --date-format), e.g. "
           f"{guess.replace('%m/%d', '%d/%m')!r}" if day_first else
           "fix the value or set the date format (date_format= / --date-format)")
    return ValueError(f"{what}: {text.iloc[pos]!r} at row {row_number(rows, pos)} does not match "
                      f"{known}; {fix}")


def parse_timestamps(values: Any, *, what: str, date_format: str | None = None,
                     rows: Any = None) -> pd.DatetimeIndex:
    """Datetimes (or YYYYMMDD integers) → tz-naive DatetimeIndex, with a clear error otherwise.

    ``date_format`` (strptime codes such as ``'%d/%m/%Y'``) reads text stamps that pandas
    would misread; ``rows`` are the numbers errors give the values (a file's data rows
    counted from 1; default: positions from 0).
    """
    if not isinstance(values, pd.DatetimeIndex):
        series = pd.Series(values) if not isinstance(values, pd.Series) else values
        fmt = date_format
        if pd.api.types.is_integer_dtype(series) and date_format is None:
            # Integer dates such as 20240102 would otherwise be read as nanoseconds since 1970.
            if not series.between(10_000_101, 99_991_231).all():
                raise ValueError(f"{what} {epoch_hint(series)}")
            series, fmt = series.astype("string"), "%Y%m%d"
        elif pd.api.types.is_float_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise ValueError(f"{what} {epoch_hint(series)}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # pandas' day-first notice
                values = pd.DatetimeIndex(pd.to_datetime(series, format=fmt))
        except (TypeError, ValueError) as err:
            if "Tz-aware" in str(err) or "Mixed timezones" in str(err):
                raise ValueError(f"{what} mixes time zones; convert every stamp to one zone "
                                 "first (e.g. pd.to_datetime(values, utc=True))") from None
            raise _unreadable_stamps(series, what, fmt, rows) from None
    if values.hasnans:
        raise ValueError(f"{what} has a missing timestamp at row "
                         f"{row_number(rows, int(np.argmax(values.isna())))}")
    return wall_clock(values, what=what)


def check_timestamps(ts: pd.DatetimeIndex, *, what: str, rows: Any = None) -> None:
    """Strictly increasing timestamps, or an error naming the first offending position (or
    ``rows[pos]``, e.g. a file's row); stamps running newest first get that said."""
    if len(ts) > 1:
        steps = np.asarray(ts[1:] - ts[:-1])
        bad = np.flatnonzero(steps <= np.timedelta64(0))
        if bad.size == len(steps) and (steps < np.timedelta64(0)).all():
            raise ValueError(f"{what}: timestamps run newest first ({ts[0]} … {ts[-1]}): sort "
                             "the rows oldest first (e.g. df.sort_index() or "
                             "df.sort_values(column))")
        if bad.size:
            i = int(bad[0]) + 1
            kind = "duplicate" if ts[i] == ts[i - 1] else "non-increasing"
            where = f"position {i}" if rows is None else f"row {row_number(rows, i)}"
            raise ValueError(f"{what} has a {kind} timestamp at {where}: "
                             f"{ts[i - 1]} then {ts[i]}")

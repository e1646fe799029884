"""Future bar timestamps: the one rule every forecast uses, in backtests and live.

:func:`future_timestamps` gives the stamps of the next ``pred_len`` bars from the past
stamps alone, so a forecast made at t never depends on rows after t. Rules, in order:

* ``calendar`` given (daily bars only): the next sessions of that calendar, an exchange
  name such as ``"XNYS"`` (through ``exchange_calendars``, the ``[calendars]`` extra) or a
  DatetimeIndex of session dates, each at the last bar's time of day.
* Daily bars (one bar per calendar date): the next business days (Monday to Friday) at the
  last bar's time of day, so 16:00 bars continue at 16:00 and UTC-stamped bars stay on
  weekdays; a history that has weekend bars (crypto) continues on every calendar day.
  Holidays are not known without a calendar.
* A regular calendar grid that pandas recognises (weekly ``W-FRI``, month-end ``ME``,
  ``BME``, ``QE``, ...), or month-end / month-start bars with gaps: the next points of that
  grid, at the last bar's time of day (month-ends give month-ends).
* Anything else, intraday bars included: the most common spacing between bars, continued
  straight on. Intraday stamps therefore run through session ends, nights and weekends
  (a 15:55 5-minute bar is followed by 16:00, 16:05, ...); pass explicit future stamps
  (``y_timestamp``) where session-aware stamps matter.

tz-aware stamps are handled on their wall-clock time in their own zone and returned in
that zone.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

CalendarLike = str | pd.DatetimeIndex | None

CALENDARS_EXTRA = 'pip install "kronos-quant[calendars]"'
# Month grids recognised even with missing bars, tried in this order.
_MONTH_GRIDS = (pd.offsets.MonthEnd(), pd.offsets.BMonthEnd(), pd.offsets.MonthBegin(),
                pd.offsets.BMonthBegin())
_DAY = pd.Timedelta(days=1)


def freq_offset(freq: str) -> pd.DateOffset:
    """The pandas offset of a frequency string (``"5min"``, ``"D"``, ``"W"``); a clear error
    for one pandas does not know."""
    try:
        return to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unrecognised freq {freq!r}") from exc


def business_days(start: Any, periods: int) -> pd.DatetimeIndex:
    """``periods`` business days (Monday to Friday, midnight) from ``start``'s date on."""
    return pd.bdate_range(pd.Timestamp(start).normalize(), periods=int(periods))


def _exchange_sessions(name: str, year: int) -> pd.DatetimeIndex:
    try:
        import exchange_calendars as xcals
    except ImportError:
        raise ImportError(f"calendar={name!r} needs exchange_calendars: {CALENDARS_EXTRA}, or "
                          "pass a DatetimeIndex of session dates") from None
    with warnings.catch_warnings():  # exchange_calendars 4.13 trips pandas 3 deprecations
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            # Decade starts keep the number of distinct (cached) calendar objects small.
            cal = xcals.get_calendar(name, start=f"{year // 10 * 10}-01-01")
        except xcals.errors.InvalidCalendarName:
            raise ValueError(f"unknown exchange calendar {name!r} (exchange_calendars names "
                             "such as 'XNYS', 'XLON', 'XSHG')") from None
        except ValueError:  # the decade start is before the calendar's first date
            cal = xcals.get_calendar(name, start=f"{year}-01-01")
    return pd.DatetimeIndex(cal.sessions, freq=None)


def calendar_sessions(calendar: CalendarLike, *, start: Any = None) -> pd.DatetimeIndex | None:
    """Session dates (sorted, unique, midnight, tz-naive) of ``calendar``, or None for None.

    ``calendar`` is an exchange name (``"XNYS"``; needs the ``[calendars]`` extra) or any
    sequence of session dates. ``start`` is the earliest date the sessions must cover
    (exchange calendars only; default: 20 years back).
    """
    if calendar is None:
        return None
    if isinstance(calendar, str):
        year = pd.Timestamp(start).year if start is not None else pd.Timestamp.now().year - 20
        return _exchange_sessions(calendar, year)
    try:
        sessions = pd.DatetimeIndex(calendar)
    except (TypeError, ValueError) as err:
        raise TypeError("calendar must be an exchange name such as 'XNYS' or a DatetimeIndex "
                        f"of session dates: {err}") from None
    if sessions.hasnans:
        raise ValueError("calendar has a missing (NaT) session")
    if sessions.tz is not None:
        sessions = sessions.tz_localize(None)
    return sessions.normalize().unique().sort_values()


def _mode(steps: pd.TimedeltaIndex) -> pd.Timedelta:
    values, counts = np.unique(np.asarray(steps), return_counts=True)
    return pd.Timedelta(values[np.argmax(counts)])  # ties: the shortest


def _days(ts: pd.DatetimeIndex) -> np.ndarray:
    """Calendar day numbers (int64, days since 1970-01-01) of tz-naive stamps."""
    return np.asarray(ts.values.astype("datetime64[D]"), dtype=np.int64)


def _has_weekend(days: np.ndarray) -> bool:
    return bool((((days + 3) % 7) >= 5).any())  # 1970-01-01 was a Thursday (Monday = 0)


def _is_daily(ts: pd.DatetimeIndex) -> bool:
    """One bar per calendar date, mostly a day apart (weekends and holidays may interrupt)."""
    steps = np.diff(_days(ts))
    if (steps < 1).any():
        return False
    counts = np.bincount(np.minimum(steps, 8))
    modal_step = int(np.argmax(counts))  # ties: the shortest
    return modal_step == 1 or (not _has_weekend(_days(ts)) and bool((steps <= 4).all()))


def _calendar_grid(ts: pd.DatetimeIndex) -> pd.DateOffset | None:
    """The anchored calendar offset (weekly, monthly, ...) the stamps lie on, if any."""
    offset = None
    if len(ts) >= 3:
        with warnings.catch_warnings():  # pandas 3 warns that infer_freq will return an offset
            warnings.simplefilter("ignore")
            name = pd.infer_freq(ts)
        offset = to_offset(name) if name is not None else None
    if offset is not None and not isinstance(offset, pd.offsets.Tick):
        return offset
    steps = ts[1:] - ts[:-1]
    if pd.Timedelta(days=27) <= _mode(steps) <= pd.Timedelta(days=31):
        for grid in _MONTH_GRIDS:
            if all(grid.is_on_offset(t) for t in ts):
                return grid
    return None


def _next_sessions(sessions: pd.DatetimeIndex, after: pd.Timestamp, n: int,
                   label: str) -> pd.DatetimeIndex:
    first = int(sessions.searchsorted(after.normalize(), side="right"))
    found = sessions[first:first + n]
    if len(found) < n:
        raise ValueError(f"calendar {label} has {len(found)} session(s) after {after.date()}, "
                         f"{n} needed; extend it")
    return found


def future_timestamps(ts: Any, pred_len: int, *, calendar: CalendarLike = None) -> pd.DatetimeIndex:
    """Stamps of the ``pred_len`` bars after the past stamps ``ts`` (see the module docs).

    Parameters
    ----------
    ts
        Past bar stamps, strictly increasing (a DatetimeIndex or anything
        ``pd.DatetimeIndex`` accepts); only these are read.
    pred_len
        Number of future stamps (>= 1).
    calendar
        None (infer from ``ts``), an exchange name such as ``"XNYS"``, or a DatetimeIndex
        of session dates; daily bars only.

    Returns
    -------
    DatetimeIndex of length ``pred_len``, named like ``ts``, in ``ts``'s time zone.
    """
    if isinstance(pred_len, bool) or not isinstance(pred_len, (int, np.integer)) or pred_len < 1:
        raise ValueError(f"pred_len must be an integer >= 1, got {pred_len!r}")
    index = pd.DatetimeIndex(ts)
    tz, name, n = index.tz, index.name, int(pred_len)
    wall = index.tz_localize(None) if tz is not None else index
    if len(wall) < (1 if calendar is not None else 2):
        raise ValueError(f"cannot infer future timestamps from {len(wall)} bar(s): at least 2 "
                         "are needed (or pass explicit future stamps)")
    last = wall[-1]
    time_of_day = last - last.normalize()
    if calendar is not None:
        if len(wall) >= 2 and not _is_daily(wall):
            raise ValueError("calendar= gives daily sessions, but these bars are not daily "
                             f"(most common spacing {_mode(wall[1:] - wall[:-1])})")
        sessions = calendar_sessions(calendar, start=last)
        label = repr(calendar) if isinstance(calendar, str) else "(given sessions)"
        future = _next_sessions(sessions, last, n, label) + time_of_day
    elif _is_daily(wall):
        first = last.normalize() + _DAY
        if _has_weekend(_days(wall)):
            days = pd.date_range(first, periods=n, freq="D")
        else:
            days = business_days(first, n)
        future = days + time_of_day
    elif (grid := _calendar_grid(wall)) is not None:
        future = pd.DatetimeIndex([last + k * grid for k in range(1, n + 1)])
    else:
        future = last + _mode(wall[1:] - wall[:-1]) * np.arange(1, n + 1)
    future = pd.DatetimeIndex(future, freq=None).as_unit(wall.unit)
    if tz is not None:
        future = future.tz_localize(tz, ambiguous=np.zeros(n, dtype=bool),
                                    nonexistent="shift_forward")
    return future.rename(name)

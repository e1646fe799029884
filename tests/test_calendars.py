"""future_timestamps: the series' own grid, weekends skipped, calendars, nothing after t."""
from __future__ import annotations

import builtins

import numpy as np
import pandas as pd
import pytest

from kronos_quant.calendars import calendar_sessions, future_timestamps


def stamps(*values: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(values)))


def test_daily_bars_at_16h_skip_the_weekend_and_keep_the_time():
    past = pd.bdate_range("2024-07-01", "2024-07-26") + pd.Timedelta("16h")  # ends on a Friday
    got = future_timestamps(past, 3)
    assert list(got) == list(stamps("2024-07-29 16:00", "2024-07-30 16:00", "2024-07-31 16:00"))


def test_daily_bars_converted_to_utc_stay_on_weekdays_in_utc():
    local = (pd.bdate_range("2024-03-01", "2024-03-29") + pd.Timedelta("16h")).tz_localize(
        "America/New_York")
    for past in (local.tz_convert("UTC"), local.tz_convert("UTC").tz_localize(None)):
        got = future_timestamps(past, 6)
        assert (got.day_of_week < 5).all()
        assert (got.hour == 20).all() and got.tz == past.tz  # 16:00 EDT is 20:00 UTC
        assert got[0].normalize() == pd.Timestamp("2024-04-01", tz=past.tz)


def test_midnight_business_days_and_holidays_in_the_history():
    past = pd.bdate_range("2023-12-18", "2023-12-29").delete(5)  # 25 Dec missing
    assert list(future_timestamps(past, 2)) == list(stamps("2024-01-01", "2024-01-02"))


def test_bars_with_weekends_continue_every_calendar_day():
    past = pd.date_range("2024-01-01", periods=10, freq="D")
    assert list(future_timestamps(past, 2)) == list(stamps("2024-01-11", "2024-01-12"))


@pytest.mark.parametrize("freq, want", [
    ("ME", ["2024-08-31", "2024-09-30", "2024-10-31"]),
    ("BME", ["2024-08-30", "2024-09-30", "2024-10-31"]),
    ("MS", ["2024-08-01", "2024-09-01", "2024-10-01"]),
    ("W-FRI", ["2024-08-02", "2024-08-09", "2024-08-16"]),
    ("QE", ["2024-09-30", "2024-12-31", "2025-03-31"]),
])
def test_calendar_grids_stay_on_their_grid(freq, want):
    past = pd.date_range(end="2024-07-31", periods=8, freq=freq)
    assert list(future_timestamps(past, 3)) == list(stamps(*want))


def test_month_ends_with_a_missing_month_and_a_time_of_day():
    past = (pd.date_range("2024-01-31", periods=7, freq="ME") + pd.Timedelta("16h")).delete(3)
    got = future_timestamps(past, 3)
    assert list(got) == list(stamps("2024-08-31 16:00", "2024-09-30 16:00", "2024-10-31 16:00"))


def test_intraday_uses_the_most_common_spacing_through_session_ends():
    past = pd.date_range("2024-01-02 15:00", "2024-01-02 15:55", freq="5min").delete(4)
    assert list(future_timestamps(past, 2)) == list(stamps("2024-01-02 16:00", "2024-01-02 16:05"))


def test_exchange_calendar_gives_the_next_sessions():
    past = pd.bdate_range("2024-06-24", "2024-07-03") + pd.Timedelta("16h")
    got = future_timestamps(past, 2, calendar="XNYS")  # 4 July is a holiday
    assert list(got) == list(stamps("2024-07-05 16:00", "2024-07-08 16:00"))
    one_bar = future_timestamps(past[-1:], 2, calendar="XNYS")
    assert list(one_bar) == list(got)


def test_user_sessions_and_their_errors():
    past = pd.bdate_range("2024-01-01", periods=5)
    sessions = stamps("2024-01-08", "2024-01-10", "2024-01-12")
    assert list(future_timestamps(past, 2, calendar=sessions)) == list(sessions[:2])
    with pytest.raises(ValueError, match="has 3 session.*4 needed"):
        future_timestamps(past, 4, calendar=sessions)
    with pytest.raises(ValueError, match="not daily"):
        future_timestamps(pd.date_range("2024-01-02 09:30", periods=5, freq="5min"), 2,
                          calendar=sessions)
    with pytest.raises(ValueError, match="unknown exchange calendar 'NOPE'"):
        future_timestamps(past, 2, calendar="NOPE")


def test_missing_exchange_calendars_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_calendars(name, *args, **kwargs):
        if name == "exchange_calendars":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_calendars)
    with pytest.raises(ImportError, match=r"kronos-quant\[calendars\]"):
        calendar_sessions("XNYS")


def test_future_stamps_follow_the_last_bar_and_bad_arguments_fail():
    past = pd.bdate_range("2023-01-02", "2023-12-29")
    for t in (100, 180, 250):
        assert (future_timestamps(past[:t + 1], 5) > past[t]).all()
    with pytest.raises(ValueError, match="pred_len must be an integer >= 1, got 0"):
        future_timestamps(past, 0)
    with pytest.raises(ValueError, match="from 1 bar"):
        future_timestamps(past[:1], 3)
    assert np.all(np.diff(future_timestamps(past, 30).asi8) > 0)

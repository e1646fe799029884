"""Tests for kronos_quant.data: validation, loaders, reshaping and synthetic generators."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest

from kronos_quant import data
from kronos_quant.data import (
    PANEL_COLUMNS,
    bar_spacing,
    dates,
    forward_returns,
    instruments,
    load_panel,
    panel_from_frames,
    panel_to_frames,
    periods_per_year,
    planted_signal,
    resample_panel,
    synthetic_ohlcv,
    synthetic_panel,
    unstack_field,
    validate_panel,
)


def _tiny_panel() -> pd.DataFrame:
    """3 days x 2 instruments; BBB is absent on day 2 so per-instrument shifts are visible."""
    rows = [
        ("2024-01-02", "AAA", 10.0),
        ("2024-01-02", "BBB", 20.0),
        ("2024-01-03", "AAA", 11.0),
        ("2024-01-04", "AAA", 12.1),
        ("2024-01-04", "BBB", 25.0),
    ]
    index = pd.MultiIndex.from_arrays(
        [pd.to_datetime([r[0] for r in rows]), [r[1] for r in rows]],
        names=["datetime", "instrument"],
    )
    close = np.array([r[2] for r in rows])
    return pd.DataFrame(
        {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 100.0,
         "amount": close * 100},
        index=index,
    )


def _assert_same_panel(left: pd.DataFrame, right: pd.DataFrame) -> None:
    # Text round trips may change the datetime unit (us vs ns), which is not a data change.
    def norm(p: pd.DataFrame) -> pd.DataFrame:
        levels = [p.index.get_level_values(0).as_unit("ns"),
                  p.index.get_level_values(1).astype(str)]
        return p.set_axis(pd.MultiIndex.from_arrays(levels, names=p.index.names), axis=0)

    pd.testing.assert_frame_equal(norm(left), norm(right), check_exact=False, rtol=1e-12,
                                  check_index_type=False)


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return synthetic_panel(n_instruments=4, n_bars=30, seed=7)


# --- validation -----------------------------------------------------------------------------


def test_validate_returns_float64_canonical_columns(panel: pd.DataFrame) -> None:
    messy = panel.assign(volume=panel["volume"].astype("int64"),
                         extra="x")[["extra", *PANEL_COLUMNS]]
    out = validate_panel(messy, require_amount=True)
    assert list(out.columns) == list(PANEL_COLUMNS)
    assert (out.dtypes == "float64").all()
    pd.testing.assert_index_equal(out.index, panel.index)


def test_validate_names_duplicate_row() -> None:
    p = _tiny_panel()
    dup = pd.concat([p, p.iloc[[2]]]).sort_index()
    with pytest.raises(ValueError, match=r"duplicate rows .*2024-01-03.*'AAA'"):
        validate_panel(dup)


def test_validate_missing_columns_named() -> None:
    with pytest.raises(ValueError, match=r"missing required columns \['volume'\]"):
        validate_panel(_tiny_panel().drop(columns="volume"))
    with pytest.raises(ValueError, match=r"missing required columns \['amount'\]"):
        validate_panel(_tiny_panel().drop(columns="amount"), require_amount=True)
    with pytest.raises(ValueError, match="case-sensitive"):
        validate_panel(_tiny_panel().rename(columns={"close": "Close"}))


def test_validate_unsorted_names_row() -> None:
    p = _tiny_panel()
    unsorted = p.iloc[[0, 2, 1, 3, 4]]
    with pytest.raises(ValueError, match=r"not sorted.*row 2 "
                                         r"\(datetime=2024-01-02 00:00:00, instrument='BBB'\)"):
        validate_panel(unsorted)


def test_validate_nan_names_column_and_row() -> None:
    p = _tiny_panel()
    p.loc[(pd.Timestamp("2024-01-04"), "BBB"), "high"] = np.nan
    with pytest.raises(ValueError,
                       match=r"column 'high' has non-finite value nan at .*2024-01-04.*'BBB'"):
        validate_panel(p)
    p = _tiny_panel()
    p.loc[(pd.Timestamp("2024-01-03"), "AAA"), "volume"] = np.inf
    with pytest.raises(ValueError,
                       match=r"'volume' has non-finite value inf at .*2024-01-03.*'AAA'"):
        validate_panel(p)


def test_validate_non_numeric_and_non_positive() -> None:
    with pytest.raises(TypeError, match=r"column 'close' must be numeric"):
        validate_panel(_tiny_panel().assign(close="10"))
    p = _tiny_panel()
    p.loc[(pd.Timestamp("2024-01-02"), "BBB"), "low"] = 0.0
    with pytest.raises(ValueError, match=r"'low' has non-positive price 0.0 at .*'BBB'"):
        validate_panel(p)
    p = _tiny_panel()
    p.loc[(pd.Timestamp("2024-01-02"), "AAA"), "volume"] = -1.0
    with pytest.raises(ValueError, match=r"'volume' has negative value -1.0"):
        validate_panel(p)


def test_validate_index_problems() -> None:
    p = _tiny_panel()
    with pytest.raises(ValueError, match=re.escape("panel.swaplevel().sort_index()")):
        validate_panel(p.swaplevel())
    with pytest.raises(TypeError, match="2-level MultiIndex"):
        validate_panel(p.reset_index(level="instrument"))
    with pytest.raises(ValueError, match="index names must be"):
        validate_panel(p.rename_axis(["date", "instrument"]))
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        validate_panel(p["close"])
    as_text = p.set_axis(p.index.set_levels(p.index.levels[0].astype(str), level=0), axis=0)
    with pytest.raises(TypeError, match="'datetime' level must be datetime64"):
        validate_panel(as_text)
    with pytest.raises(ValueError, match="panel is empty"):
        validate_panel(p.iloc[:0])


# --- frames <-> panel ------------------------------------------------------------------------


def test_frames_round_trip(panel: pd.DataFrame) -> None:
    frames = panel_to_frames(panel)
    assert list(frames) == instruments(panel) == ["SYN000", "SYN001", "SYN002", "SYN003"]
    first = frames["SYN000"]
    assert isinstance(first.index, pd.DatetimeIndex) and first.index.name == "datetime"
    pd.testing.assert_frame_equal(panel_from_frames(frames), panel)


def test_panel_from_frames_columns_and_volume(caplog: pytest.LogCaptureFixture) -> None:
    raw = {
        "X": pd.DataFrame(
            {"Date": ["2024-01-03", "2024-01-02"], "Open": [2.0, 1.0], "HIGH": ["2.5", "1.5"],
             "Low": [1.5, 0.5], "Close": [2.0, 1.0], "note": ["b", "a"]}
        ),
        "Y": pd.DataFrame(
            {"TimeStamps": ["2024-01-02"], "open": [5.0], "high": [6.0], "low": [4.0],
             "close": [5.0]}
        ),
    }
    with caplog.at_level(logging.WARNING, logger="kronos_quant.data"):
        out = panel_from_frames(raw)
    assert "no volume column" in caplog.text
    assert list(out.columns) == ["open", "high", "low", "close", "volume"]
    assert out.index.tolist() == [
        (pd.Timestamp("2024-01-02"), "X"), (pd.Timestamp("2024-01-02"), "Y"),
        (pd.Timestamp("2024-01-03"), "X"),
    ]
    assert out["high"].tolist() == [1.5, 6.0, 2.5]
    assert (out["volume"] == 0.0).all()


def test_panel_from_frames_errors() -> None:
    ok = pd.DataFrame(
        {"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0]},
        index=pd.to_datetime(["2024-01-02"]),
    )
    with pytest.raises(ValueError, match=r"instrument 'A': missing price columns \['close'\]"):
        panel_from_frames({"A": ok.drop(columns="close")})
    with pytest.raises(ValueError, match=r"instrument 'B': no timestamps: "
                                         r"no DatetimeIndex and no datetime column"):
        panel_from_frames({"B": ok.reset_index(drop=True)})
    with pytest.raises(TypeError, match=r"instrument 'C': column 'low' is not numeric: "
                                        r"value 'oops' at row 0"):
        panel_from_frames({"C": ok.assign(low=["oops"])})
    with pytest.raises(ValueError, match="frames is empty"):
        panel_from_frames({})


def test_one_input_path_case_prices_and_timezones(tmp_path, caplog) -> None:
    """load_panel and the predictor share one validator: same columns, aliases, rules, tz."""
    p = _tiny_panel()
    long = p.reset_index().rename(
        columns={"datetime": "TimeStamp", "volume": "Volume", "close": "CLOSE"}
    )
    long.to_csv(tmp_path / "upper.csv", index=False)
    _assert_same_panel(load_panel(tmp_path / "upper.csv"), p)  # Volume used, not dropped
    long.assign(close=long["CLOSE"]).to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(ValueError, match=r"columns 'CLOSE' and 'close' both match 'close'"):
        load_panel(tmp_path / "twice.csv")
    negative = long.copy()
    negative.loc[3, "CLOSE"] = -17.6
    negative.to_csv(tmp_path / "negative.csv", index=False)
    with pytest.raises(ValueError, match=r"instrument '(AAA|BBB)': column 'CLOSE' "
                                         r"has non-positive price -17.6 "
                                         r"at row \d \(2024-01-0\d 00:00:00\)"):
        load_panel(tmp_path / "negative.csv")
    aware = long.assign(
        TimeStamp=pd.to_datetime(long["TimeStamp"]).dt.tz_localize("America/New_York")
    )
    aware.to_parquet(tmp_path / "aware.parquet")
    with caplog.at_level(logging.INFO, logger="kronos_quant"):
        loaded = load_panel(tmp_path / "aware.parquet")
    assert "converted to their local wall-clock time" in caplog.text
    _assert_same_panel(loaded, p)  # the same wall-clock stamps, tz dropped
    tz_index = p.index.set_levels(p.index.levels[0].tz_localize("Asia/Tokyo"), level=0)
    _assert_same_panel(validate_panel(p.set_axis(tz_index, axis=0)), p)


# --- loaders ---------------------------------------------------------------------------------


def test_load_long_csv_round_trip(panel: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "long.csv"
    panel.to_csv(path)
    _assert_same_panel(load_panel(path), panel)


def test_load_long_parquet_round_trip(panel: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "long.parquet"
    panel.to_parquet(path)
    _assert_same_panel(load_panel(path), panel)


def test_load_long_csv_with_aliases(tmp_path) -> None:
    p = _tiny_panel().rename(index={"AAA": "000001", "BBB": "600000"})
    long = p.reset_index().rename(columns={"datetime": "Date", "instrument": "Symbol"})
    long["ignored"] = 1
    path = tmp_path / "aliases.csv"
    long.sample(frac=1.0, random_state=0).to_csv(path, index=False)
    loaded = load_panel(path)
    assert instruments(loaded) == ["000001", "600000"]  # leading zeros survive
    _assert_same_panel(loaded, p.sort_index())


def test_load_directory_round_trip(panel: pd.DataFrame, tmp_path) -> None:
    for name, frame in panel_to_frames(panel).items():
        frame.rename_axis("timestamps").to_csv(tmp_path / f"{name}.csv")
    (tmp_path / "README.txt").write_text("not data")
    _assert_same_panel(load_panel(tmp_path), panel)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_panel(tmp_path / "nope.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="has no .csv/.parquet/.pq files"):
        load_panel(empty)
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(ValueError, match=r"could not read .*broken\.parquet"):
        load_panel(bad)
    no_inst = tmp_path / "no_inst.csv"
    _tiny_panel().reset_index(level="instrument", drop=True).to_csv(no_inst)
    with pytest.raises(ValueError, match=r"instrument column 'instrument' not found"):
        load_panel(no_inst)


def test_load_with_freq_resamples(tmp_path) -> None:
    bars = synthetic_ohlcv(96, freq="5min", seed=3)
    bars.to_parquet(tmp_path / "ABC.parquet")
    out = load_panel(tmp_path, freq="30min")
    assert len(out) == 16  # 48 five-minute bars per day -> 8 half-hour bars per day
    first = bars.iloc[:6]
    row = out.iloc[0]
    assert row["open"] == first["open"].iloc[0] and row["close"] == first["close"].iloc[-1]
    assert row["high"] == first["high"].max() and row["low"] == first["low"].min()
    assert row["volume"] == pytest.approx(first["volume"].sum())
    assert out.index.get_level_values("datetime")[4] == pd.Timestamp("2024-01-02 13:00")
    with pytest.raises(ValueError, match="unrecognised freq 'fortnightly'"):
        resample_panel(out, "fortnightly")


# --- reshaping and returns ---------------------------------------------------------------------


def test_forward_returns_by_hand() -> None:
    p = _tiny_panel()
    r1 = forward_returns(p, horizon=1)
    assert r1.name == "fwd_ret_1"
    pd.testing.assert_index_equal(r1.index, p.index)
    # BBB's next bar is 2024-01-04 (it has no 2024-01-03 bar); each instrument's last bar has
    # no future.
    expected = [11.0 / 10.0 - 1, 25.0 / 20.0 - 1, 12.1 / 11.0 - 1, np.nan, np.nan]
    np.testing.assert_allclose(r1.to_numpy(), expected)
    r2 = forward_returns(p, horizon=2, log=True)
    assert r2.name == "fwd_ret_2"
    np.testing.assert_allclose(r2.to_numpy(), [np.log(12.1 / 10.0), np.nan, np.nan, np.nan, np.nan])
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        forward_returns(p, horizon=0)
    with pytest.raises(TypeError, match="horizon must be an int"):
        forward_returns(p, horizon=1.5)


def test_unstack_dates_instruments() -> None:
    p = _tiny_panel()
    wide = unstack_field(p, "close")
    assert wide.shape == (3, 2) and list(wide.columns) == ["AAA", "BBB"]
    assert np.isnan(wide.loc["2024-01-03", "BBB"]) and wide.loc["2024-01-04", "BBB"] == 25.0
    assert list(dates(p)) == list(pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"]))
    with pytest.raises(ValueError, match="field 'vwap' is not a panel column"):
        unstack_field(p, "vwap")


# --- synthetic data ----------------------------------------------------------------------------


def _assert_ohlc_consistent(frame: pd.DataFrame) -> None:
    assert (frame[["open", "high", "low", "close", "volume", "amount"]] > 0).all().all()
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()


def test_synthetic_ohlcv_intraday() -> None:
    bars = synthetic_ohlcv(600, freq="5min", seed=1)
    assert len(bars) == 600 and bars.index.name == "timestamps"
    assert list(bars.columns) == list(PANEL_COLUMNS)
    _assert_ohlc_consistent(bars)
    np.testing.assert_allclose(bars["amount"],
                               bars["volume"] * bars[["high", "low", "close"]].mean(axis=1))
    minutes = bars.index.hour * 60 + bars.index.minute
    in_session = ((minutes >= 570) & (minutes < 690)) | ((minutes >= 780) & (minutes < 900))
    assert in_session.all() and (bars.index.day_of_week < 5).all()
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert bars.index[0] == pd.Timestamp("2024-01-02 09:30")
    assert bars.index[24] == pd.Timestamp("2024-01-02 13:00")
    abs_ret = np.log(bars["close"]).diff().abs()
    assert abs_ret.corr(bars["volume"]) > 0.2
    # Volatility clustering: squared returns are positively autocorrelated.
    sq = abs_ret.dropna() ** 2
    assert sq.autocorr(1) > 0.05


def test_synthetic_ohlcv_daily_and_seeds() -> None:
    daily = synthetic_ohlcv(10, freq="D", start="2024-01-05", seed=2)
    assert list(daily.index) == list(pd.bdate_range("2024-01-05", periods=10))
    pd.testing.assert_frame_equal(synthetic_ohlcv(50, seed=4), synthetic_ohlcv(50, seed=4))
    assert not np.allclose(synthetic_ohlcv(50, seed=4)["close"],
                           synthetic_ohlcv(50, seed=5)["close"])
    with pytest.raises(ValueError, match="unrecognised freq 'bogus'"):
        synthetic_ohlcv(5, freq="bogus")
    with pytest.raises(TypeError, match="seed must be an int"):
        synthetic_ohlcv(5, seed=1.5)


def test_synthetic_panel_shape_and_determinism() -> None:
    p = synthetic_panel(n_instruments=5, n_bars=40, seed=11)
    assert validate_panel(p, require_amount=True).equals(p)
    assert instruments(p) == [f"SYN00{i}" for i in range(5)]
    assert len(dates(p)) == 40 and len(p) == 200
    _assert_ohlc_consistent(p)
    pd.testing.assert_frame_equal(p, synthetic_panel(n_instruments=5, n_bars=40, seed=11))
    assert not np.allclose(p["close"],
                           synthetic_panel(n_instruments=5, n_bars=40, seed=12)["close"])
    # Common market factor: instruments' returns co-move.
    rets = np.log(unstack_field(p)).diff().dropna()
    assert rets.corr().to_numpy()[np.triu_indices(5, 1)].mean() > 0.1
    with pytest.raises(ValueError, match=r"predictable must be in \[0, 1\), got 1.0"):
        synthetic_panel(predictable=1.0)


def test_planted_signal_predicts_next_return() -> None:
    def ic(predictable: float) -> float:
        p = synthetic_panel(n_instruments=20, n_bars=300, seed=0, predictable=predictable)
        return planted_signal(p).corr(forward_returns(p, horizon=1, log=True))

    assert ic(0.5) > 0.1
    assert abs(ic(0.0)) < 0.05


def test_planted_signal_matches_documented_recursion() -> None:
    p = synthetic_panel(n_instruments=2, n_bars=6, seed=3)
    close = unstack_field(p)["SYN001"].to_numpy()
    s, expected = 0.0, [0.0]
    for t in range(1, len(close)):
        s = (1 - data.SIGNAL_ALPHA) * s + data.SIGNAL_ALPHA * np.log(close[t] / close[t - 1])
        expected.append(s)
    got = planted_signal(p).xs("SYN001", level="instrument")
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-12, atol=1e-15)


def test_bar_spacing_is_the_median_gap():
    days = pd.DatetimeIndex(["2024-01-05", "2024-01-08", "2024-01-09", "2024-01-10", "2024-01-11"])
    assert bar_spacing(days) == pd.Timedelta(days=1)  # the weekend gap is not typical
    hours = pd.date_range("2024-01-01", periods=5, freq="4h", unit="us")
    assert bar_spacing(hours) == pd.Timedelta(hours=4)
    with pytest.raises(ValueError, match="at least two bars.*; pass freq="):
        bar_spacing(days[:1], option="freq=")


@pytest.mark.parametrize("freq,n,expected", [("B", 300, 252), ("D", 300, 365), ("h", 2000, 8760),
                                            ("W-FRI", 60, 52), ("ME", 30, 12)])
def test_periods_per_year(freq, n, expected):
    assert periods_per_year(pd.date_range("2022-01-03", periods=n, freq=freq)) == expected


def test_periods_per_year_counts_a_panels_bars_not_its_rows():
    """A panel's datetime level repeats each stamp once per instrument (4 here): still 252."""
    days = pd.date_range("2022-01-03", periods=300, freq="B")
    assert periods_per_year(days.repeat(4)) == 252


def test_periods_per_year_of_a_bar_length_is_a_24_7_market():
    assert periods_per_year(bar_seconds=3600) == 8760
    assert periods_per_year(bar_seconds=86400) == 365
    with pytest.raises(TypeError, match="stamps .index. or their length"):
        periods_per_year()
    with pytest.raises(ValueError, match="must be positive"):
        periods_per_year(bar_seconds=0)

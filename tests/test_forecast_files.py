"""One series in, a forecast's files out: data.read_series, forecast.forecast_summary and
write_forecast (the library behind ``kronos-quant forecast``, the demo and the live ledger)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kronos_quant.data import read_series, synthetic_ohlcv
from kronos_quant.forecast import Forecast, forecast_summary, quantile_table, write_forecast
from kronos_quant.inputs import BAR_COLUMNS, frame_timestamps


def _bars(n: int = 30) -> pd.DataFrame:
    return synthetic_ohlcv(n, freq="D", seed=1, start="2024-01-02")


def test_read_series_picks_one_instrument_and_keeps_its_codes(tmp_path):
    bars = _bars().rename_axis("date").reset_index()
    two = pd.concat([bars.assign(code="000001"), bars.assign(code="600000")])
    two.to_csv(tmp_path / "two.csv", index=False)
    one = read_series(tmp_path / "two.csv", instrument="000001")  # not read as the integer 1
    assert "code" not in one.columns and len(one) == len(bars)
    np.testing.assert_array_equal(one["close"].to_numpy(), bars["close"].to_numpy())
    with pytest.raises(ValueError, match="holds 2 series in column 'code' .000001, 600000."):
        read_series(tmp_path / "two.csv")
    with pytest.raises(ValueError, match="instrument '1' is not in column 'code'"):
        read_series(tmp_path / "two.csv", instrument="1")


def test_read_series_without_an_instrument_column(tmp_path):
    bars = _bars()
    bars.index.name = None  # an unnamed datetime index: the bars' stamps all the same
    bars.to_parquet(tmp_path / "bars.parquet")
    frame = read_series(tmp_path / "bars.parquet")
    pd.testing.assert_index_equal(frame_timestamps(frame), pd.DatetimeIndex(bars.index),
                                  check_names=False)
    with pytest.raises(ValueError, match="has no instrument column"):
        read_series(tmp_path / "bars.parquet", instrument="X")
    (tmp_path / "bars.txt").write_text("x")
    with pytest.raises(ValueError, match="expected a .csv or .parquet file, got '.txt'"):
        read_series(tmp_path / "bars.txt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_series(tmp_path / "missing.csv")


def _forecast() -> Forecast:
    history = _bars(40)
    rng = np.random.default_rng(0)
    last = history.iloc[-1].to_numpy()
    paths = last * np.exp(np.cumsum(rng.normal(0, 0.01, (50, 5, len(BAR_COLUMNS))), axis=1))
    index = pd.bdate_range(history.index[-1] + pd.Timedelta(days=1), periods=5)
    return Forecast(paths, index, history, name="SYN", model_label="tiny")


def test_forecast_summary_against_a_hand_computation():
    fc = _forecast()
    close = fc.paths[:, :, BAR_COLUMNS.index("close")]
    last = fc.history["close"].iloc[-1]
    summary = forecast_summary(fc)
    assert summary["samples"] == 50 and summary["pred_len"] == 5 and summary["model"] == "tiny"
    assert summary["median"] == pytest.approx(np.median(close[:, -1]))
    assert summary["q90"] == pytest.approx(np.quantile(close[:, -1], 0.9))
    assert summary["expected_return"] == pytest.approx(close[:, -1].mean() / last - 1)
    assert summary["prob_up"] == pytest.approx((close[:, -1] > last).mean())
    assert "path" not in summary and "scores" not in summary
    steps = forecast_summary(fc, per_step=True, scores={"s": np.float32(0.5)})["path"]
    assert steps["stamps"] == [str(t) for t in fc.index]
    np.testing.assert_allclose(steps["q50"], np.median(close, axis=0).round(8))
    np.testing.assert_allclose(steps["mean"], close.mean(axis=0).round(8))
    json.dumps(forecast_summary(fc, per_step=True, scores={"s": np.float32(0.5)}))


def test_write_forecast_writes_the_four_files(tmp_path):
    fc = _forecast()
    files, summary = write_forecast(fc, tmp_path / "out", quantiles=(0.2, 0.8),
                                    scores={"prob_up": 0.4})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "fan.png", "paths.csv", "quantiles.csv", "summary.json"]  # no temporary files left
    assert json.loads(files["summary"].read_text()) == summary
    assert summary["scores"] == {"prob_up": 0.4}
    paths = pd.read_csv(files["paths"])
    assert len(paths) == 50 * 5
    table = pd.read_csv(files["quantiles"], index_col="timestamp", parse_dates=True)
    expected = quantile_table(fc, (0.2, 0.8))
    assert list(table.columns[:3]) == ["open_mean", "open_q20", "open_q80"]
    np.testing.assert_allclose(table.to_numpy(), expected.to_numpy(), rtol=1e-12)
    assert list(table.index) == list(expected.index)

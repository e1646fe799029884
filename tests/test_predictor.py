"""KronosPredictor: reference numbers, sample paths, timestamps and bad input."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_quant import Forecast, KronosPredictor, inputs
from kronos_quant.charts import stamp_labels
from kronos_quant.generation import SamplingParams
from kronos_quant.inputs import prepare_series
from kronos_quant.predictor import checkpoint_label
from kronos_quant.testing import random_walk_bars as make_bars
from kronos_quant.testing import recompute_generate, tiny_pair

COLS = ["open", "high", "low", "close", "volume", "amount"]


def reference_pipeline(pair, df, x_ts, y_ts, pred_len, *, max_context, sampling, clip=5.0):
    """The spec's forecast pipeline written out step by step, with full-window recompute."""
    tok, model = pair
    df = df.copy()
    if "volume" not in df:
        df["volume"], df["amount"] = 0.0, 0.0
    if "amount" not in df:
        df["amount"] = df["volume"] * df[["open", "high", "low", "close"]].mean(axis=1)
    x = df[COLS].to_numpy().astype(np.float32)
    mean, std = x.mean(axis=0), x.std(axis=0)
    x = np.clip((x - mean) / (std + 1e-5), -clip, clip)

    def stamps(ts):
        ts = pd.Series(pd.DatetimeIndex(ts))
        return np.stack([ts.dt.minute, ts.dt.hour, ts.dt.day_of_week, ts.dt.day, ts.dt.month],
                        axis=1).astype(np.float32)

    bars = recompute_generate(model, tok, torch.from_numpy(x)[None],
                              torch.from_numpy(stamps(x_ts))[None],
                              torch.from_numpy(stamps(y_ts))[None], pred_len=pred_len,
                              max_context=max_context, sampling=sampling)
    preds = bars[0].numpy().mean(axis=0)
    return preds * (std + 1e-5) + mean


@pytest.mark.parametrize("n, max_context, pred_len", [(24, 64, 6), (30, 32, 6), (40, 32, 5)])
def test_greedy_predict_matches_the_reference_pipeline(pair, n, max_context, pred_len):
    df = make_bars(n)
    x_ts = pd.Series(df.index)
    y_ts = pd.Series(pd.bdate_range(df.index[-1] + pd.offsets.BDay(1), periods=pred_len))
    predictor = KronosPredictor(pair[1], pair[0], device="cpu", max_context=max_context)
    got = predictor.predict(df.reset_index(drop=True), x_ts, y_ts, pred_len=pred_len, top_k=1,
                            verbose=False)
    want = reference_pipeline(pair, df, x_ts, y_ts, pred_len, max_context=max_context,
                              sampling=SamplingParams(top_k=1))
    assert list(got.columns) == COLS
    assert (got.index == pd.Index(y_ts)).all()
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-5, atol=1e-5)


def test_sampled_predict_draws_like_the_reference_from_the_global_rng(pair, bars):
    predictor = KronosPredictor(pair[1], pair[0], device="cpu", max_context=32)
    y_ts = pd.bdate_range(bars.index[-1] + pd.offsets.BDay(1), periods=6)
    torch.manual_seed(11)
    got = predictor.predict(bars, bars.index, y_ts, pred_len=6, T=0.8, top_p=0.9,
                            sample_count=5, verbose=False)
    torch.manual_seed(11)
    want = reference_pipeline(pair, bars, bars.index, y_ts, 6, max_context=32,
                              sampling=SamplingParams(T=0.8, top_p=0.9, sample_count=5))
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-5, atol=1e-5)


def test_greedy_is_deterministic_and_survives_train_mode(pair, bars):
    tok, model = pair
    model.train()
    tok.train()
    predictor = KronosPredictor(model, tok, device="cpu", max_context=32)
    a = predictor.predict(bars, None, None, pred_len=4, top_k=1, verbose=False)
    b = predictor.predict(bars, None, None, pred_len=4, top_k=1, verbose=False)
    pd.testing.assert_frame_equal(a, b)


def test_seed_reproduces_paths_without_touching_global_rng(predictor, bars):
    state = torch.get_rng_state()
    f1 = predictor.forecast(bars, pred_len=5, sample_count=8, seed=3)
    f2 = predictor.forecast(bars, pred_len=5, sample_count=8, seed=3)
    f3 = predictor.forecast(bars, pred_len=5, sample_count=8, seed=4)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(f1.paths, f2.paths)
    assert not np.array_equal(f1.paths, f3.paths)


def test_forecast_holds_every_path_and_its_mean_is_predicts_output(predictor, bars):
    fc = predictor.forecast(bars, pred_len=6, sample_count=12, seed=5, name="AAA")
    assert isinstance(fc, Forecast) and fc.name == "AAA"
    assert fc.paths.shape == (12, 6, 6)
    assert len(fc.index) == 6 and fc.index[0] > bars.index[-1]
    torch.manual_seed(5)  # the global generator seeded alike draws the same stream
    mean = predictor.predict(bars, None, fc.index, pred_len=6, sample_count=12, verbose=False)
    np.testing.assert_allclose(fc.mean().to_numpy(), mean.to_numpy(), rtol=1e-5, atol=1e-4)
    q = fc.quantile([0.1, 0.5, 0.9])
    assert (q[0.1] <= q[0.5] + 1e-9).all().all() and (q[0.5] <= q[0.9] + 1e-9).all().all()
    pd.testing.assert_frame_equal(q[0.5], fc.median(), check_names=False)
    long = fc.to_frame()
    assert list(long.columns) == ["sample", "timestamp", *COLS]
    assert len(long) == 72 and long["sample"].nunique() == 12
    np.testing.assert_array_equal(long[long["sample"] == 3][COLS].to_numpy(), fc.paths[3])
    pd.testing.assert_series_equal(fc.last, fc.history.iloc[-1])


def test_fan_chart_is_written(predictor, bars, tmp_path):
    fc = predictor.forecast(bars, pred_len=5, sample_count=8, seed=1)
    fig = fc.plot(tmp_path / "fan.png")
    assert (tmp_path / "fan.png").stat().st_size > 10_000
    assert len(fig.axes[0].collections) == 2  # the two bands


def test_batch_of_different_lengths_equals_one_by_one(predictor):
    series = {"A": make_bars(30, seed=1), "B": make_bars(22, seed=2), "C": make_bars(30, seed=3)}
    batch = predictor.forecast_batch(series, pred_len=4, sample_count=3, top_k=1)
    assert list(batch) == ["A", "B", "C"]
    for key, df in series.items():
        alone = predictor.forecast(df, pred_len=4, sample_count=3, top_k=1)
        np.testing.assert_allclose(batch[key].paths, alone.paths, rtol=1e-5, atol=1e-5)
        assert batch[key].name == key
    lists = predictor.predict_batch(list(series.values()), [None] * 3, [None] * 3, pred_len=4,
                                    top_k=1, verbose=False)
    for df_pred, fc in zip(lists, batch.values(), strict=True):
        np.testing.assert_allclose(df_pred.to_numpy(), fc.mean().to_numpy(), rtol=1e-5)


def test_timestamps_from_index_or_columns_and_inferred_future(predictor):
    daily = make_bars(30, freq="B")  # ends on a business day
    from_index = predictor.forecast(daily, pred_len=3, top_k=1, sample_count=1)
    for col in ("timestamps", "date", "datetime"):
        frame = daily.reset_index(drop=True)
        frame[col] = daily.index
        fc = predictor.forecast(frame, pred_len=3, top_k=1, sample_count=1)
        np.testing.assert_array_equal(fc.paths, from_index.paths)
    assert all(ts.weekday() < 5 for ts in from_index.index)
    assert from_index.index[0] == daily.index[-1] + pd.offsets.BDay(1)
    intraday = make_bars(30, freq="5min", start="2024-03-01 09:30")
    fc = predictor.forecast(intraday, pred_len=3, top_k=1, sample_count=1)
    assert list(fc.index) == list(intraday.index[-1] + pd.to_timedelta([5, 10, 15], "min"))
    explicit = pd.date_range("2030-01-01", periods=3, freq="h")
    fc = predictor.forecast(intraday, pred_len=3, y_timestamp=explicit, top_k=1, sample_count=1)
    assert list(fc.index) == list(explicit)


def test_columns_match_in_any_case_and_tz_aware_stamps_use_their_wall_clock(predictor, caplog):
    bars = make_bars(30, freq="B")
    want = predictor.forecast(bars, pred_len=3, top_k=1, sample_count=1)
    upper = bars.rename(columns=str.title)  # Open, High, Low, Close, Volume: all used
    assert list(upper.columns) == ["Open", "High", "Low", "Close", "Volume"]
    got = predictor.forecast(upper, pred_len=3, top_k=1, sample_count=1)
    np.testing.assert_array_equal(got.paths, want.paths)
    np.testing.assert_array_equal(got.history.to_numpy(), want.history.to_numpy())
    for alias in ("timestamp", "Time", " DateTime "):
        frame = upper.reset_index(drop=True)
        frame[alias] = bars.index
        fc = predictor.forecast(frame, pred_len=3, top_k=1, sample_count=1)
        np.testing.assert_array_equal(fc.paths, want.paths)
    aware = bars.tz_localize("Europe/Paris")
    with caplog.at_level(logging.INFO, logger="kronos_quant"):
        fc = predictor.forecast(aware, pred_len=3, top_k=1, sample_count=1)
    assert "converted to their local wall-clock time" in caplog.text
    np.testing.assert_array_equal(fc.paths, want.paths)
    assert fc.index.equals(want.index) and fc.history.index.tz is None


def test_volume_and_amount_are_filled_like_the_reference():
    no_volume = make_bars(20, volume=False)
    prep = prepare_series(no_volume, pred_len=2)
    assert (prep.raw[:, 4:] == 0).all()
    with_volume = make_bars(20)
    prep = prepare_series(with_volume, pred_len=2)
    typical = with_volume[["open", "high", "low", "close"]].mean(axis=1).to_numpy()
    np.testing.assert_allclose(prep.raw[:, 5], with_volume["volume"] * typical, rtol=1e-6)


def test_long_context_is_logged_and_matches_the_reference(pair, caplog, monkeypatch):
    monkeypatch.setattr(inputs, "_WARNED", set())  # as in a fresh process
    df = make_bars(45)
    predictor = KronosPredictor(pair[1], pair[0], device="cpu", max_context=20)
    with caplog.at_level(logging.INFO, logger="kronos_quant"):
        got = predictor.predict(df, None, None, pred_len=4, top_k=1, verbose=False)
    assert "context of 45 bars exceeds max_context=20" in caplog.text
    want = reference_pipeline(pair, df, df.index, got.index, 4, max_context=20,
                              sampling=SamplingParams(top_k=1))
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-5, atol=1e-5)


def _frame_with(df, col, row, value):
    out = df.copy()
    out.iloc[row, out.columns.get_loc(col)] = value
    return out


BAD_FRAMES = [
    (lambda d: d.drop(columns=["high", "low"]), ValueError,
     r"missing price columns \['high', 'low'\]"),
    (lambda d: _frame_with(d, "close", 7, np.nan), ValueError,
     r"column 'close' has non-finite value nan at row 7 \(2024-01-09"),
    (lambda d: _frame_with(d, "volume", 3, np.inf), ValueError,
     r"'volume' has non-finite value inf at row 3"),
    (lambda d: _frame_with(d, "close", 5, -17.6), ValueError,
     r"column 'close' has non-positive price -17.6 at row 5 \(2024-01-0"),
    (lambda d: _frame_with(d, "low", 2, 0.0), ValueError,
     r"column 'low' has non-positive price 0.0 at row 2"),
    (lambda d: _frame_with(d, "volume", 4, -1.0), ValueError,
     r"column 'volume' has negative value -1.0 at row 4"),
    (lambda d: d.assign(open="x"), TypeError, r"column 'open' is not numeric: value 'x' at row 0"),
    (lambda d: d.assign(Close=d["close"]), ValueError,
     r"columns 'close' and 'Close' both match 'close'"),
    (lambda d: d.iloc[[0, 2, 1, 3, 4, 5]], ValueError, r"non-increasing timestamp at position 2"),
    (lambda d: d.iloc[[0, 1, 1, 2, 3]], ValueError, r"duplicate timestamp at position 2"),
    (lambda d: d.iloc[:0], ValueError, r"empty"),
    (lambda d: d.iloc[:15], ValueError,
     r"context has 15 bar\(s\); forecasting needs at least 16 \(MIN_CONTEXT\)"),
    (lambda d: d.to_numpy(), TypeError, r"expected a pandas DataFrame"),
]


@pytest.mark.parametrize("make, exc, message", BAD_FRAMES)
def test_bad_frames_get_one_clear_error(predictor, bars, make, exc, message):
    with pytest.raises(exc, match=message):
        predictor.forecast(make(bars), pred_len=3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sample_count=0), "sample_count must be an integer ≥ 1"),
    (dict(T=0.0), "temperature T must be > 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(top_k=-1), "top_k must be an integer ≥ 0"),
    (dict(pred_len=0), "pred_len must be an integer in 1..32"),
    (dict(pred_len=33), "pred_len must be an integer in 1..32"),
    (dict(y_timestamp=pd.date_range("2030-01-01", periods=2)),
     "y_timestamp has 2 entries but pred_len is 3"),
    (dict(x_timestamp=pd.date_range("2030-01-01", periods=5)),
     "x_timestamp has 5 entries for 40 rows"),
])
def test_bad_arguments_get_one_clear_error(predictor, bars, kwargs, message):
    kwargs = {"pred_len": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        predictor.forecast(bars, **kwargs)


def test_frame_without_timestamps_and_bad_device(pair, bars):
    predictor = KronosPredictor(pair[1], pair[0], device="cpu")
    with pytest.raises(ValueError, match="no timestamps: no DatetimeIndex and no datetime column"):
        predictor.forecast(bars.reset_index(drop=True), pred_len=2)
    both = bars.reset_index(drop=True).assign(date=bars.index, Time=bars.index)
    with pytest.raises(ValueError, match=r"ambiguous datetime columns \['date', 'Time'\]"):
        predictor.forecast(both, pred_len=2)
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        KronosPredictor(pair[1], pair[0], device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            KronosPredictor(pair[1], pair[0], device="cuda:0")


def test_mismatched_tokenizer_is_rejected():
    from kronos_quant.config import KronosConfig
    from kronos_quant.model import Kronos

    tok, _ = tiny_pair(0)
    other = Kronos.from_config(KronosConfig(s1_bits=4, s2_bits=4, n_layers=1, d_model=16,
                                            n_heads=2, ff_dim=32))
    with pytest.raises(ValueError, match="tokenizer bits"):
        KronosPredictor(other, tok, device="cpu")


def test_no_volume_warns_once_per_process_then_debug(predictor, bars, caplog, monkeypatch):
    monkeypatch.setattr(inputs, "_WARNED", set())  # as in a fresh process
    prices = bars[["open", "high", "low", "close"]]
    with caplog.at_level(logging.DEBUG, logger="kronos_quant.inputs"):
        for _ in range(3):  # the reference's "prediction without volume" loop
            predictor.predict(prices, None, None, pred_len=2, top_k=1, verbose=False)
    levels = [r.levelno for r in caplog.records if "no volume column" in r.message]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]


def test_model_label_names_the_checkpoints_on_every_forecast_and_chart(tiny_dirs, pair, bars):
    tok_dir, model_dir = tiny_dirs
    want = f"{model_dir.parent.name}/model + {tok_dir.parent.name}/tokenizer"
    loaded = KronosPredictor.from_pretrained(str(model_dir), str(tok_dir), device="cpu")
    assert loaded.model_label == want
    fc = loaded.forecast(bars, pred_len=3, sample_count=2, seed=0)
    assert fc.model_label == want
    assert f"model: {want}" in [t.get_text() for t in fc.plot(None).texts]
    batch = loaded.forecast_batch({"A": bars, "B": bars.iloc[:-4]}, pred_len=3, sample_count=2,
                                  seed=0)
    assert [f.model_label for f in batch.values()] == [want, want]
    named = KronosPredictor.from_pretrained(str(model_dir), str(tok_dir), device="cpu",
                                            model_label="mine")
    assert named.model_label == "mine"
    tok, model = pair
    assert KronosPredictor(model, tok, device="cpu").forecast(
        bars, pred_len=2, sample_count=1, seed=0).model_label is None
    assert KronosPredictor(model, tok, device="cpu", model_label="tiny").forecast(
        bars, pred_len=2, sample_count=1, seed=0).model_label == "tiny"
    # Hub ids keep their owner/name form (no download: the label is text only).
    assert (checkpoint_label("NeoQuasar/Kronos-small", "NeoQuasar/Kronos-Tokenizer-base")
            == "NeoQuasar/Kronos-small + NeoQuasar/Kronos-Tokenizer-base")


def test_tick_labels_drop_the_time_of_day_only_for_daily_bars():
    days = pd.date_range("2024-01-02", periods=3, freq="D")
    assert stamp_labels(days) == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert stamp_labels(days + pd.Timedelta("16h")) == ["2024-01-02 16:00", "2024-01-03 16:00",
                                                         "2024-01-04 16:00"]

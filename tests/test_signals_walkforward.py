"""Walk-forward scoring: no look-ahead, batching-independent seeds, the Parquet cache, errors."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from signals_support import one_thread  # noqa: F401  (autouse fixture)

import kronos_quant
import kronos_quant.predictor as predictor_module
from kronos_quant.data import synthetic_ohlcv, synthetic_panel
from kronos_quant.signals import (
    PanelForecasts,
    forecast_panel,
    rebalance_dates,
    score_forecast,
    score_panel,
    window_seed,
)
from kronos_quant.signals.cache import module_fingerprint
from kronos_quant.signals.store import read_scores, write_scores

LOOKBACK, PRED_LEN, SAMPLES = 16, 3, 4
OPTS = dict(lookback=LOOKBACK, pred_len=PRED_LEN, sample_count=SAMPLES, seed=7, verbose=False)


@pytest.fixture(scope="module")
def panel():
    return synthetic_panel(6, 40, seed=11, predictable=0.3)


def _perturb_after(panel: pd.DataFrame, t: pd.Timestamp, seed: int = 0) -> pd.DataFrame:
    """Every bar after ``t`` (to the far end) gets new prices and volumes; bars ≤ t are kept."""
    out = panel.copy()
    later = out.index.get_level_values("datetime") > t
    rng = np.random.default_rng(seed)
    factor = np.exp(rng.normal(0.0, 0.3, size=int(later.sum())))
    for col in ("open", "high", "low", "close", "amount"):
        out.loc[later, col] = out.loc[later, col].to_numpy() * factor
    out.loc[later, "volume"] = out.loc[later, "volume"].to_numpy() * 3.0
    return out


def _count_series(monkeypatch, predictor) -> list[int]:
    """Record how many series each forecast_arrays call generates."""
    calls: list[int] = []
    original = predictor.forecast_arrays

    def counting(values, *args, **kwargs):
        calls.append(len(values))
        return original(values, *args, **kwargs)

    monkeypatch.setattr(predictor, "forecast_arrays", counting)
    return calls


def test_scores_follow_the_signal_contract(predictor, panel):
    scores = score_panel(predictor, panel, **OPTS)
    assert list(scores.index.names) == ["datetime", "instrument"]
    assert scores.index.is_monotonic_increasing and scores.index.is_unique
    assert (scores.dtypes == np.float64).all()
    # Every instrument has a bar on every date: windows start at the lookback-th date.
    dates = panel.index.get_level_values("datetime").unique()
    assert scores.index.get_level_values("datetime").unique().equals(
        pd.DatetimeIndex(dates[LOOKBACK - 1:], name="datetime"))
    assert len(scores) == 6 * (40 - LOOKBACK + 1)
    assert scores.drop(columns="sharpe").notna().all().all()


def test_no_look_ahead_perturbing_the_future_leaves_past_scores_bit_identical(predictor, panel):
    dates = panel.index.get_level_values("datetime").unique()
    t = dates[25]
    base = score_panel(predictor, panel, **OPTS)
    moved = score_panel(predictor, _perturb_after(panel, t), **OPTS)
    past, future = base.loc[:t], base.loc[dates[26]:]
    assert len(past) == 6 * (26 - LOOKBACK + 1)
    assert np.array_equal(past.to_numpy(), moved.loc[:t].to_numpy(), equal_nan=True)
    # The perturbation is real: scores after t move.
    assert not np.allclose(future.to_numpy(), moved.loc[dates[26]:].to_numpy(), equal_nan=True)


def test_no_look_ahead_truncating_the_panel(predictor, panel):
    """A score at t is the same whether or not later dates exist (batches of one date)."""
    dates = panel.index.get_level_values("datetime").unique()
    t = dates[30]
    opts = dict(OPTS, batch_size=6, start=dates[26])  # one date per call
    full = score_panel(predictor, panel, end=dates[34], **opts)
    cut = score_panel(predictor, panel.loc[:t], **opts)
    assert len(cut) == 6 * 5
    assert np.array_equal(full.loc[:t].to_numpy(), cut.to_numpy(), equal_nan=True)


@pytest.fixture(scope="module")
def holiday_panel():
    """Business days from 2023 with the NYSE holidays removed, running a year past July 2023."""
    pytest.importorskip("exchange_calendars")
    from kronos_quant.calendars import calendar_sessions

    raw = synthetic_panel(3, 420, seed=5, start="2023-01-03")
    # through our one door to exchange_calendars (its pandas-3 deprecations are contained there)
    sessions = calendar_sessions("XNYS", start="2023-01-01")
    keep = raw.index.get_level_values("datetime").isin(sessions)
    return raw[keep]


@pytest.mark.parametrize("calendar", [None, "XNYS"])
def test_score_at_t_ignores_a_year_of_later_rows_with_holidays(predictor, holiday_panel, calendar):
    t = pd.Timestamp("2023-07-03")  # the next day, 4 July, is a holiday (absent from the panel)
    dates = holiday_panel.index.get_level_values("datetime").unique()
    assert dates[-1] > t + pd.Timedelta(days=365) and pd.Timestamp("2023-07-04") not in dates
    opts = dict(OPTS, start=dates[dates.get_loc(t) - 2], end=t, calendar=calendar)
    long = score_panel(predictor, holiday_panel, **opts)
    cut = score_panel(predictor, holiday_panel.loc[:t], **opts)
    assert len(cut) == 3 * 3
    assert np.array_equal(long.to_numpy(), cut.to_numpy(), equal_nan=True)
    future = forecast_panel(predictor, holiday_panel.loc[:t], **dict(opts, start=t)).future[0]
    first = "2023-07-05" if calendar == "XNYS" else "2023-07-04"
    assert pd.Timestamp(future[0]) == pd.Timestamp(first)


def test_same_seed_same_scores_and_other_seed_differs(predictor, panel):
    opts = dict(OPTS, end=panel.index.get_level_values("datetime").unique()[20])
    a = score_panel(predictor, panel, **opts)
    b = score_panel(predictor, panel, **opts)
    c = score_panel(predictor, panel, **dict(opts, seed=8))
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["expected_return"], c["expected_return"])


def test_a_window_score_equals_forecasting_that_window_alone(predictor, panel):
    """Batching many windows gives the same paths as forecasting one with its derived seed."""
    scores = score_panel(predictor, panel, **OPTS)
    dates = panel.index.get_level_values("datetime").unique()
    t, inst = dates[22], "SYN003"
    history = panel.xs(inst, level="instrument").loc[:t].iloc[-LOOKBACK:]
    fc = predictor.forecast(history, pred_len=PRED_LEN, sample_count=SAMPLES,
                            seed=window_seed(7, inst, t))
    alone = score_forecast(fc, list(scores.columns), clip=predictor.clip)
    np.testing.assert_allclose(scores.loc[(t, inst)].to_numpy(), alone.to_numpy(),
                               rtol=1e-4, atol=1e-6)


def test_per_series_seeds_make_paths_independent_of_batch_mates(predictor):
    frames = [synthetic_ohlcv(24, freq="D", seed=i) for i in range(4)]
    together = predictor.forecast_batch(frames, pred_len=3, sample_count=4, seed=[5, 6, 7, 8])
    alone = predictor.forecast_batch(frames[2:3], pred_len=3, sample_count=4, seed=[7])
    np.testing.assert_allclose(together[2].paths[..., :4], alone[0].paths[..., :4], rtol=1e-5)
    with pytest.raises(ValueError, match="2 seeds for 4 series"):
        predictor.forecast_batch(frames, pred_len=3, sample_count=4, seed=[1, 2])


def test_rerun_reads_the_cache_without_calling_the_model(predictor, panel, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = score_panel(predictor, panel, cache_dir=cache, **OPTS)
    files = sorted(cache.glob("forecasts-*.parquet"))
    assert files and pd.read_parquet(files[0]).columns.tolist()[:4] == ["key", "sample", "step",
                                                                        "timestamp"]

    def no_model(*args, **kwargs):
        raise AssertionError("the model was called although every window is cached")

    monkeypatch.setattr(predictor_module, "generate", no_model)
    again = score_panel(predictor, panel, cache_dir=cache, **OPTS)
    pd.testing.assert_frame_equal(first, again)
    # Other scorer settings work from the cached paths too: mean log return < mean return.
    logged = score_panel(predictor, panel, cache_dir=cache, scorers=["expected_return"],
                         log=True, **OPTS)
    assert (logged["expected_return"] < first["expected_return"]).all()


def test_partly_cached_run_matches_an_uncached_one(predictor, panel, tmp_path, monkeypatch):
    dates = panel.index.get_level_values("datetime").unique()
    cache = tmp_path / "cache"
    score_panel(predictor, panel, cache_dir=cache, end=dates[27], **OPTS)
    calls = _count_series(monkeypatch, predictor)
    resumed = score_panel(predictor, panel, cache_dir=cache, **OPTS)
    assert sum(calls) == 6 * (40 - 28)  # only the windows after the cached range ran
    fresh = score_panel(predictor, panel, **OPTS)
    np.testing.assert_allclose(resumed.to_numpy(), fresh.to_numpy(), rtol=1e-4, atol=1e-6)


def test_cache_misses_when_weights_or_sampling_change(predictor, panel, tmp_path, monkeypatch):
    opts = dict(OPTS, end=panel.index.get_level_values("datetime").unique()[18])
    cache = tmp_path / "cache"
    score_panel(predictor, panel, cache_dir=cache, **opts)
    calls = _count_series(monkeypatch, predictor)
    score_panel(predictor, panel, cache_dir=cache, T=0.7, **opts)
    assert sum(calls) == 6 * 4  # dates 15..18, all six instruments
    with torch.no_grad():
        next(predictor.model.parameters()).add_(0.01)  # in-place edit: fingerprint must change
    score_panel(predictor, panel, cache_dir=cache, **opts)
    assert sum(calls) == 2 * 6 * 4


def test_forecast_panel_keeps_every_path(predictor, panel):
    fp = forecast_panel(predictor, panel, batch_size=10, **OPTS)
    assert isinstance(fp, PanelForecasts) and len(fp) == 6 * 25
    assert fp.batch.paths.shape == (150, SAMPLES, PRED_LEN, 6)
    assert fp.future.shape == (150, PRED_LEN)
    # Future stamps come from the window alone: here (business days, no holidays) they are
    # the panel's next dates.
    dates = panel.index.get_level_values("datetime").unique()
    assert pd.DatetimeIndex(fp.future[0]).equals(
        pd.DatetimeIndex(dates[LOOKBACK:LOOKBACK + PRED_LEN]))
    assert fp.score().attrs == fp.meta | {"log": False}
    # Other batch shapes change float rounding only, not the sampled tokens.
    np.testing.assert_allclose(fp.score().to_numpy(),
                               score_panel(predictor, panel, **OPTS).to_numpy(),
                               rtol=1e-4, atol=1e-6)


def test_scores_carry_their_settings_through_parquet_and_csv(predictor, panel, tmp_path):
    dates = panel.index.get_level_values("datetime").unique()
    scores = score_panel(predictor, panel, end=dates[17], **OPTS)
    attrs = scores.attrs
    assert {k: attrs[k] for k in ("lookback", "pred_len", "sample_count", "T", "top_k", "top_p",
                                  "seed", "slide_block", "freq", "calendar", "log")} == dict(
        lookback=LOOKBACK, pred_len=PRED_LEN, sample_count=SAMPLES, T=1.0, top_k=0, top_p=0.9,
        seed=7, slide_block=1, freq=1, calendar=None, log=False)
    assert attrs["model_fingerprint"] == module_fingerprint(predictor.model)
    assert attrs["tokenizer_fingerprint"] == module_fingerprint(predictor.tokenizer)
    assert attrs["model_fingerprint"] != attrs["tokenizer_fingerprint"]
    assert attrs["kronos_quant_version"] == kronos_quant.__version__
    assert json.loads(json.dumps(attrs)) == attrs
    for name in ("scores.parquet", "scores.csv"):
        back = read_scores(write_scores(scores, tmp_path / name))
        assert back.attrs == attrs
        np.testing.assert_allclose(back.to_numpy(), scores.to_numpy(), rtol=1e-12)
    assert (tmp_path / "scores.csv.attrs.json").is_file()
    sessions = pd.DatetimeIndex(dates[:30])
    other = score_panel(predictor, panel, start=dates[16], end=dates[17], calendar=sessions, **OPTS)
    assert other.attrs["calendar"] == f"30 given sessions {dates[0].date()}..{dates[29].date()}"


def test_tz_aware_panel_scores_like_its_wall_clock_times(predictor, panel):
    dates = panel.index.get_level_values("datetime").unique()
    aware = panel.set_axis(panel.index.set_levels(
        panel.index.levels[0].tz_localize("America/New_York"), level=0), axis=0)
    opts = dict(OPTS, start=dates[16], end=dates[17])
    pd.testing.assert_frame_equal(score_panel(predictor, aware, **opts),
                                  score_panel(predictor, panel, **opts))


def test_rebalance_dates():
    cal = pd.bdate_range("2024-01-01", periods=15)
    assert rebalance_dates(cal).equals(pd.DatetimeIndex(cal, name="datetime"))
    every3 = rebalance_dates(cal, 3, start=cal[4])
    assert list(every3) == [cal[6], cal[9], cal[12]]  # grid anchored at the first panel date
    weekly = rebalance_dates(cal, "W")
    assert list(weekly) == [cal[4], cal[9], cal[14]]  # the Fridays
    with pytest.raises(ValueError, match="unrecognised freq"):
        rebalance_dates(cal, "fortnightly")
    with pytest.raises(ValueError, match="no rebalance dates"):
        rebalance_dates(cal, start="2024-01-06", end="2024-01-07")  # a weekend
    with pytest.raises(ValueError, match="is after end"):
        rebalance_dates(cal, start="2030-01-01")
    with pytest.raises(ValueError, match="freq must be an integer"):
        rebalance_dates(cal, 0)


def test_short_histories_are_skipped_and_logged(predictor, panel, caplog):
    when = panel.index.get_level_values("datetime")
    who = panel.index.get_level_values("instrument")
    # SYN005 lists 30 calendar days late; SYN004 keeps only its bars of the last 13 days.
    late = (who == "SYN005") & (when < when[0] + pd.Timedelta(days=30))
    gone = (who == "SYN004") & (when < when[-1] - pd.Timedelta(days=13))
    thin = panel[~(late | gone)]
    with caplog.at_level(logging.INFO, logger="kronos_quant.signals.walkforward"):
        scores = score_panel(predictor, thin, **OPTS)
    n_late = len(thin.xs("SYN004", level="instrument"))
    assert n_late < LOOKBACK
    skipped = 4 * (LOOKBACK - 1) + (LOOKBACK - 1) + n_late
    assert f"skipped {skipped} (date, instrument) pairs with fewer than 16 bars" in caplog.text
    assert "never scored: ['SYN004']" in caplog.text
    own = thin.xs("SYN005", level="instrument").index
    assert scores.xs("SYN005", level="instrument").index[0] == own[LOOKBACK - 1]
    assert "SYN004" not in scores.index.get_level_values("instrument")


@pytest.mark.parametrize("breaker, error, match", [
    (lambda p: pd.concat([p, p.iloc[:1]]), ValueError, "duplicate"),
    (lambda p: p.drop(columns="close"), ValueError, "missing required columns"),
    (lambda p: p.iloc[::-1], ValueError, "not sorted"),
    (lambda p: p.reset_index(level="instrument"), TypeError, "MultiIndex"),
    (lambda p: p.iloc[:6 * 10], ValueError, "too few bars for lookback=16"),
])
def test_bad_panels_raise_one_clear_error(predictor, panel, breaker, error, match, monkeypatch):
    calls = _count_series(monkeypatch, predictor)
    with pytest.raises(error, match=match):
        score_panel(predictor, breaker(panel), **OPTS)
    assert calls == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(scorers=["expected_return", "no_such_scorer"]), "unknown scorer 'no_such_scorer'"),
    (dict(lookback=1), "lookback must be an integer >= 16"),
    (dict(sample_count=0), "sample_count must be an integer >= 1"),
    (dict(pred_len=0), "pred_len must be an integer >= 1, got 0"),
    (dict(batch_size=True), "batch_size must be an integer >= 1, got True"),
    (dict(calendar="NOPE"), "unknown exchange calendar 'NOPE'"),
    (dict(freq=2.5), "freq must be an int"),
    (dict(start="2030-01-01"), "is after end"),
])
def test_bad_arguments_fail_before_the_model_runs(predictor, panel, kwargs, match, monkeypatch):
    calls = _count_series(monkeypatch, predictor)
    with pytest.raises((ValueError, TypeError), match=match):
        score_panel(predictor, panel, **{**OPTS, **kwargs})
    assert calls == []


@pytest.mark.parametrize("drop_amount", [False, True])
def test_array_path_gives_the_dataframe_path_bit_for_bit(predictor, panel, drop_amount):
    """Walk-forward windows travel as arrays; forecasting each window as its own DataFrame
    (the public frame path, amount filled by the predictor) gives the same bits."""
    panel = panel.drop(columns="amount") if drop_amount else panel
    opts = dict(OPTS, start=panel.index.get_level_values("datetime").unique()[30])
    fp = forecast_panel(predictor, panel, batch_size=7, **opts)
    frames, future, seeds = [], [], []
    for n, (t, inst) in enumerate(fp.keys):
        own = panel.xs(inst, level="instrument")
        frames.append(own.loc[:t].iloc[-LOOKBACK:])
        future.append(pd.DatetimeIndex(fp.future[n]))
        seeds.append(window_seed(7, inst, t))
    out = predictor.forecast_batch(frames, pred_len=PRED_LEN, y_timestamps=future,
                                   sample_count=SAMPLES, seed=seeds)
    assert np.array_equal(fp.batch.paths, np.stack([fc.paths for fc in out]).astype(np.float32))
    values = np.stack([f[["open", "high", "low", "close", "volume"]].assign(
        amount=fc.history["amount"].to_numpy(np.float64)).to_numpy()
        for f, fc in zip(frames, out, strict=True)])
    arrays = predictor.forecast_arrays(values, np.stack([f.index.to_numpy() for f in frames]),
                                       np.stack(future), sample_count=SAMPLES, seed=seeds)
    assert arrays.dtype == np.float32
    assert np.array_equal(arrays, np.stack([fc.paths for fc in out]))


@pytest.mark.parametrize("change, match", [
    (lambda v, s, f: (v[:, :, :5], s, f), r"values must have shape \(series, bars, 6\)"),
    (lambda v, s, f: (np.where(np.arange(6) == 3, -1.0, v), s, f),
     r"series 0: column 'close' has non-positive price -1.0 at row 0"),
    (lambda v, s, f: (v, s[:, ::-1], f), r"series 0: stamps are not strictly increasing"),
    (lambda v, s, f: (v, s.astype(np.int64), f), "stamps must be a datetime64 array"),
    (lambda v, s, f: (v, s, f[:1]), r"future_stamps must be 2-D"),
])
def test_forecast_arrays_rejects_bad_input_clearly(predictor, change, match):
    bars = synthetic_ohlcv(20, seed=1)
    values = np.repeat(bars.to_numpy(np.float64)[None], 2, axis=0)  # (2, 20, 6)
    stamps = np.repeat(bars.index.to_numpy()[None], 2, axis=0)
    future = np.repeat(pd.bdate_range(bars.index[-1], periods=4)[1:].to_numpy()[None], 2, axis=0)
    with pytest.raises((ValueError, TypeError), match=match):
        predictor.forecast_arrays(*change(values, stamps, future), sample_count=2, seed=0)

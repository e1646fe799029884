"""Scorers (formulas, registry, the upstream four) and cross-sectional transforms."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from signals_support import one_thread  # noqa: F401  (autouse fixture)

from kronos_quant.data import synthetic_ohlcv
from kronos_quant.forecast import Forecast
from kronos_quant.signals import (
    BUILTIN_SCORERS,
    PathBatch,
    cross_sectional,
    cs_demean,
    cs_rank,
    cs_winsorise,
    cs_zscore,
    get_scorer,
    list_scorers,
    register_scorer,
    score_batch,
    score_column,
    score_forecast,
    score_forecasts,
)
from kronos_quant.signals import scorers as scorers_module


def _batch(close: np.ndarray, last: np.ndarray, *, log: bool = False) -> PathBatch:
    """PathBatch whose close paths are ``close`` (N, S, P); other columns are filler."""
    paths = np.repeat(close[..., None], 6, axis=-1).astype(np.float32)
    n = close.shape[0]
    return PathBatch(paths, np.asarray(last, float), np.full(n, 10.0), np.full(n, 1.0), log=log)


@pytest.fixture()
def hand_batch():
    # Window 0: four paths of two steps from a last close of 10.
    close = np.array([[[10.0, 11.0], [10.0, 9.0], [11.0, 12.0], [9.0, 10.0]]])
    return _batch(close, [10.0])


def test_builtin_formulas_on_a_hand_made_batch(hand_batch):
    s = score_batch(hand_batch)
    horizon = np.array([0.1, -0.1, 0.2, 0.0])  # close at step 2 / 10 - 1
    assert s["expected_return"][0] == pytest.approx(horizon.mean())
    assert s["expected_return_avg"][0] == pytest.approx(np.mean([0, .1, 0, -.1, .1, .2, -.1, 0]))
    assert s["prob_up"][0] == pytest.approx(0.5)  # 11 and 12 are above 10; 9 and 10 are not
    assert s["median_return"][0] == pytest.approx(0.05)
    assert s["quantile_spread"][0] == pytest.approx(np.quantile(horizon, .9)
                                                    - np.quantile(horizon, .1))
    assert s["sharpe"][0] == pytest.approx(horizon.mean() / horizon.std())
    assert s["cvar_10"][0] == pytest.approx(-0.1)  # ceil(0.4) = 1 worst path
    bar = np.array([0.0, 0.1, 0.0, -0.1, 0.1, 12 / 11 - 1, -0.1, 10 / 9 - 1])
    assert s["volatility"][0] == pytest.approx(bar.std())
    # Upstream four in context-std units (mean 10, std 1): mean path = [10, 10.5].
    scale = 1.0 + 1e-5
    assert s["ref_last"][0] == pytest.approx(0.5 / scale)
    assert s["ref_mean"][0] == pytest.approx(0.25 / scale)
    assert s["ref_max"][0] == pytest.approx(0.5 / scale)
    assert s["ref_min"][0] == pytest.approx(0.0)


def test_log_returns_option(hand_batch):
    log_batch = PathBatch(hand_batch.paths, hand_batch.last_close, hand_batch.close_mean,
                          hand_batch.close_std, log=True)
    got = score_batch(log_batch, ["expected_return", "median_return"])
    horizon = np.log(np.array([11.0, 9.0, 12.0, 10.0]) / 10.0)
    assert got["expected_return"][0] == pytest.approx(horizon.mean())
    assert got["median_return"][0] == pytest.approx(np.median(horizon))


def test_sharpe_is_nan_when_paths_agree():
    close = np.full((1, 3, 2), 10.5)
    assert np.isnan(score_batch(_batch(close, [10.0]), "sharpe")["sharpe"][0])


def test_reference_last_close_is_clipped_like_the_model_input():
    close = np.full((1, 2, 1), 10.0)
    batch = PathBatch(np.repeat(close[..., None], 6, -1), np.array([100.0]), np.array([10.0]),
                      np.array([1.0]), clip=5.0)
    # last close is 90 std above the mean; the model saw it clipped to +5.
    assert score_batch(batch, "ref_last")["ref_last"][0] == pytest.approx(0.0 - 5.0, abs=1e-4)


def test_reference_scores_match_the_predictors_mean_path(predictor):
    """ref_* from paths equal the upstream recipe on ``predict``'s output: its mean path, in
    context-std units, minus the clipped normalised last close."""
    df = synthetic_ohlcv(40, freq="D", seed=4)
    # Unseeded calls from one global seed draw the same paths (forecast keeps them, predict
    # returns their mean).
    torch.manual_seed(1)
    fc = predictor.forecast(df, pred_len=4, sample_count=6)
    torch.manual_seed(1)
    mean_path = predictor.predict(df, pred_len=4, sample_count=6, verbose=False)
    got = score_forecast(fc, ["ref_last", "ref_mean", "ref_max", "ref_min"])
    close = df["close"].to_numpy(np.float64)
    scale = close.std() + 1e-5
    norm = (mean_path["close"].to_numpy(np.float64) - close.mean()) / scale
    last = np.clip((close[-1] - close.mean()) / scale, -5, 5)
    expected = [norm[-1] - last, norm.mean() - last, norm.max() - last, norm.min() - last]
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-5, atol=1e-5)
    assert np.ptp(fc.paths[:, :, 3], axis=0).max() > 0  # the paths differ: the mean is not trivial


def test_score_forecasts_rows_match_single_forecasts(predictor):
    frames = {"A": synthetic_ohlcv(30, freq="D", seed=1),
              "B": synthetic_ohlcv(30, freq="D", seed=2)}
    fcs = predictor.forecast_batch(frames, pred_len=3, sample_count=5, seed=0)
    table = score_forecasts(fcs)
    assert list(table.index) == ["A", "B"] and list(table.columns) == list(BUILTIN_SCORERS)
    single = score_forecast(fcs["B"])
    np.testing.assert_allclose(table.loc["B"].to_numpy(), single.to_numpy())
    assert table.notna().all().all()


def test_forecasts_of_different_shapes_cannot_share_a_batch(predictor):
    df = synthetic_ohlcv(30, freq="D", seed=1)
    a = predictor.forecast(df, pred_len=3, sample_count=2, seed=0)
    b = predictor.forecast(df, pred_len=4, sample_count=2, seed=0)
    with pytest.raises(ValueError, match="score them separately"):
        score_forecasts([a, b])
    with pytest.raises(TypeError, match="Forecast"):
        score_forecasts([a, "not a forecast"])


def test_registry_add_lookup_and_errors(hand_batch, monkeypatch):
    monkeypatch.setattr(scorers_module, "_REGISTRY", dict(scorers_module._REGISTRY))

    @register_scorer("upside_tail")
    def upside_tail(batch):
        """90th percentile of the horizon return."""
        return np.quantile(batch.horizon_returns, 0.9, axis=1)

    assert "upside_tail" in list_scorers() and get_scorer("upside_tail") is upside_tail
    assert score_batch(hand_batch, ["upside_tail"])["upside_tail"][0] == pytest.approx(
        np.quantile([0.1, -0.1, 0.2, 0.0], 0.9))
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("upside_tail")(upside_tail)
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        get_scorer("nope")
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        score_batch(hand_batch, ["expected_return", "nope"])
    with pytest.raises(ValueError, match="identifier"):
        register_scorer("bad name")

    @register_scorer("wrong_shape")
    def wrong_shape(batch):
        return np.zeros(3)

    with pytest.raises(ValueError, match="returned shape"):
        score_batch(hand_batch, "wrong_shape")


def test_pathbatch_shape_checks():
    with pytest.raises(ValueError, match="paths must be"):
        PathBatch(np.zeros((2, 3, 4)), np.ones(2), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="last_close"):
        PathBatch(np.zeros((2, 3, 4, 6)), np.ones(3), np.ones(2), np.ones(2))


def test_score_forecast_reads_the_last_observed_close():
    index = pd.bdate_range("2024-01-01", periods=3)
    history = pd.DataFrame({c: [1.0, 2.0, 4.0] for c in Forecast.columns}, index=index)
    paths = np.full((2, 1, 6), 5.0, np.float32)
    fc = Forecast(paths=paths, index=pd.bdate_range("2024-01-04", periods=1), history=history)
    assert score_forecast(fc, "expected_return")["expected_return"] == pytest.approx(0.25)


# -- cross-sectional transforms -------------------------------------------------------------

@pytest.fixture()
def scores():
    idx = pd.MultiIndex.from_product([pd.bdate_range("2024-01-01", periods=2), list("ABCD")],
                                     names=["datetime", "instrument"])
    return pd.DataFrame({"x": [1.0, 2.0, 3.0, 10.0, 5.0, 5.0, 5.0, 5.0],
                         "y": [4.0, np.nan, 2.0, 1.0, 0.0, 1.0, 2.0, 3.0]}, index=idx)


def test_transforms_work_per_date(scores):
    ranked = cs_rank(scores)
    assert ranked["x"].tolist()[:4] == [0.25, 0.5, 0.75, 1.0]
    assert ranked["x"].tolist()[4:] == [0.625] * 4  # ties averaged
    assert np.isnan(ranked["y"].iloc[1])
    demeaned = cs_demean(scores)
    assert demeaned["x"].iloc[:4].sum() == pytest.approx(0.0)
    z = cs_zscore(scores)
    first = scores["x"].iloc[:4]
    np.testing.assert_allclose(z["x"].iloc[:4], (first - first.mean()) / first.std(ddof=0))
    assert z["x"].iloc[4:].tolist() == [0.0] * 4  # a date with no dispersion
    w = cs_winsorise(scores["x"], lower=0.0, upper=0.5)
    assert w.iloc[3] == pytest.approx(first.quantile(0.5))  # 10 clipped to the date median
    assert w.iloc[0] == 1.0
    np.testing.assert_allclose(cross_sectional(scores, "zscore")["x"], z["x"])


def test_transforms_reject_bad_input(scores):
    with pytest.raises(ValueError, match="unknown cross-sectional transform"):
        cross_sectional(scores, "scale")
    with pytest.raises(ValueError, match="MultiIndex"):
        cs_rank(scores.reset_index(level="instrument"))
    with pytest.raises(ValueError, match="lower < upper"):
        cs_winsorise(scores, lower=0.9, upper=0.1)
    with pytest.raises(TypeError, match="numeric"):
        cs_rank(scores.assign(x="a"))


def test_score_column_picks_one_column(scores):
    y = score_column(scores, "y")
    assert y.name == "y" and y.dtype == np.float64 and np.isnan(y.iloc[1])
    pd.testing.assert_series_equal(score_column(scores[["x"]]), scores["x"])
    pd.testing.assert_series_equal(score_column(scores["x"], "x"), scores["x"])
    with pytest.raises(ValueError, match=r"2 columns \['x', 'y'\]; pick one with column="):
        score_column(scores)
    with pytest.raises(ValueError, match="'z' is not a score column"):
        score_column(scores, "z")
    with pytest.raises(ValueError, match="Series named 'x'"):
        score_column(scores["x"], "y")
    with pytest.raises(TypeError, match="numeric"):
        score_column(scores.assign(x="a"), "y")

"""Path calibration: coverage, PIT and CRPS on cases built to be (mis)calibrated; conformal."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kronos_quant.signals import (
    PanelForecasts,
    PathBatch,
    band_coverage,
    calibrate,
    conformal_margin,
    crps_ensemble,
    pit_values,
    plot_calibration,
    realised_closes,
)


def _coverage_tolerance(p: float, n: int, sigmas: float = 4.0) -> float:
    return sigmas * math.sqrt(p * (1 - p) / n)


def _expected(level: float, samples: int) -> float:
    """Coverage of an empirical central band of S exchangeable draws (linear interpolation)."""
    return level * (samples - 1) / (samples + 1)


def _random_walk_case(*, n_inst: int = 8, n_dates: int = 150, samples: int = 199, steps: int = 3,
                      sigma: float = 0.02, path_sigma: float | None = None, seed: int = 0):
    """A panel of iid log-normal random walks and, for every (date, instrument) with a full
    future, forecasts sampled from the same process (``path_sigma`` to mis-specify it)."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2023-01-02", periods=n_dates)
    names = [f"S{i}" for i in range(n_inst)]
    close = 10.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, (n_dates, n_inst)), axis=0))
    index = pd.MultiIndex.from_product([dates, names], names=["datetime", "instrument"])
    flat = close.ravel()
    panel = pd.DataFrame({"open": flat, "high": flat, "low": flat, "close": flat,
                          "volume": 1.0}, index=index)
    keep = dates[10:n_dates - steps]
    keys = pd.MultiIndex.from_product([keep, names], names=["datetime", "instrument"])
    last = panel["close"].reindex(keys).to_numpy()
    shocks = rng.normal(0.0, path_sigma or sigma, (len(keys), samples, steps))
    paths = last[:, None, None] * np.exp(np.cumsum(shocks, axis=2))  # (N, S, P)
    batch = PathBatch(np.repeat(paths[..., None], 6, axis=-1), last, last, np.ones(len(keys)))
    future = np.zeros((len(keys), steps), "datetime64[ns]")
    return panel, PanelForecasts(keys, batch, future)


def test_band_coverage_on_arrays_is_nominal_within_sampling_error():
    rng = np.random.default_rng(1)
    n, s = 4000, 200
    samples, realised = rng.normal(size=(n, s)), rng.normal(size=n)
    for level in (0.5, 0.8):
        expected = _expected(level, s)
        assert (abs(band_coverage(samples, realised, level) - expected)
                < _coverage_tolerance(expected, n))
    # Too narrow a forecast is caught.
    assert band_coverage(samples * 0.5, realised, 0.8) < 0.6


def test_realised_closes_are_the_next_own_bars():
    panel, fp = _random_walk_case(n_inst=2, n_dates=20, samples=3)
    real = realised_closes(fp, panel)
    d, inst = fp.keys[5]
    own = panel.xs(inst, level="instrument")["close"]
    pos = own.index.get_loc(d)
    np.testing.assert_allclose(real[5], own.iloc[pos + 1:pos + 4].to_numpy())


def test_calibrate_on_a_calibrated_panel(tmp_path):
    panel, fp = _random_walk_case()
    calib = calibrate(fp, panel, conformal_split=None)
    n = int(calib.n.loc[1])
    assert n == len(fp)
    # Step 1 outcomes are independent draws: a plain binomial tolerance applies.
    for level in (0.5, 0.8):
        expected = _expected(level, 199)
        assert abs(calib.coverage.loc[1, level] - expected) < _coverage_tolerance(expected, n)
        # Later steps share increments between neighbouring dates: allow for the overlap.
        for step in (2, 3):
            assert abs(calib.coverage.loc[step, level] - expected) < _coverage_tolerance(
                expected, n // step)
    pit = calib.pit[1]
    assert (pit - 0.1).abs().max() < _coverage_tolerance(0.1, n)
    summary = calib.summary()
    assert list(summary.columns) == ["n", "cover50", "cover80", "crps"]
    fig = plot_calibration(calib, tmp_path / "calib.png")
    assert fig is not None and (tmp_path / "calib.png").stat().st_size > 5_000
    assert fig.texts == []  # no model named: no corner label
    named = plot_calibration(calib, None, model_label="tiny/model + tiny/tokenizer")
    assert [t.get_text() for t in named.texts] == ["model: tiny/model + tiny/tokenizer"]


def test_miscalibration_is_detected_and_conformal_recalibration_fixes_it():
    panel, fp = _random_walk_case(path_sigma=0.01, n_dates=200)  # paths half as wide as truth
    calib = calibrate(fp, panel, conformal_split=0.5)
    assert calib.coverage.loc[1, 0.8] < 0.6 and calib.coverage.loc[1, 0.5] < 0.35
    step1 = calib.conformal.loc[1]
    for level in (0.5, 0.8):
        row = step1.loc[level]
        assert row["margin"] > 0 and row["test_raw"] < level - 0.1
        assert abs(row["test_conformal"] - level) < _coverage_tolerance(level, int(row["n_test"]))
    assert "split-conformal" in calib.table()


def test_conformal_split_uses_only_outcomes_known_before_the_test_period():
    panel, fp = _random_walk_case(n_dates=60)
    calib = calibrate(fp, panel, conformal_split=0.5)
    dates = fp.keys.get_level_values("datetime").unique()
    n_inst, steps = 8, 3
    first_test = len(dates) // 2
    row = calib.conformal.loc[(1, 0.5)]
    assert row["n_test"] == (len(dates) - first_test) * n_inst
    # Outcome of a window at date i is known at i + 3: calibration stops 3 dates early.
    assert row["n_cal"] == (first_test - steps + 1) * n_inst


def test_pit_and_crps_formulas():
    samples = np.array([[0.0, 1.0, 2.0, 3.0]])
    assert pit_values(samples, np.array([1.5]))[0] == pytest.approx((2 + 0.5) / 5)
    assert pit_values(samples, np.array([1.0]))[0] == pytest.approx((1 + 0.5 + 0.5) / 5)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 7)), rng.normal(size=5)
    brute = np.abs(x - y[:, None]).mean(axis=1) - np.abs(x[:, :, None] - x[:, None, :]).mean(
        axis=(1, 2)) / 2
    np.testing.assert_allclose(crps_ensemble(x, y), brute)
    # Many draws from N(0, 1): the closed-form Gaussian CRPS.
    big = rng.normal(size=(1, 20000))
    for v in (-1.0, 0.3, 2.0):
        phi = math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + math.erf(v / math.sqrt(2)))
        exact = v * (2 * cdf - 1) + 2 * phi - 1 / math.sqrt(math.pi)
        assert crps_ensemble(big, np.array([v]))[0] == pytest.approx(exact, abs=0.01)


def test_conformal_margin_turns_point_forecasts_into_valid_intervals():
    rng = np.random.default_rng(4)
    cal, fresh = rng.normal(size=2000), rng.normal(size=20000)
    zeros = np.zeros_like(cal)
    margin = conformal_margin(zeros, zeros, cal, 0.5)
    assert margin == pytest.approx(0.674, abs=0.06)  # the median of |N(0, 1)|
    assert abs((np.abs(fresh) <= margin).mean() - 0.5) < 0.04
    assert conformal_margin(zeros[:3], zeros[:3], cal[:3], 0.9) == float("inf")
    with pytest.raises(ValueError, match="band level"):
        conformal_margin(zeros, zeros, cal, 1.5)


def test_calibrate_errors():
    panel, fp = _random_walk_case(n_inst=2, n_dates=20, samples=3)
    with pytest.raises(ValueError, match="not in the panel"):
        calibrate(fp, panel.drop(index="S1", level="instrument"))
    early = panel[panel.index.get_level_values("datetime") <= fp.keys[-1][0]]
    tail = PanelForecasts(fp.keys[-2:],
                          PathBatch(fp.batch.paths[-2:], fp.batch.last_close[-2:],
                                    fp.batch.close_mean[-2:], fp.batch.close_std[-2:]),
                          fp.future[-2:])
    with pytest.raises(ValueError, match="no window has a realised value"):
        calibrate(tail, early)
    with pytest.raises(ValueError, match="conformal_split"):
        calibrate(fp, panel, conformal_split=1.0)

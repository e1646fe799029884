"""forecast_skill: MAE / CRPS against the random walk and historical-volatility bands with
Diebold–Mariano tests, direction accuracy against the best constant guess."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats
from signals_support import one_thread  # noqa: F401  (autouse fixture)

from kronos_quant.signals import (
    PanelForecasts,
    PathBatch,
    calibrate,
    crps_normal,
    forecast_skill,
    history_volatility,
    skill_table,
)
from kronos_quant.stats import diebold_mariano, direction_test


def _drift_case(*, drift_known: bool, path_scale: float = 1.0, n_inst: int = 10,
                n_dates: int = 160, samples: int = 64, steps: int = 2, sigma: float = 0.02,
                seed: int = 0):
    """Panel whose log returns have a per-(date, instrument) drift known at the previous
    close, and forecasts sampled with (``drift_known``) or without that drift."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2023-01-02", periods=n_dates)
    names = [f"S{i}" for i in range(n_inst)]
    drift = rng.normal(0.0, sigma, (n_dates, n_inst))  # drift[t] applies to bar t → t+1
    shocks = rng.normal(0.0, sigma, (n_dates, n_inst))
    step_ret = np.vstack([np.zeros((1, n_inst)), (drift + shocks)[:-1]])
    close = 10.0 * np.exp(np.cumsum(step_ret, axis=0))
    index = pd.MultiIndex.from_product([dates, names], names=["datetime", "instrument"])
    flat = close.ravel()
    panel = pd.DataFrame({"open": flat, "high": flat, "low": flat, "close": flat,
                          "volume": 1.0}, index=index)
    rows = np.arange(25, n_dates - steps)
    keys = pd.MultiIndex.from_product([dates[rows], names], names=["datetime", "instrument"])
    last = close[rows].ravel()
    mean = np.repeat(drift[rows].ravel()[:, None], steps, axis=1) * float(drift_known)
    # Only the first step's drift is known; later steps are shocks from that date on.
    mean = np.where(np.arange(steps) == 0, mean, 0.0)
    draws = mean[:, None, :] + rng.normal(0.0, sigma * path_scale, (len(keys), samples, steps))
    paths = last[:, None, None] * np.exp(np.cumsum(draws, axis=2))
    batch = PathBatch(np.repeat(paths[..., None], 6, axis=-1), last, last, np.ones(len(keys)))
    return panel, PanelForecasts(keys, batch, np.zeros((len(keys), steps), "datetime64[ns]"))


def test_crps_normal_equals_the_integral_definition():
    for mu, sd, y in ((0.0, 1.0, 0.3), (0.01, 0.02, -0.05), (1.0, 0.5, 1.0)):
        def integrand(x, mu=mu, sd=sd, y=y):
            return (stats.norm.cdf(x, mu, sd) - (x >= y)) ** 2
        lo, hi = mu - 12 * sd, mu + 12 * sd
        exact = integrate.quad(integrand, lo, y, limit=200)[0] + integrate.quad(
            integrand, y, hi, limit=200)[0]
        got = crps_normal(np.array([mu]), np.array([sd]), np.array([y]))[0]
        assert got == pytest.approx(exact, rel=1e-6)
    assert np.isnan(crps_normal(np.array([0.0]), np.array([0.0]), np.array([1.0]))[0])


def test_skill_of_an_informed_model_against_independent_computations():
    panel, fc = _drift_case(drift_known=True)
    skill = forecast_skill(fc, panel)
    row = skill.steps.loc[1]
    close = panel["close"].unstack()
    realised = (close.shift(-1) / close - 1.0).stack().reindex(fc.keys).to_numpy()
    assert row["windows"] == len(fc) and row["dates"] == len(fc.keys.levels[0].unique())
    assert row["mae_rw"] == pytest.approx(np.abs(realised).mean())
    point = (fc.batch.paths[:, :, 0, 3] / fc.batch.last_close[:, None] - 1.0).mean(axis=1)
    assert row["mae"] == pytest.approx(np.abs(point - realised).mean())
    # The model knows half the next return's variance: better than the random walk, and the
    # DM test (on per-date mean losses) says so; direction too.
    assert row["mae"] < row["mae_rw"] and row["mae_dm_t"] < 0 and row["mae_dm_p"] < 1e-4
    assert row["crps"] < row["crps_vol"] and row["crps_dm_vol_p"] < 1e-4
    dates = fc.keys.get_level_values("datetime")
    per_date = pd.DataFrame({"m": np.abs(point - realised), "b": np.abs(realised)},
                            index=dates).groupby(level=0).mean()
    dm = diebold_mariano(per_date["m"].to_numpy(), per_date["b"].to_numpy(), horizon=1)
    assert row["mae_dm_t"] == pytest.approx(dm.t)
    assert row["mae_dm_p"] == pytest.approx(dm.p_value)
    direction = direction_test(point, realised)
    assert row["direction"] == pytest.approx(direction.accuracy) and direction.accuracy > 0.6
    assert row["direction_p"] == pytest.approx(direction.p_value) and direction.p_value < 1e-6
    # Step 2: 2-bar outcomes of daily forecasts overlap one following date.
    assert skill.steps.loc[2, "dm_horizon"] == 2 and skill.spacing == 1.0
    assert "DM t" in skill.table()


def test_an_uninformed_or_overconfident_model_is_not_called_skilled():
    panel, fc = _drift_case(drift_known=False, seed=1)
    row = forecast_skill(fc, panel).steps.loc[1]
    assert row["direction_p"] > 0.01  # coin flips against the best constant guess
    assert row["mae_dm_t"] > 0  # noise around 0 is worse than 0 itself
    panel, fc = _drift_case(drift_known=False, path_scale=0.1, seed=1)
    narrow = forecast_skill(fc, panel).steps.loc[1]
    # Bands a tenth as wide as the truth lose to historical-volatility bands.
    assert narrow["crps_dm_vol_t"] > 0 and narrow["crps_dm_vol_p"] < 1e-4


def test_history_volatility_is_the_trailing_std_of_one_bar_returns():
    panel, fc = _drift_case(drift_known=True)
    got = history_volatility(panel, fc.keys, window=10)
    close = panel["close"].unstack()
    expected = close.pct_change().rolling(10, min_periods=2).std().stack().reindex(fc.keys)
    np.testing.assert_allclose(got, expected.to_numpy())


def test_calibrate_carries_the_skill_table_and_its_crps():
    panel, fc = _drift_case(drift_known=True, n_dates=80)
    calib = calibrate(fc, panel)
    assert calib.skill is not None
    pd.testing.assert_series_equal(calib.crps, calib.skill.steps["crps"].rename("crps"),
                                   check_index_type=False)
    assert "forecast skill per step" in calib.table()


def test_skill_table_leaves_out_steps_without_outcomes():
    rng = np.random.default_rng(0)
    returns = rng.normal(size=(30, 8, 2))
    realised = rng.normal(size=(30, 2))
    realised[:, 1] = np.nan
    dates = np.repeat(pd.bdate_range("2024-01-01", periods=10).to_numpy(), 3)
    table = skill_table(returns, realised, dates, np.ones(30))
    assert list(table.index) == [1] and table.loc[1, "dates"] == 10


def test_the_demo_model_card_evaluation_carries_the_tests(predictor, tmp_path):
    """The held-out forecast numbers of the model card come from skill_table, with DM and
    binomial p-values; cards measured before the tests render a dash."""
    import json
    import shutil

    from kronos_quant.assets import ASSETS
    from kronos_quant.data import synthetic_panel
    from kronos_quant.demo.model_card import rerender_model_card
    from kronos_quant.demo.model_eval import heldout_forecast_skill

    panel = synthetic_panel(3, 90, seed=4)
    out = heldout_forecast_skill(predictor, panel, ["SYN000", "SYN001"],
                                 val_from=pd.Timestamp(panel.index.levels[0][40]), lookback=16,
                                 pred_len=3, stride=4, samples=4, horizons=(1,))
    close = panel["close"].unstack()
    rows = list(range(40 + 16, 90 - 3 + 1, 4))
    assert out["windows"] == 2 * len(rows)
    first = out["h1"]
    assert 0 <= first["mae_dm_p"] <= 1 and 0 <= first["direction_p"] <= 1
    real = np.concatenate([close[n].to_numpy()[rows] / close[n].to_numpy()[
        [r - 1 for r in rows]] - 1 for n in ("SYN000", "SYN001")])
    assert first["random_walk_mae"] == pytest.approx(np.abs(real).mean())
    # Metrics measured before the tests render a dash; with them, the p-value.
    shutil.copy(ASSETS / "demo.json", tmp_path / "demo.json")
    metrics = json.loads((ASSETS / "metrics.json").read_text())
    metrics["evaluation"]["real"]["forecast"] = out
    metrics["evaluation"]["synthetic"]["forecast"] = {
        "windows": 2, "h1": {k: v for k, v in first.items() if not k.startswith(("mae_dm",
                                                                                   "direction_p"))}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    card = rerender_model_card(tmp_path).read_text()
    assert "DM p" in card and f"| {first['mae_dm_p']:.3g} |" in card
    assert "| synthetic | 2 | 1 bars |" in card and "| – |" in card

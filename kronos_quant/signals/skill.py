"""Forecast accuracy against naive forecasts, with its significance: :func:`forecast_skill`.

For window (t, instrument) and step h = 1..P the outcome is the instrument's close h of its
own bars after t, as a return from the last observed close (simple, or log with
``log=True``), exactly as :func:`kronos_quant.signals.calibrate` measures it. Per step:

* MAE of the point forecast (mean of the sampled returns) vs the random walk (no change,
  forecast 0: its MAE is mean |y|);
* CRPS of the sampled distribution vs the random walk (a point mass at 0: CRPS = |y|) and vs
  historical-volatility bands: a normal distribution with mean 0 and standard deviation
  ``σ·√h``, σ the std of the instrument's last ``vol_window`` one-bar returns up to t;
* Diebold–Mariano tests (:func:`kronos_quant.stats.diebold_mariano`, HLN-corrected) of the
  model's loss minus each baseline's. Windows of one date share the market's moves, so the
  losses are first averaged per forecast date and the test runs on that date series; with
  forecast dates ``spacing`` bars apart, h-step outcomes overlap ``ceil(h / spacing) − 1``
  following dates, and that sets the test's horizon. Negative t = the model is better;
* direction accuracy of the point forecast against the best constant guess (binomial test,
  :func:`kronos_quant.stats.direction_test`; pooled windows are treated as independent, so
  its p-value is optimistic when instruments move together).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..data import validate_panel
from ..stats import diebold_mariano, direction_test, overlap_lags
from .evaluation import rebalance_spacing
from .walkforward import PanelForecasts, split_instruments

DEFAULT_VOL_WINDOW = 20


def crps_ensemble(samples: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """CRPS (N,) of the empirical distribution of ``samples`` (N, S) at ``realised`` (N,)."""
    s = samples.shape[1]
    spread = np.abs(samples - realised[:, None]).mean(axis=1)
    ordered = np.sort(samples, axis=1)
    # Σ_ij |x_i − x_j| = 2 Σ_k (2k − S + 1) x_(k) for sorted x (k = 0..S−1).
    weights = 2.0 * np.arange(s) - s + 1.0
    pair = 2.0 * (ordered * weights).sum(axis=1)
    return spread - pair / (2.0 * s * s)


def crps_normal(mean: np.ndarray, std: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """CRPS of normal distributions N(mean, std²) at ``realised`` (closed form; NaN where
    std is not positive)."""
    from scipy.stats import norm

    std = np.where(np.asarray(std, dtype="float64") > 0, std, np.nan)
    z = (realised - mean) / std
    return std * (z * (2.0 * norm.cdf(z) - 1.0) + 2.0 * norm.pdf(z) - 1.0 / np.sqrt(np.pi))


def realised_closes(forecasts: PanelForecasts, panel: pd.DataFrame) -> np.ndarray:
    """(N, P) close of each window's instrument h = 1..P own bars after its date
    (NaN past the end)."""
    return _realised_closes(forecasts, validate_panel(panel))


def _realised_closes(forecasts: PanelForecasts, panel: pd.DataFrame) -> np.ndarray:
    """:func:`realised_closes` of a validated panel."""
    names, stamps, values = split_instruments(panel)
    close = list(panel.columns).index("close")
    code = {n: i for i, n in enumerate(names)}
    n_steps = forecasts.batch.paths.shape[2]
    out = np.full((len(forecasts), n_steps), np.nan)
    dates = forecasts.keys.get_level_values("datetime").to_numpy("datetime64[ns]")
    insts = forecasts.keys.get_level_values("instrument")
    for j, (when, inst) in enumerate(zip(dates, insts, strict=True)):
        if inst not in code:
            raise ValueError(f"instrument {inst!r} of the forecasts is not in the panel")
        own = stamps[code[inst]]
        pos = int(np.searchsorted(own, when))
        if pos >= len(own) or own[pos] != when:
            raise ValueError(f"the panel has no bar for ({when}, {inst!r}) of the forecasts")
        future = values[code[inst]][pos + 1:pos + 1 + n_steps, close]
        out[j, :len(future)] = future
    return out


def history_volatility(panel: pd.DataFrame, keys: pd.MultiIndex, *,
                       window: int = DEFAULT_VOL_WINDOW, log: bool = False) -> np.ndarray:
    """(N,) std (ddof 1) of each key's instrument's last ``window`` one-bar close returns up
    to and including its date (NaN with fewer than 2 returns)."""
    return _history_volatility(validate_panel(panel)["close"], keys, window, log)


def _history_volatility(close: pd.Series, keys: pd.MultiIndex, window: int,
                        log: bool) -> np.ndarray:
    """:func:`history_volatility` from a validated panel's closes."""
    by_inst = close.groupby(level="instrument")
    ret = np.log(close).groupby(level="instrument").diff() if log else by_inst.pct_change()
    vol = ret.groupby(level="instrument").rolling(int(window), min_periods=2).std()
    vol = vol.droplevel(0) if vol.index.nlevels > 2 else vol
    return vol.reindex(keys).to_numpy("float64")


@dataclass
class ForecastSkill:
    """Per-step accuracy of a forecast against the random walk and historical-volatility bands.

    ``steps``: one row per forecast step: windows and forecast dates with an outcome, MAE of
    the model and of the random walk (``mae``, ``mae_rw``), CRPS of the model, the random
    walk and the historical-volatility bands (``crps``, ``crps_rw``, ``crps_vol``), the DM
    t and p of model minus baseline (``mae_dm_*``, ``crps_dm_rw_*``, ``crps_dm_vol_*``;
    ``dm_horizon`` the overlap it allowed for), direction accuracy, the best constant guess's,
    their count and the binomial p (``direction*``). ``realised``: the (N, P) outcomes as
    returns (NaN where the panel ends); ``spacing``: median bars between forecast dates."""

    steps: pd.DataFrame
    realised: np.ndarray
    spacing: float

    def table(self, *, digits: int = 4) -> str:
        shown = {"windows": "n", "dates": "dates", "mae": "MAE", "mae_rw": "MAE rw",
                 "mae_dm_t": "DM t", "mae_dm_p": "p", "crps": "CRPS", "crps_vol": "CRPS vol",
                 "crps_dm_vol_t": "DM t", "crps_dm_vol_p": "p", "direction": "dir.",
                 "direction_baseline": "const.", "direction_p": "p"}
        frame = self.steps[list(shown)].set_axis(list(shown.values()), axis=1)
        return "\n".join([
            "forecast skill per step (model vs random walk, CRPS vs historical-vol bands; "
            "DM t < 0: model better; HLN-corrected, per-date losses):",
            frame.to_string(float_format=lambda v: f"{v:.{digits}f}")])

    def __str__(self) -> str:
        return self.table()


def _dm(model: np.ndarray, base: np.ndarray, dates: np.ndarray, horizon: int):
    """DM test on per-date mean losses (windows with both losses finite)."""
    ok = np.isfinite(model) & np.isfinite(base)
    frame = pd.DataFrame({"m": model[ok], "b": base[ok]}, index=dates[ok])
    per_date = frame.groupby(level=0).mean().sort_index()
    return diebold_mariano(per_date["m"].to_numpy(), per_date["b"].to_numpy(), horizon=horizon)


def skill_table(returns: np.ndarray, realised: np.ndarray, dates: np.ndarray,
                hist_vol: np.ndarray, *, spacing: float = 1.0) -> pd.DataFrame:
    """The per-step table of :func:`forecast_skill` from arrays.

    ``returns`` (N, S, P) sampled returns, ``realised`` (N, P) outcomes, ``dates`` (N,) the
    forecast dates (windows of one date are averaged before the DM tests), ``hist_vol`` (N,)
    one-bar return std known at each date, ``spacing`` bars between forecast dates."""
    rows = {}
    for h in range(returns.shape[2]):
        y = realised[:, h]
        ok = np.isfinite(y)
        if not ok.any():
            continue
        paths, y, when = returns[ok, :, h], y[ok], dates[ok]
        point = paths.mean(axis=1)
        loss = {"mae": np.abs(point - y), "rw": np.abs(y), "crps": crps_ensemble(paths, y),
                "vol": crps_normal(np.zeros_like(y), hist_vol[ok] * np.sqrt(h + 1), y)}
        lag_h = overlap_lags(h + 1, spacing) + 1
        mae_dm = _dm(loss["mae"], loss["rw"], when, lag_h)
        rw_dm = _dm(loss["crps"], loss["rw"], when, lag_h)
        vol_dm = _dm(loss["crps"], loss["vol"], when, lag_h)
        direction = direction_test(point, y)
        rows[h + 1] = {
            "windows": int(ok.sum()), "dates": mae_dm.n, "mae": loss["mae"].mean(),
            "mae_rw": loss["rw"].mean(), "mae_dm_t": mae_dm.t, "mae_dm_p": mae_dm.p_value,
            "crps": loss["crps"].mean(), "crps_rw": loss["rw"].mean(),
            "crps_vol": np.nanmean(loss["vol"]) if np.isfinite(loss["vol"]).any() else np.nan,
            "crps_dm_rw_t": rw_dm.t, "crps_dm_rw_p": rw_dm.p_value,
            "crps_dm_vol_t": vol_dm.t, "crps_dm_vol_p": vol_dm.p_value,
            "direction": direction.accuracy, "direction_baseline": direction.baseline,
            "direction_n": direction.n, "direction_p": direction.p_value,
            "dm_horizon": lag_h}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "step"
    return frame


def forecast_skill(forecasts: PanelForecasts, panel: pd.DataFrame, *, log: bool = False,
                   vol_window: int = DEFAULT_VOL_WINDOW) -> ForecastSkill:
    """MAE, CRPS and direction accuracy of panel forecasts vs naive forecasts, with tests.

    ``log`` measures log instead of simple returns; ``vol_window`` bars set the
    historical-volatility bands (see the module notes). Windows whose outcome is past the
    panel's end are left out per step."""
    panel = validate_panel(panel)
    last = forecasts.batch.last_close[:, None]
    real_close = _realised_closes(forecasts, panel)
    if not np.isfinite(real_close).any():
        raise ValueError("no window has a realised value yet: the panel ends before every forecast")
    real = np.log(real_close / last) if log else real_close / last - 1.0  # (N, P)
    ret = replace(forecasts.batch, log=log).returns  # (N, S, P)
    vol = _history_volatility(panel["close"], forecasts.keys, vol_window, log)
    spacing = rebalance_spacing(forecasts.keys, panel) or 1.0
    dates = forecasts.keys.get_level_values("datetime").to_numpy()
    table = skill_table(ret, real, dates, vol, spacing=spacing)
    return ForecastSkill(table, real, float(spacing))

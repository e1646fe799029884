"""Calibration of the sampled paths against what happened.

For window (t, instrument) and forecast step h = 1..P, the realised value is that
instrument's close h of its own bars after t, expressed (like the samples) as a return from
the last observed close. Per step:

* band coverage: share of realised values inside the central ``level`` band of the samples
  (between their (1−level)/2 and (1+level)/2 quantiles); a calibrated forecast covers
  ``level``. With S samples the empirical band is slightly narrow: expect about
  ``level × (S−1)/(S+1)``.
* PIT: ``(#{samples < y} + ½ #{samples = y} + ½) / (S + 1)``; uniform for a calibrated
  forecast (a U shape means too narrow, a hump too wide, a slope bias).
* CRPS: ``mean_i |x_i − y| − 1/(2 S²) Σ_ij |x_i − x_j|`` (lower is better, in return units).
* skill (:func:`kronos_quant.signals.forecast_skill`): MAE and CRPS against the random walk
  and historical-volatility bands with Diebold–Mariano tests, direction accuracy with a
  binomial test; the CRPS above is its ``crps`` column.
* split-conformal recalibration (conformalised quantile regression): the margin m such that
  ``[lo − m, hi + m]`` covers ``level`` of an earlier calibration set of windows is applied to
  the later windows; coverage before and after is reported on the later ones only. The
  calibration windows are only those whose outcome was known by the first test date.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..data import validate_panel
from .skill import DEFAULT_VOL_WINDOW, ForecastSkill, forecast_skill
from .walkforward import PanelForecasts

CURVE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CONFORMAL_LEVELS: tuple[float, ...] = (0.5, 0.8)


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"band level must be in (0, 1), got {level!r}")
    return float(level)


def central_band(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge (N,) of the central ``level`` band of ``samples`` (N, S)."""
    level = _check_level(level)
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return lo, hi


def band_coverage(samples: np.ndarray, realised: np.ndarray, level: float) -> float:
    """Share of finite ``realised`` (N,) inside the central ``level`` band of ``samples`` (N, S)."""
    ok = np.isfinite(realised)
    lo, hi = central_band(samples[ok], level)
    inside = (realised[ok] >= lo) & (realised[ok] <= hi)
    return float(inside.mean()) if ok.any() else float("nan")


def pit_values(samples: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """Probability integral transform (N,) of ``realised`` under the sample distribution."""
    below = (samples < realised[:, None]).sum(axis=1)
    equal = (samples == realised[:, None]).sum(axis=1)
    return (below + 0.5 * equal + 0.5) / (samples.shape[1] + 1)


def pit_histogram(pit: np.ndarray, bins: int = 10, *, samples: int | None = None) -> pd.Series:
    """Share of PIT values per equal-width bin of [0, 1] (uniform = 1 / bins each).

    The PIT of an ensemble of ``samples`` paths takes only ``samples + 1`` values, so with
    fewer paths than bins some bins could never be filled and a calibrated forecast would
    look miscalibrated. Given ``samples``, each value counts as its slot of width
    1 / (samples + 1), spread over the bins it covers (the expected histogram of the
    randomised PIT): calibrated forecasts then fill every bin alike.
    """
    pit = pit[np.isfinite(pit)]
    edges = np.linspace(0.0, 1.0, bins + 1)
    if samples is None:
        counts = np.histogram(pit, bins=edges)[0].astype(float)
    else:
        half = 0.5 / (samples + 1)
        lo, hi = pit[:, None] - half, pit[:, None] + half  # (N, 1) each slot's edges
        overlap = np.minimum(hi, edges[1:]) - np.maximum(lo, edges[:-1])  # (N, bins)
        counts = (np.clip(overlap, 0.0, None) / (2 * half)).sum(axis=0)
    labels = [f"{a:.2f}-{b:.2f}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return pd.Series(counts / max(len(pit), 1), index=pd.Index(labels, name="pit_bin"))


def conformal_margin(lower: np.ndarray, upper: np.ndarray, realised: np.ndarray,
                     level: float) -> float:
    """Split-conformal margin for bands ``[lower, upper]`` to cover ``level`` (CQR).

    The conformity score of a calibration point is how far it falls outside its band
    (negative inside); the margin is its ``ceil((n + 1) level) / n`` empirical quantile.
    """
    level = _check_level(level)
    ok = np.isfinite(realised)
    score = np.maximum(lower[ok] - realised[ok], realised[ok] - upper[ok])
    n = len(score)
    if n == 0:
        raise ValueError("no calibration points with a realised value")
    rank = math.ceil((n + 1) * level)
    return float("inf") if rank > n else float(np.sort(score)[rank - 1])


@dataclass
class Calibration:
    """Per-step calibration tables (index: forecast step 1..P)."""

    coverage: pd.DataFrame  # step × nominal level → empirical coverage
    pit: pd.DataFrame  # PIT bin × step → share
    crps: pd.Series  # step → mean CRPS
    n: pd.Series  # step → windows with a realised value
    conformal: pd.DataFrame | None  # (step, level) → margin, raw and recalibrated test coverage
    skill: ForecastSkill | None = None  # accuracy vs naive forecasts, with DM / binomial tests

    def summary(self) -> pd.DataFrame:
        """n, 50%/80% coverage and CRPS per step."""
        out = pd.DataFrame({"n": self.n})
        for level in CONFORMAL_LEVELS:
            if level in self.coverage.columns:
                out[f"cover{int(level * 100)}"] = self.coverage[level]
        out["crps"] = self.crps
        return out

    def table(self) -> str:
        text = ["path calibration (nominal 50% / 80% bands):", self.summary().to_string(
            float_format=lambda v: f"{v:.4f}")]
        if self.conformal is not None:
            text += ["split-conformal recalibration (coverage on the later windows):",
                     self.conformal.to_string(float_format=lambda v: f"{v:.4f}")]
        if self.skill is not None:
            text.append(self.skill.table())
        return "\n".join(text)


def _conformal_table(ret: np.ndarray, real: np.ndarray, cal: np.ndarray,
                     test: np.ndarray) -> pd.DataFrame:
    rows = {}
    for h in range(ret.shape[2]):
        for level in CONFORMAL_LEVELS:
            lo, hi = central_band(ret[:, :, h], level)
            y = real[:, h]
            c, t = cal & np.isfinite(y), test & np.isfinite(y)
            if not c.any() or not t.any():
                continue
            margin = conformal_margin(lo[c], hi[c], y[c], level)
            raw = ((y[t] >= lo[t]) & (y[t] <= hi[t])).mean()
            fixed = ((y[t] >= lo[t] - margin) & (y[t] <= hi[t] + margin)).mean()
            rows[(h + 1, level)] = {"margin": margin, "test_raw": raw, "test_conformal": fixed,
                                    "n_cal": int(c.sum()), "n_test": int(t.sum())}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(list(rows), names=["step", "level"])
    return frame


def _split_windows(forecasts: PanelForecasts, panel: pd.DataFrame,
                   fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (N,) calibration / test masks: earlier dates calibrate, later ones test."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"conformal_split must be in (0, 1), got {fraction!r}")
    calendar = pd.DatetimeIndex(panel.index.get_level_values("datetime").unique()).sort_values()
    when = forecasts.keys.get_level_values("datetime")
    dates = when.unique().sort_values()
    first_test = dates[min(len(dates) - 1, int(len(dates) * fraction))]
    steps = forecasts.batch.paths.shape[2]
    # A calibration outcome must be known by the first test date: P bars of embargo.
    known_at = calendar.get_indexer(when) + steps
    cal = known_at <= calendar.get_loc(first_test)
    return cal, np.asarray(when >= first_test)


def calibrate(forecasts: PanelForecasts, panel: pd.DataFrame, *,
              levels: tuple[float, ...] = CURVE_LEVELS, bins: int = 10, log: bool = False,
              conformal_split: float | None = 0.5,
              vol_window: int = DEFAULT_VOL_WINDOW) -> Calibration:
    """Coverage, PIT, CRPS, forecast skill and (optionally) split-conformal recalibration of
    panel forecasts.

    ``conformal_split`` is the share of rebalance dates used to calibrate (None: skip);
    ``vol_window`` the bars of the historical-volatility bands of the skill table.
    """
    panel = validate_panel(panel)
    levels = tuple(sorted({_check_level(v) for v in tuple(levels) + CONFORMAL_LEVELS}))
    skill = forecast_skill(forecasts, panel, log=log, vol_window=vol_window)
    real = skill.realised  # (N, P)
    ret = replace(forecasts.batch, log=log).returns  # (N, S, P)
    steps = pd.RangeIndex(1, ret.shape[2] + 1, name="step")
    ok = np.isfinite(real)
    coverage = pd.DataFrame([[band_coverage(ret[:, :, h], real[:, h], lv) for lv in levels]
                             for h in range(len(steps))], index=steps,
                            columns=pd.Index(levels, name="level"))
    pit = pd.DataFrame({h + 1: pit_histogram(pit_values(ret[ok[:, h], :, h], real[ok[:, h], h]),
                                             bins, samples=ret.shape[1])
                        for h in range(len(steps))})
    pit.columns.name = "step"
    crps = skill.steps["crps"].reindex(steps)
    conformal = None
    if conformal_split is not None:
        cal, test = _split_windows(forecasts, panel, conformal_split)
        conformal = _conformal_table(ret, real, cal, test)
    return Calibration(coverage, pit, crps.rename("crps"),
                       pd.Series(ok.sum(axis=0), index=steps, name="n"), conformal, skill)

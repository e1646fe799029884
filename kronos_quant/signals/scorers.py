"""Scorers: sampled forecast paths → one number per forecast window.

A scorer is a function ``fn(batch: PathBatch) -> np.ndarray`` of shape ``(N,)`` that turns the
sample paths of ``N`` windows into ``N`` scores, vectorised over windows so that a universe
of thousands of windows is scored in a few numpy calls. Returns are those of ``close``
relative to the last observed close: ``close / last_close - 1`` (simple, the default) or
``log(close / last_close)`` (``log=True``). With ``r[s, h]`` the return of path ``s`` at
step ``h = 1..P`` and ``R[s] = r[s, P]`` the return at the horizon:

=====================  ========================================================================
expected_return        mean_s R[s]
expected_return_avg    mean_s mean_h r[s, h]  (the horizon-averaged expected return)
prob_up                share of paths with close[s, P] > last_close
median_return          median_s R[s]
quantile_spread        q90(R) − q10(R)  (forecast uncertainty, not direction)
sharpe                 mean_s R[s] / std_s R[s]  (population std; NaN when the paths agree)
cvar_10                mean of the worst ceil(10% × S) values of R (expected shortfall; higher
                       is safer)
volatility             std of the sampled bar-to-bar returns, pooled over paths and steps
                       (the first bar is measured from the last observed close)
ref_last, ref_mean,    the upstream Kronos qlib example's four signals: m[h] = mean_s close[s, h]
ref_max, ref_min       is the mean path, and e.g. ref_last = (m[P] − last_close) / scale. The
                       upstream works on normalised model outputs, so the difference is in units
                       of ``scale = std(context close) + 1e-5`` (population std) and the last
                       close is clipped to ±clip standard deviations as the model input is; it is
                       *not* divided by the last close. ref_mean/max/min use mean_h, max_h, min_h
                       of m[h].
=====================  ========================================================================

Register your own with :func:`register_scorer`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..forecast import Forecast
from ..inputs import BAR_COLUMNS, NORM_EPS

CLOSE = BAR_COLUMNS.index("close")


@dataclass(frozen=True)
class PathBatch:
    """Sample paths of ``N`` forecast windows plus what scorers need from their contexts.

    Attributes
    ----------
    paths
        (N, S, P, 6) price units, columns :data:`~kronos_quant.inputs.BAR_COLUMNS`.
    last_close
        (N,) last observed close of each window.
    close_mean, close_std
        (N,) mean and population std of the context closes (the predictor's normalisation).
    log
        Returns are log returns when True, simple returns otherwise.
    clip
        The predictor's input clip (only the ``ref_*`` scorers use it).
    """

    paths: np.ndarray
    last_close: np.ndarray
    close_mean: np.ndarray
    close_std: np.ndarray
    log: bool = False
    clip: float = 5.0

    def __post_init__(self) -> None:
        if self.paths.ndim != 4 or self.paths.shape[-1] != len(BAR_COLUMNS):
            raise ValueError(f"paths must be (N, S, P, {len(BAR_COLUMNS)}), got {self.paths.shape}")
        n = self.paths.shape[0]
        for name in ("last_close", "close_mean", "close_std"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"{name} must have shape ({n},), "
                                 f"got {np.shape(getattr(self, name))}")

    def __len__(self) -> int:
        return self.paths.shape[0]

    @property
    def close(self) -> np.ndarray:
        """(N, S, P) sampled closes, float64."""
        return self.paths[..., CLOSE].astype(np.float64)

    def _ret(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.log(num / den) if self.log else num / den - 1.0

    @property
    def returns(self) -> np.ndarray:
        """(N, S, P) return of each sampled close relative to the last observed close."""
        return self._ret(self.close, self.last_close[:, None, None])

    @property
    def horizon_returns(self) -> np.ndarray:
        """(N, S) return at the last forecast step."""
        return self.returns[:, :, -1]

    @property
    def bar_returns(self) -> np.ndarray:
        """(N, S, P) bar-to-bar returns; the first is from the last observed close."""
        close = self.close
        prev = np.concatenate([np.broadcast_to(self.last_close[:, None, None],
                                               close[:, :, :1].shape), close[:, :, :-1]], axis=2)
        return self._ret(close, prev)

    @classmethod
    def from_forecasts(cls, forecasts: Sequence[Forecast], *, log: bool = False,
                       clip: float = 5.0) -> PathBatch:
        """Stack forecasts that share sample_count and pred_len."""
        shapes = {fc.paths.shape for fc in forecasts}
        if len(shapes) != 1:
            raise ValueError(f"forecasts must share (samples, pred_len, columns) to be scored "
                             f"together, got shapes {sorted(shapes)}; score them separately")
        closes = [fc.history["close"].to_numpy(np.float64) for fc in forecasts]
        return cls(paths=np.stack([fc.paths for fc in forecasts]),
                   last_close=np.array([c[-1] for c in closes]),
                   close_mean=np.array([c.mean() for c in closes]),
                   close_std=np.array([c.std() for c in closes]), log=log, clip=clip)


ScorerFn = Callable[[PathBatch], np.ndarray]


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScorerFn
    description: str


_REGISTRY: dict[str, Scorer] = {}


def register_scorer(name: str, *, overwrite: bool = False) -> Callable[[ScorerFn], ScorerFn]:
    """Decorator adding ``fn(batch: PathBatch) -> (N,) array`` to the registry under ``name``.

    Example::

        @register_scorer("upside_tail")
        def upside_tail(batch):
            return np.quantile(batch.horizon_returns, 0.9, axis=1)
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"scorer name must be an identifier-like string, got {name!r}")

    def add(fn: ScorerFn) -> ScorerFn:
        if not callable(fn):
            raise TypeError(f"scorer {name!r} must be callable, got {type(fn).__name__}")
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"scorer {name!r} is already registered; pass overwrite=True")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Scorer(name, fn, doc[0] if doc else "")
        return fn

    return add


def get_scorer(name: str) -> ScorerFn:
    """The registered scorer function called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown scorer {name!r}; registered scorers: {list_scorers()}")
    return _REGISTRY[name].fn


def list_scorers() -> list[str]:
    """Names of all registered scorers, built-ins first (registration order)."""
    return list(_REGISTRY)


def describe_scorers() -> dict[str, str]:
    """Registered scorer name → one-line description."""
    return {name: s.description for name, s in _REGISTRY.items()}


def resolve_scorers(scorers: str | Iterable[str] | None) -> list[str]:
    """Validate a scorer selection (None = every built-in) and return the names."""
    if scorers is None:
        return list(BUILTIN_SCORERS)
    names = [scorers] if isinstance(scorers, str) else list(scorers)
    if not names:
        raise ValueError("no scorers selected")
    for name in names:
        get_scorer(name)
    if len(set(names)) != len(names):
        raise ValueError(f"scorer names repeat: {names}")
    return names


def score_batch(batch: PathBatch,
                scorers: str | Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Run the selected scorers on a batch → ``{name: (N,) float64}``."""
    out = {}
    for name in resolve_scorers(scorers):
        values = np.asarray(get_scorer(name)(batch), dtype=np.float64)
        if values.shape != (len(batch),):
            raise ValueError(f"scorer {name!r} returned shape {values.shape} for {len(batch)} "
                             f"windows; it must return one value per window")
        out[name] = values
    return out


def score_forecasts(forecasts: Mapping[str, Forecast] | Sequence[Forecast],
                    scorers: str | Iterable[str] | None = None, *, log: bool = False,
                    clip: float = 5.0) -> pd.DataFrame:
    """Scores of many forecasts: one row per forecast (its key or name), one column per scorer."""
    keyed = isinstance(forecasts, Mapping)
    items = list(forecasts.values()) if keyed else list(forecasts)
    if not items:
        raise ValueError("no forecasts given")
    for fc in items:
        if not isinstance(fc, Forecast):
            raise TypeError(f"expected Forecast objects, got {type(fc).__name__}")
    labels = list(forecasts.keys()) if keyed else [fc.name for fc in items]
    batch = PathBatch.from_forecasts(items, log=log, clip=clip)
    return pd.DataFrame(score_batch(batch, scorers), index=pd.Index(labels, name="name"))


def score_forecast(forecast: Forecast, scorers: str | Iterable[str] | None = None, *,
                   log: bool = False, clip: float = 5.0) -> pd.Series:
    """Scores of one forecast as a Series indexed by scorer name."""
    frame = score_forecasts([forecast], scorers, log=log, clip=clip)
    return frame.iloc[0].rename(forecast.name)


# -- built-in scorers ---------------------------------------------------------------------

@register_scorer("expected_return")
def expected_return(batch: PathBatch) -> np.ndarray:
    """Mean over paths of the return at the horizon."""
    return batch.horizon_returns.mean(axis=1)


@register_scorer("expected_return_avg")
def expected_return_avg(batch: PathBatch) -> np.ndarray:
    """Mean over paths and forecast steps of the return from the last close."""
    return batch.returns.mean(axis=(1, 2))


@register_scorer("prob_up")
def prob_up(batch: PathBatch) -> np.ndarray:
    """Share of paths whose close at the horizon is above the last close."""
    return (batch.close[:, :, -1] > batch.last_close[:, None]).mean(axis=1)


@register_scorer("median_return")
def median_return(batch: PathBatch) -> np.ndarray:
    """Median over paths of the return at the horizon."""
    return np.median(batch.horizon_returns, axis=1)


@register_scorer("quantile_spread")
def quantile_spread(batch: PathBatch) -> np.ndarray:
    """q90 − q10 of the horizon return over paths (forecast uncertainty)."""
    q10, q90 = np.quantile(batch.horizon_returns, [0.1, 0.9], axis=1)
    return q90 - q10


@register_scorer("sharpe")
def sharpe(batch: PathBatch) -> np.ndarray:
    """Mean / std of the horizon return over paths (NaN when every path agrees)."""
    ret = batch.horizon_returns
    mean, std = ret.mean(axis=1), ret.std(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / np.where(std > 0, std, 1.0), np.nan)


@register_scorer("cvar_10")
def cvar_10(batch: PathBatch) -> np.ndarray:
    """Mean of the worst 10% of horizon returns (at least one path); higher is safer."""
    ret = np.sort(batch.horizon_returns, axis=1)
    k = max(1, math.ceil(0.1 * ret.shape[1]))
    return ret[:, :k].mean(axis=1)


@register_scorer("volatility")
def volatility(batch: PathBatch) -> np.ndarray:
    """Std of sampled bar-to-bar returns, pooled over paths and steps."""
    return batch.bar_returns.std(axis=(1, 2))


def _reference_gap(batch: PathBatch, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """reduce_h(mean path) − clipped last close, in normalised (context-std) units."""
    scale = batch.close_std + NORM_EPS
    mean_path = (batch.close.mean(axis=1) - batch.close_mean[:, None]) / scale[:, None]  # (N, P)
    last = np.clip((batch.last_close - batch.close_mean) / scale, -batch.clip, batch.clip)
    return reduce(mean_path) - last


@register_scorer("ref_last")
def ref_last(batch: PathBatch) -> np.ndarray:
    """Upstream 'last': mean path at the horizon − last close (context-std units)."""
    return _reference_gap(batch, lambda m: m[:, -1])


@register_scorer("ref_mean")
def ref_mean(batch: PathBatch) -> np.ndarray:
    """Upstream 'mean': time-average of the mean path − last close (context-std units)."""
    return _reference_gap(batch, lambda m: m.mean(axis=1))


@register_scorer("ref_max")
def ref_max(batch: PathBatch) -> np.ndarray:
    """Upstream 'max': maximum of the mean path − last close (context-std units)."""
    return _reference_gap(batch, lambda m: m.max(axis=1))


@register_scorer("ref_min")
def ref_min(batch: PathBatch) -> np.ndarray:
    """Upstream 'min': minimum of the mean path − last close (context-std units)."""
    return _reference_gap(batch, lambda m: m.min(axis=1))


BUILTIN_SCORERS: tuple[str, ...] = tuple(_REGISTRY)

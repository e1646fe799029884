"""What ``/forecast`` and ``/score`` accept, checked against the limits, and what they return.

Bars arrive as JSON records or CSV text and become DataFrames checked by the library itself
(:func:`~kronos_quant.inputs.prepare_series`, :func:`~kronos_quant.data.panel_from_frames`),
so a bad bar gets the library's one-line message (column, row, value). Replies are plain
JSON: NaN becomes ``null``.
"""
from __future__ import annotations

import io
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..data import panel_from_frames
from ..forecast import Forecast, forecast_summary
from ..generation import SamplingParams
from ..inputs import BAR_COLUMNS, PreparedSeries, prepare_series
from ..signals import PathBatch, score_batch
from .settings import LimitError, ServeSettings, check_limit

SEED_LIMIT = 2**63 - 1


class SamplingFields(BaseModel):
    """Sampling settings shared by both endpoints (``None``: the server's default)."""

    model_config = ConfigDict(extra="forbid")

    pred_len: int | None = Field(None, ge=1, description="bars to forecast")
    sample_count: int | None = Field(None, ge=1, description="Monte Carlo paths per series")
    seed: int | None = Field(None, ge=0, le=SEED_LIMIT,
                             description="omitted: the server draws one and returns it")
    T: float = Field(1.0, gt=0, description="sampling temperature")
    top_k: int = Field(0, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)


class ForecastRequest(SamplingFields):
    """``POST /forecast`` body (JSON). The same fields are query parameters of a CSV body."""

    bars: list[dict[str, Any]] = Field(
        ..., description="oldest first; timestamp, open, high, low, close[, volume, amount]")
    quantiles: list[float] | None = Field(None, description="default 0.1, 0.5, 0.9")
    paths: bool = Field(False, description="return every sample path")
    name: str | None = Field(None, max_length=64, description="series label")


class ScoreRequest(SamplingFields):
    """``POST /score`` body: a small panel, one list of bars per instrument."""

    bars: dict[str, list[dict[str, Any]]] = Field(
        ..., description="instrument → bars (oldest first), as in /forecast")
    lookback: int | None = Field(None, ge=2, description="context bars per instrument")


@dataclass(frozen=True)
class ForecastJob:
    """One checked forecast request, ready for the model.

    ``key`` holds the settings a batch must share; ``series`` the context as the library's
    own :func:`~kronos_quant.inputs.prepare_series` checked and prepared it.
    """

    series: PreparedSeries
    pred_len: int
    sampling: SamplingParams
    seed: int
    quantiles: tuple[float, ...]
    paths: bool
    name: str | None

    @property
    def key(self) -> tuple:
        return self.pred_len, self.sampling


def _sampling(req: SamplingFields, settings: ServeSettings,
              max_context: int) -> tuple[int, SamplingParams, int]:
    pred_len = req.pred_len or settings.pred_len
    limit = min(settings.max_pred_len, max_context)
    check_limit("pred_len", pred_len, limit,
                setting="max_pred_len" if limit == settings.max_pred_len else "max_context")
    samples = check_limit("sample_count", req.sample_count or settings.sample_count,
                          settings.max_samples, setting="max_samples")
    sampling = SamplingParams(T=req.T, top_k=req.top_k, top_p=req.top_p, sample_count=samples)
    seed = secrets.randbelow(SEED_LIMIT) if req.seed is None else req.seed
    return pred_len, sampling, seed


def _quantiles(values: Sequence[float] | None, settings: ServeSettings) -> tuple[float, ...]:
    if values is None:
        return settings.quantiles
    check_limit("number of quantiles", len(values), settings.max_quantiles,
                setting="max_quantiles")
    if not values or any(not (0.0 < q < 1.0) for q in values):
        raise ValueError(f"quantiles must be numbers in (0, 1), got {list(values)}")
    return tuple(sorted(set(float(q) for q in values)))


def bars_frame(records: list[dict[str, Any]], settings: ServeSettings, *,
               what: str = "bars") -> pd.DataFrame:
    """JSON records → a DataFrame (values unchecked: the library checks them)."""
    check_limit(f"{what}: number of bars", len(records), settings.max_bars, setting="max_bars")
    if not records:
        raise ValueError(f"{what}: no bars given")
    return pd.DataFrame.from_records(records)


def forecast_job(req: ForecastRequest, settings: ServeSettings, *, clip: float,
                 max_context: int) -> ForecastJob:
    """A checked job; ValueError/TypeError (the library's message) or LimitError if not."""
    frame = bars_frame(req.bars, settings)
    pred_len, sampling, seed = _sampling(req, settings, max_context)
    sample_count = sampling.sample_count
    if req.paths:
        check_limit("paths in the reply (sample_count)", sample_count, settings.max_reply_paths,
                    setting="max_reply_paths")
    series = prepare_series(frame, pred_len=pred_len, clip=clip)  # the library's own checks
    return ForecastJob(series, pred_len, sampling, seed, _quantiles(req.quantiles, settings),
                       req.paths, req.name)


def read_csv_bars(body: bytes) -> list[dict[str, Any]]:
    """CSV text with a header row → records (values as the CSV reader typed them)."""
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"could not read the CSV body: {str(err).splitlines()[0]}") from None
    return frame.to_dict(orient="records")


def parse_quantile_text(text: str | None) -> list[float] | None:
    """``"0.1,0.5,0.9"`` (a CSV request's query parameter) → floats."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"quantiles must be comma-separated numbers, got {text!r}") from None


def plain(values: Any) -> Any:
    """numpy values → JSON-ready Python (NaN and ±inf become None)."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            values = np.where(np.isfinite(values), values, None)
        return values.tolist()
    if isinstance(values, list):
        return [plain(v) for v in values]
    if isinstance(values, (float, np.floating)):
        value = float(values)
        return value if math.isfinite(value) else None
    if isinstance(values, np.integer):
        return int(values)
    return values


def forecast_payloads(forecasts: Sequence[Forecast], jobs: Sequence[ForecastJob], *,
                      model_label: str | None = None) -> list[dict[str, Any]]:
    """The replies to forecasts that share sample_count and pred_len: stamps, mean,
    quantiles, scores and optionally the paths of each.

    Quantiles, means and scores are computed for the whole group at once (a few numpy calls
    instead of a few per request); each reply holds the numbers :class:`Forecast` and
    :func:`~kronos_quant.signals.score_forecast` give for that forecast alone.
    """
    paths = np.stack([fc.paths for fc in forecasts])  # (n, S, P, 6)
    levels = sorted(set().union(*(job.quantiles for job in jobs)))
    table = dict(zip(levels, np.quantile(paths, levels, axis=1), strict=True))  # q → (n, P, 6)
    means = paths.mean(axis=1)  # (n, P, 6)
    scores = score_batch(PathBatch.from_forecasts(list(forecasts)))  # name → (n,)
    out = []
    for k, (fc, job) in enumerate(zip(forecasts, jobs, strict=True)):
        reply: dict[str, Any] = {
            "model": model_label or fc.model_label, "name": fc.name, "seed": job.seed,
            "pred_len": fc.pred_len, "sample_count": fc.sample_count,
            "columns": list(BAR_COLUMNS),
            "last": {"timestamp": str(fc.history.index[-1]),
                     **dict(zip(BAR_COLUMNS, plain(fc.history.to_numpy()[-1]), strict=True))},
            "timestamps": [str(t) for t in fc.index],
            "mean": _columns(means[k]),
            "quantiles": {f"{q:g}": _columns(table[q][k]) for q in job.quantiles},
            "scores": {name: plain(values[k]) for name, values in scores.items()},
            "summary": forecast_summary(fc, model_label=model_label),  # close at the horizon
        }
        if job.paths:
            reply["paths"] = plain(fc.paths)  # (sample_count, pred_len, 6), columns as above
        out.append(reply)
    return out


def _columns(values: np.ndarray) -> dict[str, list]:
    """(P, 6) bars → column name → values."""
    return {col: plain(values[:, i]) for i, col in enumerate(BAR_COLUMNS)}


def score_panel_input(req: ScoreRequest, settings: ServeSettings,
                      max_context: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The validated panel and the keyword arguments of ``score_panel`` for its last date."""
    check_limit("number of instruments", len(req.bars), settings.max_instruments,
                setting="max_instruments")
    frames = {name: bars_frame(rows, settings, what=f"instrument {name!r}")
              for name, rows in req.bars.items()}
    pred_len, sampling, seed = _sampling(req, settings, max_context)
    lookback = check_limit("lookback", req.lookback or settings.lookback, settings.max_bars,
                           setting="max_bars")
    panel = panel_from_frames(frames)
    last = panel.index.get_level_values("datetime").max()
    return panel, dict(lookback=lookback, pred_len=pred_len,
                       sample_count=sampling.sample_count, T=sampling.T, top_k=sampling.top_k,
                       top_p=sampling.top_p, seed=seed, start=last, end=last, freq=1,
                       verbose=False)


def score_payload(scores: pd.DataFrame, model_label: str | None) -> dict[str, Any]:
    """Scores of the last date: instrument → scorer → value, with the settings used."""
    date = scores.index.get_level_values("datetime").max()
    rows = scores.xs(date, level="datetime")
    return {"model": model_label, "datetime": str(date),
            "scores": {str(inst): {k: plain(v) for k, v in row.items()}
                       for inst, row in rows.iterrows()},
            "settings": {k: plain(v) for k, v in scores.attrs.items()}}


__all__ = ["ForecastRequest", "ScoreRequest", "ForecastJob", "LimitError", "forecast_job",
           "read_csv_bars", "parse_quantile_text", "forecast_payloads", "score_panel_input",
           "score_payload", "plain"]

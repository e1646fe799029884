"""Held-out evaluation of a tokenizer/predictor pair against naive baselines.

Used for the demo model's card, and usable on any finetuned pair:

* tokenizer: reconstruction MSE of validation windows (normalised units) vs predicting the
  lookback mean (MSE of zero);
* predictor: next-token cross-entropy (nats) on validation windows vs a uniform distribution
  over the vocabulary and vs the unigram frequencies of the training tokens;
* forecasts: sampled paths from held-out contexts vs the random walk (no change): MAE of the
  close return at several horizons with a Diebold–Mariano test, direction accuracy vs the
  best constant direction with a binomial test (:func:`kronos_quant.signals.skill_table`),
  and the share of outcomes inside the 10–90% band of the sampled returns.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..data import dates as panel_dates
from ..data import panel_to_frames
from ..finetune.config import FinetuneConfig
from ..finetune.dataset import TrainingWindows, build_windows, split_dates
from ..finetune.tasks import causal_s2_attention, next_token_losses
from ..model import Kronos
from ..predictor import KronosPredictor
from ..signals import DEFAULT_VOL_WINDOW, skill_table
from ..tokenizer import KronosTokenizer


def _subset(windows: TrainingWindows, mask: np.ndarray, limit: int) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).round().astype(np.int64)]
    return idx


@torch.no_grad()
def _tokens(tokenizer: KronosTokenizer, windows: TrainingWindows, idx: np.ndarray,
            batch: int = 256):
    """(s1, s2, stamp) of windows ``idx``, in batches."""
    out = []
    for chunk in np.array_split(idx, max(1, math.ceil(len(idx) / batch))):
        x, stamp = windows.batch(chunk)
        s1, s2 = tokenizer.encode(x, half=True)  # (b, W) each
        out.append((s1, s2, stamp))
    return [torch.cat(parts) for parts in zip(*out, strict=True)]


def _unigram_ce(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab: int) -> float:
    counts = torch.bincount(train_ids.reshape(-1), minlength=vocab).double() + 1.0  # add-one
    log_p = torch.log(counts / counts.sum())
    return float(-log_p[val_ids.reshape(-1)].mean())


@torch.no_grad()
def token_metrics(tokenizer: KronosTokenizer, model: Kronos, train: TrainingWindows,
                  val: TrainingWindows, val_idx: np.ndarray, *,
                  train_limit: int = 4096) -> dict[str, float]:
    """Validation cross-entropies of ``model`` and of the uniform/unigram baselines."""
    model.eval()
    tr_s1, tr_s2, _ = _tokens(tokenizer, train, _subset(train, np.ones(len(train), bool),
                                                        train_limit))
    s1, s2, stamp = _tokens(tokenizer, val, val_idx)
    sums = {"loss": 0.0, "ce_s1": 0.0, "ce_s2": 0.0}
    for chunk in torch.split(torch.arange(len(s1)), 256):
        with causal_s2_attention(model):
            parts = next_token_losses(model, model, s1[chunk], s2[chunk], stamp[chunk])
        for key in sums:
            sums[key] += float(parts[key]) * len(chunk)
    out = {f"model_{k}": v / len(s1) for k, v in sums.items()}
    for name, train_ids, val_ids in (("s1", tr_s1, s1), ("s2", tr_s2, s2)):
        vocab = 2 ** getattr(model, f"{name}_bits")
        out[f"uniform_ce_{name}"] = math.log(vocab)
        out[f"unigram_ce_{name}"] = _unigram_ce(train_ids, val_ids[:, 1:], vocab)
    out["windows"] = len(s1)
    return out


@torch.no_grad()
def reconstruction_metrics(tokenizer: KronosTokenizer, val: TrainingWindows,
                           val_idx: np.ndarray) -> dict[str, float]:
    """Validation reconstruction MSE (full code and s1 only) vs the zero predictor."""
    tokenizer.eval()
    sums = np.zeros(3)
    for chunk in np.array_split(val_idx, max(1, math.ceil(len(val_idx) / 256))):
        x, _ = val.batch(chunk)
        (z_pre, z), _, _, _ = tokenizer(x)
        sums += len(chunk) * np.array([float(F.mse_loss(z, x)), float(F.mse_loss(z_pre, x)),
                                       float((x ** 2).mean())])
    mse, pre, zero = sums / len(val_idx)
    return {"recon_mse": mse, "recon_s1_only_mse": pre, "zero_predictor_mse": zero,
            "windows": len(val_idx)}


def _origins(frame: pd.DataFrame, val_from: pd.Timestamp, lookback: int, pred_len: int,
             stride: int) -> range:
    """First forecast bars t whose context frame[t-lookback:t] lies in the held-out part."""
    first = int(frame.index.searchsorted(val_from)) + lookback
    return range(first, len(frame) - pred_len + 1, stride)


def heldout_forecast_skill(predictor: KronosPredictor, panel: pd.DataFrame,
                           instruments: list[str], *, val_from: pd.Timestamp, lookback: int,
                           pred_len: int, stride: int, samples: int, seed: int = 0,
                           horizons: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    """Sampled forecasts from held-out contexts vs the random walk, per horizon: the numbers
    and tests of :func:`kronos_quant.signals.skill_table` (DM on per-date losses, binomial
    direction test) and the 10–90% band coverage."""
    frames = panel_to_frames(panel)
    contexts, futures = [], []
    for name in instruments:
        frame = frames[name]
        for t in _origins(frame, val_from, lookback, pred_len, stride):
            contexts.append(frame.iloc[t - lookback:t])
            futures.append(frame.iloc[t:t + pred_len])
    if not contexts:
        return {"windows": 0}
    forecasts = predictor.forecast_batch(contexts, pred_len=pred_len, sample_count=samples,
                                         y_timestamps=[f.index for f in futures], seed=seed)
    last = np.array([c["close"].iloc[-1] for c in contexts])  # (N,)
    # Simple returns: a sampled path may decode to a non-positive price, which a log return
    # would turn into NaN; such paths stay in (and are counted), not silently dropped.
    real = np.stack([f["close"].to_numpy() for f in futures]) / last[:, None] - 1.0  # (N, P)
    closes = np.stack([fc.column_paths("close") for fc in forecasts])  # (N, S, P)
    paths = closes / last[:, None, None] - 1.0
    low, high = np.quantile(paths, [0.1, 0.9], axis=1)  # (N, P) each
    dates = np.array([c.index[-1] for c in contexts], dtype="datetime64[ns]")
    vol = np.array([c["close"].pct_change().iloc[-DEFAULT_VOL_WINDOW:].std() for c in contexts])
    table = skill_table(paths, real, dates, vol, spacing=float(stride))
    out: dict[str, Any] = {"windows": len(contexts), "samples": samples,
                           "nonpositive_close_share": float((closes <= 0).mean())}
    for h in sorted(set(horizons) | {pred_len}):
        row, r = table.loc[h], real[:, h - 1]
        out[f"h{h}"] = {
            "model_mae": float(row["mae"]), "random_walk_mae": float(row["mae_rw"]),
            "mae_dm_t": float(row["mae_dm_t"]), "mae_dm_p": float(row["mae_dm_p"]),
            "direction_accuracy": float(row["direction"]),
            "best_constant_direction": float(row["direction_baseline"]),
            "direction_p": float(row["direction_p"]),
            "band_10_90_coverage": float(((r >= low[:, h - 1]) & (r <= high[:, h - 1])).mean())}
    return out


def evaluate_pair(tokenizer: KronosTokenizer, model: Kronos, panel: pd.DataFrame,
                  config: FinetuneConfig, *, real_instruments: list[str],
                  quick: bool = False) -> dict[str, Any]:
    """All held-out metrics of a pair, separately for real and synthetic instruments."""
    train, val = build_windows(panel, config)
    if val is None:
        raise ValueError("evaluation needs a validation split (val_fraction > 0 or val_start)")
    _, val_from = split_dates(panel_dates(panel), config)
    predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=config.max_context,
                                clip=config.clip)
    limit, samples = (64, 4) if quick else (2048, 32)
    is_real = np.isin(val.instrument, real_instruments)
    names = sorted(set(panel.index.get_level_values("instrument")))
    groups = {"real": (is_real, real_instruments, 5),
              "synthetic": (~is_real, [n for n in names if n not in real_instruments], 20)}
    out: dict[str, Any] = {"val_from": str(val_from)}
    for group, (mask, members, stride) in groups.items():
        idx = _subset(val, mask, limit)
        if len(idx) == 0:
            continue
        out[group] = {
            "tokenizer": reconstruction_metrics(tokenizer, val, idx),
            "predictor": token_metrics(tokenizer, model, train, val, idx),
            "forecast": heldout_forecast_skill(
                predictor, panel, members, val_from=val_from, lookback=config.lookback,
                pred_len=config.pred_len, stride=stride * (8 if quick else 1), samples=samples)}
    return out

"""Training windows from a canonical panel: time split, look-ahead-free normalisation, sampling.

A window is ``lookback + pred_len + 1`` consecutive bars of one instrument. Each window is
normalised per column with the mean and population std of its first ``lookback`` bars only,
then clipped: the horizon bars never influence the inputs the model conditions on. (The
reference's training data normalises over the whole window, which leaks the future's level
and scale into every input bar.)
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..data import dates as panel_dates
from ..data import load_panel, panel_to_frames, resample_panel, validate_panel
from ..inputs import NORM_EPS, bar_matrix, time_features
from .config import FinetuneConfig

logger = logging.getLogger(__name__)



@dataclass
class TrainingWindows:
    """All windows of one split, stored as offsets into contiguous per-bar arrays.

    ``bars`` (N, 6) float32 in price units (``BAR_COLUMNS``), ``stamps`` (N, 5) time
    features, ``starts`` (M,) the row of each window's first bar (a window never crosses
    from one instrument into the next), ``instrument`` (M,) its instrument name.
    """

    bars: np.ndarray
    stamps: np.ndarray
    starts: np.ndarray
    instrument: np.ndarray
    lookback: int
    window: int
    clip: float

    def __len__(self) -> int:
        return len(self.starts)

    def raw(self, idx: np.ndarray) -> np.ndarray:
        """Un-normalised windows (B, W, 6) in price units."""
        rows = self.starts[np.asarray(idx)][:, None] + np.arange(self.window)  # (B, W)
        return self.bars[rows]

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised, clipped bars (B, W, 6) and time features (B, W, 5) of windows ``idx``."""
        rows = self.starts[np.asarray(idx)][:, None] + np.arange(self.window)  # (B, W)
        x = self.bars[rows]  # (B, W, 6)
        past = x[:, :self.lookback]  # statistics from the lookback part only: no look-ahead
        mean = past.mean(axis=1, keepdims=True)
        std = past.std(axis=1, keepdims=True) + np.float32(NORM_EPS)
        x = np.clip((x - mean) / std, -self.clip, self.clip).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(self.stamps[rows])


def epoch_order(n: int, *, epoch: int, seed: int, count: int | None = None) -> np.ndarray:
    """The windows of one epoch: a permutation of ``range(n)`` fixed by (seed, epoch),
    truncated to ``count``. Every rank computes the same order and takes its own shard."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order if count is None else order[:min(count, n)]


def shard(order: np.ndarray, *, rank: int, world_size: int, equal: bool = True) -> np.ndarray:
    """Rank ``rank``'s interleaved share of ``order``; ``equal`` drops the remainder so that
    every rank runs the same number of steps (a DistributedSampler without padding)."""
    if equal:
        order = order[:len(order) - len(order) % world_size]
    return order[rank::world_size]


def load_training_panel(config: FinetuneConfig) -> pd.DataFrame:
    """The panel ``config`` names (file, per-symbol directory or Qlib dir), filtered."""
    if config.data is None:
        raise ValueError("finetune config: `data` is required (a CSV/Parquet file, a directory "
                         "of per-symbol files, or a Qlib data directory with data_format: qlib)")
    if config.data_format == "qlib":
        panel = _load_qlib(config)
    else:
        panel = load_panel(config.data, instrument_col=config.instrument_col,
                           datetime_col=config.datetime_col)
    if config.freq is not None:
        panel = resample_panel(panel, config.freq)
    return select_panel(panel, config)


def _load_qlib(config: FinetuneConfig) -> pd.DataFrame:
    """A Qlib provider directory read through ``kronos_quant.adapters.qlib_data.read_provider``
    (imported here, on demand: the adapter needs the optional Qlib engine)."""
    try:
        adapter = importlib.import_module("kronos_quant.adapters.qlib_data")
    except ImportError as err:
        raise ValueError(
            f"data_format: qlib needs the Qlib adapter kronos_quant.adapters.qlib_data, which "
            f"could not be imported ({err}); install it with pip install 'kronos-quant[qlib]', "
            "or export the Qlib data to CSV/Parquet and point `data` at it") from None
    return validate_panel(adapter.read_provider(config.data, instruments=config.instruments,
                                                start=config.start, end=config.end))


def select_panel(panel: pd.DataFrame, config: FinetuneConfig) -> pd.DataFrame:
    """Validate and apply the ``instruments``/``start``/``end`` filters of ``config``."""
    panel = validate_panel(panel)
    if config.instruments:
        known = set(panel.index.get_level_values("instrument"))
        missing = sorted(set(config.instruments) - known)
        if missing:
            raise ValueError(f"instruments {missing} are not in the data "
                             f"(it has {len(known)}: {sorted(known)[:10]}...)")
        panel = panel[panel.index.get_level_values("instrument").isin(config.instruments)]
    stamps = panel.index.get_level_values("datetime")
    if config.start is not None:
        panel = panel[stamps >= pd.Timestamp(config.start)]
        stamps = panel.index.get_level_values("datetime")
    if config.end is not None:
        panel = panel[stamps <= pd.Timestamp(config.end)]
    if panel.empty:
        raise ValueError(f"no bars left after filtering to instruments={config.instruments}, "
                         f"start={config.start}, end={config.end}")
    return panel


def split_dates(dates: pd.DatetimeIndex, config: FinetuneConfig):
    """(first date excluded from training, first date allowed in validation) or (None, None)."""
    if config.val_start is not None:
        cut = int(dates.searchsorted(pd.Timestamp(config.val_start)))
    elif config.val_fraction > 0:
        cut = int(len(dates) * (1.0 - config.val_fraction))
    else:
        return None, None
    if cut >= len(dates):
        raise ValueError(f"validation would start at or after the last date {dates[-1]}; "
                         "lower val_fraction or move val_start earlier")
    val_from = cut + config.embargo
    return dates[cut], (dates[val_from] if val_from < len(dates) else None)


def build_windows(panel: pd.DataFrame, config: FinetuneConfig
                  ) -> tuple[TrainingWindows, TrainingWindows | None]:
    """Training and validation windows of a panel, split in time.

    Training windows end strictly before the split date; validation windows start at or after
    the split date plus ``embargo`` dates, so no bar is in both. Returns ``(train, None)``
    when ``val_fraction`` is 0 and no ``val_start`` is given.
    """
    panel = validate_panel(panel)
    w = config.window
    frames = panel_to_frames(panel)
    longest = max(len(f) for f in frames.values())
    if longest < w:
        raise ValueError(f"windows of lookback + pred_len + 1 = {w} bars are longer than the "
                         f"data: the longest instrument has {longest} bars")
    split, val_from = split_dates(panel_dates(panel), config)
    parts: dict[str, list] = {k: [] for k in ("bars", "stamps", "train", "val", "tr_i", "va_i")}
    offset = 0
    for name, frame in frames.items():
        ts = pd.DatetimeIndex(frame.index)
        parts["bars"].append(bar_matrix(frame, ts))
        parts["stamps"].append(time_features(ts))
        starts = np.arange(max(0, len(ts) - w + 1))
        first, last = ts[starts], ts[starts + w - 1]
        tr = starts if split is None else starts[last < split]
        va = starts[:0] if val_from is None else starts[first >= val_from]
        parts["train"].append(tr + offset)
        parts["val"].append(va + offset)
        parts["tr_i"] += [name] * len(tr)
        parts["va_i"] += [name] * len(va)
        offset += len(ts)
    bars, stamps = np.concatenate(parts["bars"]), np.concatenate(parts["stamps"])

    def make(key: str, names: str) -> TrainingWindows:
        return TrainingWindows(bars, stamps, np.concatenate(parts[key]).astype(np.int64),
                         np.asarray(parts[names], dtype=object), config.lookback, w, config.clip)

    train = make("train", "tr_i")
    if len(train) == 0:
        raise ValueError(f"no training window of {w} bars ends before the validation split "
                         f"{split}; lower lookback/pred_len or val_fraction")
    if split is None:
        return train, None
    val = make("val", "va_i")
    if len(val) == 0:
        where = "after the embargo" if val_from is not None else "(the embargo covers it)"
        raise ValueError(f"the validation part (dates from {val_from or split}) {where} holds no "
                         f"complete window of {w} bars; raise val_fraction, lower lookback/"
                         "pred_len/embargo, or set val_fraction: 0")
    logger.info("windows of %d bars: %d train (end before %s), %d validation (start from %s)",
                w, len(train), split, len(val), val_from)
    return train, val

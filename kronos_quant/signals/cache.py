"""On-disk forecast cache: sample paths in Parquet, keyed by a content hash.

A window's key is the sha256 of everything that determines its paths: a fingerprint of the
model and tokenizer weights (plus the predictor settings that change outputs), the window's
raw values and timestamps, the future timestamps, ``pred_len``, the sampling parameters and
the window's seed. Identical inputs therefore map to the same key in any later run, and any
change (new weights, one edited bar, another temperature) maps to a new key.

Files are long-format Parquet tables ``forecasts-<hash>.parquet`` with columns ``key,
sample, step, timestamp`` and the six bar columns (float32), one file per generation batch.
Full paths are stored, so scorers added later still work from the cache. The same files
(:func:`write_paths` / :func:`read_paths`) make up the partitions of the sharded forecast
store (:mod:`kronos_quant.signals.distributed`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..generation import SamplingParams
from ..inputs import BAR_COLUMNS
from ..io import atomic_path

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: future stamps always explicit (future_timestamps), per-module fingerprints
_FINGERPRINTS: weakref.WeakKeyDictionary[object, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes and bytes).

    Hashing reads every byte once; the result is remembered per module and recomputed only
    when a tensor was modified in place or replaced (its version counter or storage
    changed), so fine-tuning the same module object invalidates it.
    """
    named = list(module.state_dict(keep_vars=True).items())
    try:
        state: tuple | None = tuple((name, t._version, t.data_ptr()) for name, t in named)
    except RuntimeError:  # inference-mode tensors keep no version counter: always re-hash
        state = None
    known = _FINGERPRINTS.get(module)
    if state is not None and known is not None and known[0] == state:
        return known[1]
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in named:
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    _FINGERPRINTS[module] = (state, digest.hexdigest())
    return digest.hexdigest()


def weights_fingerprint(predictor) -> str:
    """sha256 of the predictor's model and tokenizer fingerprints and of its settings that
    change outputs (max_context, clip, slide_block, amp dtype, device type)."""
    settings = {"max_context": predictor.max_context, "clip": predictor.clip,
                "slide_block": predictor.slide_block, "amp_dtype": str(predictor.amp_dtype),
                "device": predictor.device.type, "format": CACHE_FORMAT,
                "model": module_fingerprint(predictor.model),
                "tokenizer": module_fingerprint(predictor.tokenizer)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def window_key(fingerprint: str, columns: Sequence[str], values: np.ndarray,
               x_stamps: np.ndarray, y_stamps: np.ndarray, *, pred_len: int,
               sampling: SamplingParams, seed: int) -> str:
    """Content hash of one forecast window (see the module docs for what it covers)."""
    header = {"fingerprint": fingerprint, "columns": list(columns), "pred_len": int(pred_len),
              "T": sampling.T, "top_k": sampling.top_k, "top_p": sampling.top_p,
              "samples": sampling.sample_count, "seed": int(seed), "shape": list(values.shape)}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    digest.update(np.asarray(x_stamps, dtype="datetime64[ns]").view(np.int64).tobytes())
    digest.update(np.asarray(y_stamps, dtype="datetime64[ns]").view(np.int64).tobytes())
    return digest.hexdigest()


@dataclass
class CachedPaths:
    """Paths (S, P, 6) float32 and future stamps (P,) datetime64[ns] of one window."""

    paths: np.ndarray
    stamps: np.ndarray


class ForecastCache:
    """Directory of Parquet files mapping window keys to sample paths."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"cache_dir {self.directory} exists and is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._where: dict[str, Path] = {}
        self._last: tuple[Path, dict[str, CachedPaths]] | None = None
        for file in sorted(self.directory.glob("forecasts-*.parquet")):
            try:
                keys = pd.read_parquet(file, columns=["key"])["key"].unique()
            except (OSError, ValueError, KeyError) as err:
                logger.warning("ignoring unreadable cache file %s: %s", file, err)
                continue
            self._where.update(dict.fromkeys(map(str, keys), file))
        logger.debug("forecast cache %s: %d windows in store", self.directory, len(self._where))

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedPaths]:
        """Cached paths of the given keys that are in the store (others are left out)."""
        by_file: dict[Path, list[str]] = {}
        for key in keys:
            if key in self._where:
                by_file.setdefault(self._where[key], []).append(key)
        found: dict[str, CachedPaths] = {}
        for file, wanted in by_file.items():
            entries = self._read(file)
            found.update({k: entries[k] for k in wanted})
        return found

    def _read(self, file: Path) -> dict[str, CachedPaths]:
        # Consecutive chunks usually hit the same file when batch sizes differ between runs.
        if self._last is not None and self._last[0] == file:
            return self._last[1]
        entries = read_paths(file)
        self._last = (file, entries)
        return entries

    def put_many(self, keys: Sequence[str], paths: np.ndarray, stamps: np.ndarray) -> Path | None:
        """Store windows: ``paths`` (N, S, P, 6), ``stamps`` (N, P). Returns the file written."""
        if len(keys) == 0:
            return None
        file = write_paths(self.directory / batch_file_name(keys), keys, paths, stamps)
        self._where.update(dict.fromkeys(keys, file))
        return file


def batch_file_name(keys: Sequence[str]) -> str:
    """File name of a batch of windows: ``forecasts-<hash of their keys>.parquet``."""
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    return f"forecasts-{digest[:24]}.parquet"


def write_paths(file: Path, keys: Sequence[str], paths: np.ndarray, stamps: np.ndarray) -> Path:
    """Write windows ``keys`` with ``paths`` (N, S, P, 6) and ``stamps`` (N, P) to one
    Parquet file, atomically (temp file, then rename): a reader never sees half a file."""
    n, n_samples, n_steps, _ = paths.shape
    frame = pd.DataFrame(paths.reshape(-1, paths.shape[-1]).astype(np.float32),
                         columns=list(BAR_COLUMNS))
    frame.insert(0, "timestamp", np.repeat(np.asarray(stamps, "datetime64[ns]"), n_samples,
                                           axis=0).reshape(-1))
    frame.insert(0, "step", np.tile(np.arange(n_steps, dtype=np.int32), n * n_samples))
    frame.insert(0, "sample", np.tile(np.repeat(np.arange(n_samples, dtype=np.int32), n_steps), n))
    frame.insert(0, "key", np.repeat(np.asarray(keys, dtype=object), n_samples * n_steps))
    with atomic_path(file) as tmp:
        frame.to_parquet(tmp, index=False)
    return file


def read_paths(file: Path) -> dict[str, CachedPaths]:
    """Every window of a file written by :func:`write_paths`, by key."""
    frame = pd.read_parquet(file)
    n_samples, n_steps = int(frame["sample"].max()) + 1, int(frame["step"].max()) + 1
    block = n_samples * n_steps
    if len(frame) % block:
        raise ValueError(f"corrupt forecast file {file}: {len(frame)} rows is not a multiple "
                         f"of samples × steps = {block}; delete it")
    n = len(frame) // block
    values = frame[list(BAR_COLUMNS)].to_numpy(np.float32).reshape(n, n_samples, n_steps, -1)
    stamps = frame["timestamp"].to_numpy("datetime64[ns]").reshape(n, n_samples, n_steps)
    keys = frame["key"].to_numpy()[::block]
    return {str(k): CachedPaths(values[i], stamps[i, 0]) for i, k in enumerate(keys)}

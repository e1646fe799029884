"""Score files: a (datetime, instrument) × scorer table on disk, with its metadata.

:func:`write_scores` writes Parquet (the metadata inside) or CSV (the metadata in a
``<name>.csv.attrs.json`` sidecar); :func:`read_scores` reads either back, or any long table
with ``datetime`` and ``instrument`` columns. The metadata is the frame's ``attrs``: the
scoring settings and the weights fingerprint of the model that made the scores.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..io import atomic_path, write_atomic


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".attrs.json")


def write_scores(scores: pd.DataFrame, path: str | Path) -> Path:
    """Scores to ``.parquet`` (default) or ``.csv``, keeping the (datetime, instrument) index
    and the frame's ``attrs`` (the scoring settings): inside the Parquet file, or in a
    ``<name>.csv.attrs.json`` sidecar next to a CSV. Written atomically (temp file, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    json.dumps(scores.attrs)  # fail before writing if an attr cannot be stored
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            scores.to_csv(tmp)
            if scores.attrs:
                write_atomic(_sidecar(path), json.dumps(scores.attrs, indent=1, sort_keys=True))
        else:
            scores.to_parquet(tmp)
    return path


def read_scores(path: str | Path) -> pd.DataFrame:
    """Scores written by :func:`write_scores` (or any long table with datetime/instrument),
    with their ``attrs`` restored (from the Parquet file or the CSV's sidecar, if any)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scores file {path} does not exist")
    csv = path.suffix.lower() == ".csv"
    frame = pd.read_csv(path) if csv else pd.read_parquet(path)
    attrs = dict(frame.attrs)
    if csv and _sidecar(path).is_file():
        attrs = json.loads(_sidecar(path).read_text())
    if isinstance(frame.index, pd.MultiIndex):
        frame = frame.reset_index()
    missing = [c for c in ("datetime", "instrument") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: scores need columns 'datetime' and 'instrument'; "
                         f"missing {missing}")
    if frame.empty:
        raise ValueError(f"{path} has no score rows (a header only): nothing to trade or "
                         "evaluate")
    frame["datetime"] = pd.to_datetime(frame["datetime"])
    frame["instrument"] = frame["instrument"].astype(str)
    frame = frame.set_index(["datetime", "instrument"]).sort_index()
    frame.attrs = attrs
    return frame

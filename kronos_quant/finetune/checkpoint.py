"""Checkpoint folders written as one unit, and the random streams a resumed run needs.

A checkpoint folder (``last/``, ``best/``, ``tokenizer/``) is never changed in place:
:func:`write_folder_atomic` builds the new one in ``<name>.tmp`` beside it, flushes it to disk,
moves the old folder away to ``<name>.old``, moves the new one in, and deletes the old one. A crash
at any moment leaves one complete folder that :func:`recover` puts back under ``<name>``: the
old one if the new one was not yet in place, the new one otherwise.

A resumed run equals an uninterrupted one only if dropout and sampled-s1 draws continue the
same random streams, so each process's states (python ``random``, numpy's global generator,
torch's CPU generator and its CUDA device's) are saved with the checkpoint, one file per rank.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"
RNG_DIR = "rng"


# -- random states -------------------------------------------------------------------------
def rng_state(device: torch.device) -> dict[str, Any]:
    """Every random state this process draws from while training on ``device``."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned (the CUDA state only on a CUDA device)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type != "cuda":
        return
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    else:  # a CPU run resumed on a GPU: its draws cannot repeat anyway
        logger.warning("the saved random state has no CUDA stream; %s keeps its own", device)


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run a block (e.g. validation) without advancing the training's random streams."""
    saved = rng_state(device)
    try:
        yield
    finally:
        set_rng_state(saved, device)


def rng_path(checkpoint: Path, rank: int) -> Path:
    return checkpoint / RNG_DIR / f"rank-{rank}.pt"


def write_rng_states(checkpoint: Path, states: list[dict[str, Any]]) -> None:
    """One file per rank, ``states[r]`` being rank r's :func:`rng_state`."""
    (checkpoint / RNG_DIR).mkdir(parents=True, exist_ok=True)
    for rank, state in enumerate(states):
        torch.save(state, rng_path(checkpoint, rank))


def read_rng_state(checkpoint: Path, rank: int) -> dict[str, Any] | None:
    """Rank ``rank``'s saved random state, or None for a checkpoint saved without one."""
    path = rng_path(checkpoint, rank)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


# -- folders written as one unit -----------------------------------------------------------
def staging_paths(target: Path) -> tuple[Path, Path]:
    """(folder the new version is built in, folder the old version is moved to)."""
    return (target.with_name(target.name + TMP_SUFFIX),
            target.with_name(target.name + OLD_SUFFIX))


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # Windows cannot open a directory for fsync; NTFS journals renames
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file below ``root``, and the folders holding them, to the disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(folder))


def recover(target: Path) -> None:
    """Bring ``target`` back to its last complete version after a crash in
    :func:`write_folder_atomic`.

    ``target`` present: the swap finished or never began, so staging leftovers go. ``target``
    absent but ``<name>.old`` present: the crash fell between the two renames, and the old
    folder is the last version known complete.
    """
    tmp, old = staging_paths(target)
    if not target.exists() and old.exists():
        _rename(old, target)
        logger.warning("recovered %s from %s after an interrupted checkpoint write",
                       target, old.name)
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
            logger.info("removed %s left by an interrupted checkpoint write", leftover)


def write_folder_atomic(target: Path, fill: Callable[[Path], Any]) -> Path:
    """Replace the folder ``target`` by what ``fill(folder)`` writes, as one unit."""
    recover(target)
    tmp, old = staging_paths(target)
    tmp.mkdir(parents=True)
    fill(tmp)
    fsync_tree(tmp)
    if target.exists():
        _rename(target, old)
    _rename(tmp, target)
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)
    return target

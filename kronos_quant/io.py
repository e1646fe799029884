"""Atomic file writes: a reader (or a crash) never sees half a file.

Every file the package writes for later reading goes through a temporary file in the
target's own folder (so the rename stays on one filesystem), is flushed to disk, then
replaces the target with :func:`os.replace`. On any error the temporary file is removed
and the old target, if any, is left untouched. Folders (fine-tuning checkpoints) have their
own swap, :func:`kronos_quant.finetune.checkpoint.write_folder_atomic`.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_atomic"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``.

    For writers that want a path rather than bytes (Parquet, CSV, HTML reports). The
    temporary name ends with the target's suffix, so writers that pick a format from the
    extension see the right one. Missing parent folders are created.

    Examples
    --------
    >>> with atomic_path(out / "scores.parquet") as tmp:  # doctest: +SKIP
    ...     frame.to_parquet(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # the data must be on disk before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # already gone after a successful rename


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; return the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(payload)
    return Path(path)

"""Atomic file writes (a reader, or a crash, never sees half a file) and the one table reader.

Every file the package writes for later reading goes through a temporary file in the
target's own folder (so the rename stays on one filesystem), is flushed to disk, then
replaces the target with :func:`os.replace`. On any error the temporary file is removed
and the old target, if any, is left untouched. The result gets the mode any new file gets
under the process's umask (``mkstemp`` creates its file 0600, which would leave results in a
shared folder unreadable to colleagues). Folders (fine-tuning checkpoints) have their own
swap, :func:`kronos_quant.finetune.checkpoint.write_folder_atomic`.

:func:`read_table` reads a user's CSV or Parquet file with one-line errors for the ways such
files go wrong (empty, header only, not UTF-8).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

__all__ = ["atomic_path", "file_mode", "read_table", "write_atomic"]


def file_mode() -> int:
    """The mode a newly created file gets under the current umask (0o666 & ~umask)."""
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


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
        os.chmod(tmp, file_mode())
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


def _not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8 (pandas' own offset counts from its read buffer)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        return f"{path} is not UTF-8 text; save it as UTF-8"
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        return (f"{path} is not UTF-8 text (byte {raw[err.start]:#x} on line {line}); save it "
                "as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def read_table(path: str | Path, *, text_columns: Iterable[str] = ()) -> pd.DataFrame:
    """A ``.csv`` or Parquet file as read, with one-line errors for an empty file, a header
    without rows, text that is not UTF-8 and anything pandas refuses.

    ``text_columns`` (lower-case names) are read as strings from a CSV (codes such as
    "000001" stay intact). A frame saved with its keys in the index gets them back as
    columns (an unnamed datetime index as ``datetime``).
    """
    path, wanted = Path(path), set(text_columns)
    try:
        if path.suffix.lower() == ".csv":
            header = pd.read_csv(path, nrows=0).columns
            as_text = {c: "string" for c in header if str(c).strip().lower() in wanted}
            frame = pd.read_csv(path, dtype=as_text)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty: no header and no rows") from None
    except UnicodeDecodeError:
        raise ValueError(_not_utf8(path)) from None
    except (OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not read {path}: {detail}") from None
    if len(frame) == 0:
        raise ValueError(f"{path} has a header ({', '.join(map(str, frame.columns))}) but no "
                         "data rows")
    if isinstance(frame.index, pd.RangeIndex):
        return frame
    if isinstance(frame.index, pd.DatetimeIndex) and frame.index.name is None:
        frame = frame.rename_axis("datetime")
    return frame.reset_index()

"""kronos_quant.io: atomic file writes."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from kronos_quant.io import atomic_path, write_atomic


def test_write_atomic_bytes_and_text_replace_the_target(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    assert write_atomic(target, b"old\n") == target
    inode = os.stat(target).st_ino
    write_atomic(target, "nouveau é\n")
    assert target.read_text(encoding="utf-8") == "nouveau é\n"
    assert os.stat(target).st_ino != inode  # a new file renamed over, not rewritten in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_error_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "scores.parquet"
    write_atomic(target, b"complete")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".parquet"
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]


def test_failed_write_creates_nothing(tmp_path):
    target = tmp_path / "new.txt"
    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_for_a_path_writer(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    target = tmp_path / "frame.parquet"
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp)
        assert not target.exists()  # invisible until the block ends
    pd.testing.assert_frame_equal(pd.read_parquet(target), frame)
    assert [p.name for p in tmp_path.iterdir()] == ["frame.parquet"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask):
    # The temporary file is created 0600; the result must be readable as any new file is.
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "a.json", "{}")
        with atomic_path(tmp_path / "b.parquet") as tmp:
            pd.DataFrame({"a": [1.0]}).to_parquet(tmp)
    finally:
        os.umask(old)
    for name in ("a.json", "b.parquet"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask

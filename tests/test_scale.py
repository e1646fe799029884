"""Sharded scoring under torchrun: the README command as written, scores equal to one
process, a failed rank fails the command, a rerun recomputes only missing partitions."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from signals_support import one_thread  # noqa: F401  (autouse fixture)

from kronos_quant.cli import main
from kronos_quant.data import synthetic_panel
from kronos_quant.signals import score_panel
from kronos_quant.signals.distributed import (
    ShardFailure,
    assign_partitions,
    forecast_panel_sharded,
    plan_partitions,
)
from kronos_quant.signals.store import read_scores
from kronos_quant.signals.walkforward import plan_scoring
from kronos_quant.testing import save_tiny_pair

README = Path(__file__).resolve().parents[1] / "README.md"
N_INSTRUMENTS = 4


def readme_command() -> str:
    """The bash block of the README's "Many machines" section, exactly as written."""
    section = README.read_text().split("## Many machines", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def program_args(**replace: str) -> list[str]:
    """The README command's arguments after ``kronos_quant.cli``, options replaced."""
    words = shlex.split(readme_command().replace("\\\n", " "))
    args = words[words.index("kronos_quant.cli") + 1:]
    for option, value in replace.items():
        args[args.index(f"--{option}") + 1] = value
    return args


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _torchrun(root: Path, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "--", "kronos_quant.cli", *args]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=240, env=_env())


def _partitions(store: Path) -> list[Path]:
    return sorted(store.glob("date=*/forecasts-*.parquet"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A folder laid out as the README command expects: the Hub ids as local folders (tiny
    random models), panel.parquet spanning the start date."""
    root = tmp_path_factory.mktemp("scale")
    tok, model = save_tiny_pair(root / "pair", seed=0)
    (root / "NeoQuasar").mkdir()
    shutil.move(str(tok), root / "NeoQuasar" / "Kronos-Tokenizer-base")
    shutil.move(str(model), root / "NeoQuasar" / "Kronos-small")
    panel = synthetic_panel(N_INSTRUMENTS, 175, seed=5, start="2023-06-05")
    panel.to_parquet(root / "panel.parquet")
    return root


@pytest.fixture(scope="module")
def one_process(root):
    """Scores of the README's options in one plain process (no torchrun, no store)."""
    args = program_args(out="single.parquet")
    store = args.index("--store")
    del args[store:store + 2]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(args) == 0
    finally:
        os.chdir(cwd)
    return read_scores(root / "single.parquet")


@pytest.fixture(scope="module")
def readme_run(root):
    """The README command run as written (multi-node form, one node, two CPU processes)."""
    env = {**_env(), "NNODES": "1", "GPUS_PER_NODE": "2", "HEAD": "127.0.0.1",
           "PORT": str(_free_port())}
    proc = subprocess.run(["bash", "-c", readme_command()], cwd=root, capture_output=True,
                          text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_readme_command_scores_exactly_as_one_process(root, readme_run, one_process):
    sharded = read_scores(root / "scores.parquet")
    pd.testing.assert_frame_equal(sharded, one_process)
    assert sharded.attrs == one_process.attrs and sharded.attrs["freq"] == "W"
    dates = sharded.index.get_level_values("datetime")
    assert dates.min() >= pd.Timestamp("2024-01-01") and dates.nunique() >= 3
    # One partition per date (4 windows each), under date=… folders.
    parts = _partitions(root / "forecasts")
    assert len(parts) == dates.nunique()
    assert {p.parent.name for p in parts} == {f"date={d:%Y-%m-%d}" for d in dates.unique()}
    assert (f"computed {len(parts)} ({len(sharded)} windows) on 2 process(es) [gloo, cpu]"
            in readme_run.stdout)


def test_failed_rank_fails_the_command_and_a_rerun_recomputes_only_what_is_missing(
        root, readme_run, one_process):
    store = root / "store2"
    shutil.copytree(root / "forecasts", store)
    parts = _partitions(store)
    first, last = parts[0], parts[-1]
    # Two partitions of 4 windows are missing: the first goes to rank 0, the second to rank
    # 1, which cannot write it (a folder stands where its file goes).
    first.unlink()
    last.unlink()
    last.mkdir()
    failed = _torchrun(root, program_args(store="store2", out="failed.parquet"))
    assert failed.returncode != 0
    assert "rank 1 of 2 failed: IsADirectoryError" in failed.stderr
    assert not (root / "failed.parquet").exists()
    assert first.is_file() and last.is_dir()  # rank 0 finished its partition
    last.rmdir()
    rerun = _torchrun(root, program_args(store="store2", out="rerun.parquet"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "computed 1 (4 windows) on 2 process(es)" in rerun.stdout
    assert f"reused {len(parts) - 1}" in rerun.stdout
    pd.testing.assert_frame_equal(read_scores(root / "rerun.parquet"), one_process)


def test_assignment_is_balanced_by_windows_and_deterministic():
    sizes = [256, 256, 40, 256, 12, 200, 256, 7]
    ranks = assign_partitions(sizes, 3)
    assert sorted(sum(ranks, [])) == list(range(len(sizes)))
    loads = [sum(sizes[p] for p in mine) for mine in ranks]
    assert max(loads) - min(loads) <= max(sizes)
    assert ranks == assign_partitions(list(sizes), 3)
    assert assign_partitions(sizes, 1) == [list(range(len(sizes)))]
    assert assign_partitions([], 2) == [[], []]


def test_one_process_store_resumes_and_equals_score_panel(tmp_path, predictor, monkeypatch):
    panel = synthetic_panel(5, 30, seed=3)
    opts = dict(lookback=16, pred_len=2, sample_count=3, seed=4, start="2022-02-01")
    first = forecast_panel_sharded(predictor, panel, store=tmp_path, partition_size=2,
                                   verbose=False, **opts)
    assert first.computed == first.partitions == len(_partitions(tmp_path))
    # Partitions: dates × ceil(5 / 2) blocks, each inside its own date.
    job = plan_scoring(predictor, panel, **opts)
    parts = plan_partitions(job, partition_size=2)
    assert [len(p) for p in parts[:3]] == [2, 2, 1] and len(parts) == first.partitions
    assert all(len({job.windows.keys[j][0] for j in p.windows}) == 1 for p in parts)
    pd.testing.assert_frame_equal(first.forecasts.score(), score_panel(predictor, panel,
                                                                      verbose=False, **opts))
    gone = _partitions(tmp_path)[4]
    gone.unlink()
    size = next(len(p) for p in parts if p.path(tmp_path) == gone)
    calls: list[int] = []
    original = predictor.forecast_arrays
    monkeypatch.setattr(predictor, "forecast_arrays",
                        lambda values, *a, **k: (calls.append(len(values))
                                                 or original(values, *a, **k)))
    again = forecast_panel_sharded(predictor, panel, store=tmp_path, partition_size=2,
                                   verbose=False, **opts)
    assert (again.computed, again.reused, calls) == (1, first.partitions - 1, [size])
    assert np.array_equal(again.forecasts.batch.paths, first.forecasts.batch.paths)


def test_a_failing_write_raises_shard_failure_naming_the_rank(tmp_path, predictor):
    panel = synthetic_panel(3, 20, seed=3)
    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(ShardFailure, match=r"rank 0 of 1 failed: .*Error"):
        forecast_panel_sharded(predictor, panel, store=tmp_path / "store", lookback=16,
                               pred_len=2, sample_count=2, seed=0, verbose=False)


def test_init_distributed_passes_its_timeout_to_the_process_group(monkeypatch):
    from datetime import timedelta

    import torch.distributed as dist

    from kronos_quant import runtime

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    env = runtime.init_distributed("cpu", timeout=timedelta(hours=2))
    assert (env.rank, env.world_size, env.device.type) == (1, 2, "cpu")
    assert calls == [{"backend": "gloo", "timeout": timedelta(hours=2)}]
    runtime.init_distributed("cpu")
    assert calls[-1]["timeout"] is None  # torch's own default

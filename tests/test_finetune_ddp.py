"""The finetune command under torchrun: two CPU processes (gloo), one shared checkpoint."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch

from kronos_quant.data import synthetic_panel
from kronos_quant.finetune import read_metrics
from kronos_quant.tokenizer import KronosTokenizer


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_train_two_steps(tmp_path):
    data = tmp_path / "panel.parquet"
    synthetic_panel(3, 120, seed=3).to_parquet(data)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("lookback: 16\npred_len: 4\nbatch_size: 8\nval_fraction: 0.25\n"
                   "max_steps: 2\ntensorboard: false\nlog_every: 1\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           "-m", "kronos_quant.cli", "-q", "finetune", "tokenizer", "--config", str(cfg),
           "--data", str(data), "--out", str(out), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    errors = [line for line in proc.stderr.splitlines()
              if any(k in line for k in ("Error", "error", "what()", "Traceback"))]
    assert proc.returncode == 0, "\n".join(errors[:40]) + proc.stderr[-2000:]
    assert proc.stdout.count("tokenizer: 2 steps") == 1  # only rank 0 reports
    assert "on 2 process(es)" in proc.stdout
    state = torch.load(out / "last" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and state["world_size"] == 2
    KronosTokenizer.from_pretrained(out / "best")
    steps = [r["step"] for r in read_metrics(out) if r["kind"] == "step"]
    assert steps == [1, 2]  # one writer
    assert sum(r["kind"] == "val" for r in read_metrics(out)) == 1

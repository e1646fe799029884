"""Finetuning under torchrun: two CPU processes (gloo), one shared checkpoint, exact resume."""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from kronos_quant.data import synthetic_panel
from kronos_quant.finetune import read_metrics
from kronos_quant.hub import WEIGHTS_NAME, read_state_dict
from kronos_quant.tokenizer import KronosTokenizer

# Run by every process: 4 steps straight; 2 steps, then a resume to 4 in the same directory.
RESUME_SCRIPT = """
import sys, torch
from kronos_quant.data import synthetic_panel
from kronos_quant.finetune import FinetuneConfig, Trainer
from kronos_quant.runtime import close_distributed

root, tok, model = sys.argv[1:4]
panel = synthetic_panel(3, 120, seed=3)

def cfg(name, **kw):
    return FinetuneConfig(task="predictor", init=model, tokenizer=tok, lookback=16, pred_len=4,
                          batch_size=4, val_fraction=0.25, max_steps=4, lr=3e-3, device="cpu",
                          progress=False, tensorboard=False, out_dir=f"{root}/{name}", **kw)

Trainer(cfg("straight"), panel=panel).fit()
Trainer(cfg("part"), panel=panel).fit(stop_after=2)
torch.manual_seed(1234)  # the state the job happens to be in must not matter
trainer = Trainer(cfg("part", resume=True), panel=panel)
assert trainer.step == 2
trainer.fit()
close_distributed(trainer.env)
"""


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    # --standalone: the rendezvous binds a port of the system's choosing itself (a port picked
    # here and bound later by torchrun could be taken in between by a parallel test).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    errors = [line for line in proc.stderr.splitlines()
              if any(k in line for k in ("Error", "error", "what()", "Traceback"))]
    assert proc.returncode == 0, "\n".join(errors[:40]) + proc.stderr[-2000:]
    return proc


def test_torchrun_two_cpu_processes_train_two_steps(tmp_path):
    data = tmp_path / "panel.parquet"
    synthetic_panel(3, 120, seed=3).to_parquet(data)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("lookback: 16\npred_len: 4\nbatch_size: 8\nval_fraction: 0.25\n"
                   "max_steps: 2\ntensorboard: false\nlog_every: 1\n")
    out = tmp_path / "run"
    proc = _torchrun(["-m", "kronos_quant.cli", "-q", "finetune", "tokenizer", "--config",
                      str(cfg), "--data", str(data), "--out", str(out), "--device", "cpu"])
    assert proc.stdout.count("tokenizer: 2 steps") == 1  # only rank 0 reports
    assert "on 2 process(es)" in proc.stdout
    state = torch.load(out / "last" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and state["world_size"] == 2
    KronosTokenizer.from_pretrained(out / "best")
    steps = [r["step"] for r in read_metrics(out) if r["kind"] == "step"]
    assert steps == [1, 2]  # one writer
    assert sum(r["kind"] == "val" for r in read_metrics(out)) == 1


def test_torchrun_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, tiny_dirs):
    """Dropout 0.1 (the tiny predictor) draws different masks on each rank: each rank must
    get its own random state back."""
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    _torchrun([str(script), str(tmp_path), *map(str, tiny_dirs)])
    rng = [torch.load(tmp_path / "part" / "last" / "rng" / f"rank-{r}.pt", weights_only=False)
           for r in (0, 1)]
    assert not torch.equal(rng[0]["torch"], rng[1]["torch"])
    straight = read_state_dict(tmp_path / "straight" / "last" / WEIGHTS_NAME)
    resumed = read_state_dict(tmp_path / "part" / "last" / WEIGHTS_NAME)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)

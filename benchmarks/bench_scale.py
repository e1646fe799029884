"""Walk-forward scoring throughput: per process (before/after), and across processes.

1. Per process: ``forecast_panel`` with the tiny test model (where per-window overhead, not
   the model, dominates) and with a ``mini``-preset model, this tree against a baseline commit
   (default ``ba2f621``: windows fed to the predictor as DataFrames), the baseline exported
   with ``git archive`` and run in a subprocess, alternating, in one run.
2. Across processes: ``kronos-quant score`` under ``torchrun --nproc_per_node=1`` and ``=2`` on
   CPU (gloo, one thread per process). The fixed cost (start-up, model load, planning, merge)
   is measured by rerunning the command with every partition stored; windows/s is windows /
   (full run - that rerun). Efficiency = speed-up / processes.

    python benchmarks/bench_scale.py                 # both parts (≈ 2 minutes)
    python benchmarks/bench_scale.py --skip-baseline --repeats 1
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kronos_quant.config import preset_configs
from kronos_quant.data import synthetic_panel
from kronos_quant.model import Kronos
from kronos_quant.testing import random_init_, save_tiny_pair
from kronos_quant.tokenizer import KronosTokenizer

ROOT = Path(__file__).resolve().parents[1]
# Run in a fresh interpreter (this tree or the baseline's): seconds of forecast_panel.
TIMER = """
import sys, time, torch, pandas as pd
import kronos_quant
from kronos_quant import KronosPredictor
from kronos_quant.signals import forecast_panel
torch.set_num_threads(1)
work, pair, lookback, pred_len, samples = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
predictor = KronosPredictor.from_pretrained(f"{pair}/model", f"{pair}/tokenizer", device="cpu")
panel = pd.read_parquet(f"{work}/panel.parquet")
opts = dict(lookback=lookback, pred_len=pred_len, sample_count=samples, seed=0, verbose=False)
forecast_panel(predictor, panel.iloc[:2000], **opts)  # warm-up
t0 = time.perf_counter()
fp = forecast_panel(predictor, panel, **opts)
print(len(fp), time.perf_counter() - t0, kronos_quant.__file__)
"""


def save_mini_pair(directory: Path) -> None:
    tok_cfg, model_cfg = preset_configs("mini")
    tok, model = KronosTokenizer.from_config(tok_cfg), Kronos.from_config(model_cfg)
    random_init_(tok, 0, scale=0.2), random_init_(model, 1, scale=0.2)
    tok.save_pretrained(directory / "tokenizer"), model.save_pretrained(directory / "model")


def per_process(work: Path, args, pythonpath: Path, pair: str, case: tuple[int, int, int]):
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", TIMER, str(work), str(work / pair),
                          *map(str, case)], capture_output=True, text=True, env=env, check=True,
                         cwd=work)  # not the repository: "-c" puts the cwd first on sys.path
    n, seconds, origin = out.stdout.split()
    assert Path(origin).is_relative_to(pythonpath), f"ran {origin}, not {pythonpath}"
    return int(n), float(seconds)


def part_one(work: Path, args) -> None:
    trees = {"this tree": ROOT}
    if not args.skip_baseline:
        old = work / "baseline"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "kronos_quant"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        trees = {f"baseline {args.baseline}": old, **trees}
    cases = {"tiny": ("tiny", (16, 3, 4)), "mini": ("mini", (64, 5, 8))}
    print("| model | windows | tree | seconds (median) | windows/s | load avg (start) |")
    print("|---|---|---|---|---|---|")
    for label, (pair, case) in cases.items():
        times: dict[str, list[float]] = {t: [] for t in trees}
        loads: dict[str, float] = {}
        for _ in range(args.repeats):
            for tree, path in trees.items():  # alternate, so load drifts hit both alike
                loads.setdefault(tree, os.getloadavg()[0])
                n, seconds = per_process(work, args, path, pair, case)
                times[tree].append(seconds)
        for tree in trees:
            s = sorted(times[tree])[len(times[tree]) // 2]
            print(f"| {label} (lookback {case[0]}, pred {case[1]}, {case[2]} paths) | {n} | "
                  f"{tree} | {s:.2f} | {n / s:,.0f} | {loads[tree]:.2f} |", flush=True)


def torchrun(work: Path, nproc: int, store: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "--", "kronos_quant.cli", "--quiet", "score",
           "--model", str(work / "mini" / "model"), "--tokenizer", str(work / "mini" / "tokenizer"),
           "--panel", str(work / "panel.parquet"), "--lookback", "64", "--pred-len", "5",
           "--samples", "8", "--seed", "0", "--device", "cpu", "--store", str(work / store),
           "--out", str(work / f"{store}.parquet")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return time.perf_counter() - t0, out.stdout


def part_two(work: Path, args) -> None:
    print("\n| processes | windows | full run s | fixed cost s (rerun, all stored) | windows/s "
          "| speed-up | efficiency | load avg (start) |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for nproc in (1, 2):
        rates = []
        for r in range(args.repeats):
            load = os.getloadavg()[0]
            store = f"store{nproc}_{r}"
            full, stdout = torchrun(work, nproc, store)
            fixed, _ = torchrun(work, nproc, store)
            n = int(stdout.split("(")[1].split(" windows")[0])
            rates.append((n / max(full - fixed, 1e-9), full, fixed, load))
        rate, full, fixed, load = sorted(rates)[len(rates) // 2]
        base = base or rate
        print(f"| {nproc} | {n} | {full:.1f} | {fixed:.1f} | {rate:.1f} | {rate / base:.2f}× "
              f"| {rate / base / nproc:.0%} | {load:.2f} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="ba2f621", help="commit to compare with (part 1)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds (median taken)")
    args = p.parse_args(argv)
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, 1 thread per process; load "
          f"average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthetic_panel(16, 160, seed=1).to_parquet(work / "panel.parquet")
        save_tiny_pair(work / "tiny")
        save_mini_pair(work / "mini")
        part_one(work, args)
        if not args.skip_scaling:
            part_two(work, args)
        shutil.rmtree(work / "baseline", ignore_errors=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Finetune throughput: training windows per second, fp32 against AMP, in one run.

Builds a seeded synthetic panel, a tokenizer of the requested preset size (random weights,
saved in the Hub layout so the predictor task can freeze it), then trains each task for a
fixed number of optimizer steps with every AMP mode asked for and prints a table of
windows/s. The first ``--warmup`` steps (CUDA kernel selection, allocator growth) are timed
separately and left out of the rate.

    python benchmarks/bench_finetune.py --device cuda --amp none,bf16
    python benchmarks/bench_finetune.py --device cpu --preset nano --steps 10   # smoke run
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from kronos_quant.config import preset_configs
from kronos_quant.data import synthetic_panel
from kronos_quant.finetune.config import FinetuneConfig
from kronos_quant.finetune.train import Trainer
from kronos_quant.tokenizer import KronosTokenizer


def write_data(root: Path, *, instruments: int, bars: int) -> Path:
    path = root / "panel.csv"
    panel = synthetic_panel(instruments, bars, seed=0, predictable=0.3)
    panel.reset_index().to_csv(path, index=False)
    return path


def write_tokenizer(root: Path, preset: str) -> Path:
    tok_config, _ = preset_configs(preset)
    torch.manual_seed(0)
    return KronosTokenizer.from_config(tok_config).save_pretrained(root / "tokenizer")


def train_rate(args, *, task: str, amp: str, data: Path, tokenizer: Path, root: Path) -> dict:
    """Windows/s over ``args.steps`` optimizer steps after ``args.warmup`` untimed ones.

    Only the optimizer steps are timed (each ends by reading its loss, which synchronises the
    device), so validation and checkpoint writing stay out of the rate.
    """
    cfg = FinetuneConfig(task=task, data=str(data), init=args.preset,
                         tokenizer=str(tokenizer) if task == "predictor" else None,
                         lookback=args.lookback, pred_len=args.pred_len,
                         batch_size=args.batch_size, max_steps=args.warmup + args.steps, amp=amp,
                         device=args.device, out_dir=str(root / f"{task}-{amp}"), val_windows=64,
                         tensorboard=False, progress=False, log_every=10_000)
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    step_seconds: list[float] = []
    train_step = trainer._train_step

    def timed_step(batch):
        start = time.perf_counter()
        out = train_step(batch)
        step_seconds.append(time.perf_counter() - start)
        return out

    trainer._train_step = timed_step  # instance attribute: times this trainer only
    trainer.fit()
    seconds = sum(step_seconds[args.warmup:])
    return {"task": task, "amp": amp, "steps": len(step_seconds) - args.warmup,
            "windows_per_s": (len(step_seconds) - args.warmup) * args.batch_size / seconds,
            "seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="small", help="model size: nano, mini, small, base")
    p.add_argument("--amp", default="none,bf16", help="comma-separated: none, bf16, fp16")
    p.add_argument("--tasks", default="tokenizer,predictor")
    p.add_argument("--steps", type=int, default=40, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lookback", type=int, default=90)
    p.add_argument("--pred-len", type=int, default=10)
    p.add_argument("--instruments", type=int, default=40)
    p.add_argument("--bars", type=int, default=600)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_data(root, instruments=args.instruments, bars=args.bars)
        tokenizer = write_tokenizer(root, args.preset)
        for task in args.tasks.split(","):
            for amp in args.amp.split(","):
                start = time.perf_counter()
                rows.append(train_rate(args, task=task, amp=amp, data=data, tokenizer=tokenizer,
                                       root=root))
                rows[-1]["wall_s"] = time.perf_counter() - start
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"\nfinetune throughput on {name}, preset {args.preset}, window "
          f"{args.lookback}+{args.pred_len}+1 bars, batch {args.batch_size}, "
          f"torch {torch.__version__}")
    print("| task | amp | windows/s | timed steps | s |")
    print("|---|---|---|---|---|")
    base = {}
    for r in rows:
        base.setdefault(r["task"], r["windows_per_s"])
        ratio = r["windows_per_s"] / base[r["task"]]
        print(f"| {r['task']} | {r['amp']} | {r['windows_per_s']:.0f} ({ratio:.2f}×) | "
              f"{r['steps']} | {r['seconds']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

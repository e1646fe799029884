"""``kronos-quant finetune tokenizer|predictor|demo-model|demo-card``.

Settings come from ``--config cfg.yaml``, then the explicit flags below, then ``--set
key=value`` (any FinetuneConfig field); later sources win. Under ``torchrun`` the same command
trains with DDP on every process.
"""
from __future__ import annotations

import argparse

import torch

from ..finetune import FinetuneConfig
from .options import int_option

# Explicit flags for the most used fields: (flag, config field, help).
FLAGS = (
    ("--data", "data", "CSV/Parquet file, directory of per-symbol files, or Qlib dir"),
    ("--init", "init", "preset (nano/mini/small/base), checkpoint dir or Hub id to start from"),
    ("--tokenizer", "tokenizer", "predictor task: the frozen tokenizer (dir or Hub id)"),
    ("--out", "out_dir", "run directory (checkpoints, metrics, config.yaml)"),
    ("--lookback", "lookback", "bars the model conditions on"),
    ("--pred-len", "pred_len", "bars after the lookback in each window"),
    ("--epochs", "epochs", "passes over the training windows"),
    ("--max-steps", "max_steps", "cap on optimizer steps"),
    ("--batch-size", "batch_size", "windows per process per micro-batch"),
    ("--lr", "lr", "peak learning rate"),
    ("--amp", "amp", "none, bf16 or fp16 (CUDA only)"),
    ("--device", "device", "cpu, cuda, cuda:N (default: auto)"),
)


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    values = {field: getattr(args, field) for _, field, _ in FLAGS}
    values["task"] = args.task
    if args.resume:
        values["resume"] = True
    if args.compile:
        values["compile"] = True
    if args.quiet:
        values["progress"] = False
    return FinetuneConfig.from_sources(args.config, overrides=args.set, values=values)


def _train_command(args: argparse.Namespace) -> int:
    from ..finetune import Trainer
    from ..runtime import close_distributed

    config = config_from_args(args)
    trainer = Trainer(config)
    try:
        result = trainer.fit()
    finally:
        close_distributed(trainer.env)
    if trainer.env.is_main:
        print(f"{config.task}: {result.step} steps in {result.seconds:.1f} s on "
              f"{trainer.env.world_size} process(es), device {trainer.env.device}")
        if result.last_val:
            print("validation: " + ", ".join(f"{k} {v:.4f}" for k, v in result.last_val.items()))
        best = result.run_dir / "best"
        print(f"run directory: {result.run_dir} (best: {best if best.exists() else 'none'}, "
              f"last: {result.run_dir / 'last'})")
    return 0


def _demo_model_command(args: argparse.Namespace) -> int:
    from ..demo.build_model import build_demo_model

    torch.set_num_threads(args.threads)
    report = build_demo_model(args.out, work_dir=args.work_dir, threads=args.threads,
                              quick=args.quick, verbose=not args.quiet)
    print(f"demo model written to {args.out} in {report['seconds_total']:.0f} s; "
          f"model card: {report['card']}")
    return 0


def _demo_card_command(args: argparse.Namespace) -> int:
    from ..demo.model_card import rerender_model_card

    print(rerender_model_card(args.folder))
    return 0


def _add_train_parser(sub: argparse._SubParsersAction, task: str, help_text: str) -> None:
    p = sub.add_parser(task, help=help_text, description=__doc__)
    p.add_argument("--config", default=None, help="YAML file of FinetuneConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field (repeatable), e.g. --set warmup=0.05")
    for flag, field, text in FLAGS:
        p.add_argument(flag, dest=field, default=None, help=text)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last/")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.set_defaults(func=_train_command, task=task)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="finetune the tokenizer or the predictor",
                              description=__doc__)
    sub = p.add_subparsers(dest="finetune_command", required=True, metavar="WHAT")
    _add_train_parser(sub, "tokenizer", "train the tokenizer (reconstruction + BSQ loss)")
    _add_train_parser(sub, "predictor", "train the predictor on a frozen tokenizer's tokens")
    d = sub.add_parser("demo-model", help="rebuild the embedded demo model (CPU, ~15 min)",
                       description="Train the nano demo pair shipped in kronos_quant/assets/demo.")
    d.add_argument("--out", required=True, help="output folder (e.g. kronos_quant/assets/demo)")
    d.add_argument("--work-dir", default=None, help="where the training runs go "
                   "(default: a temporary folder)")
    d.add_argument("--threads", type=int_option(1), default=2, help="torch CPU threads")
    d.add_argument("--quick", action="store_true", help="a few steps only (to test the recipe)")
    d.set_defaults(func=_demo_model_command)
    c = sub.add_parser("demo-card", help="re-render a built demo model's MODEL_CARD.md",
                       description="Re-render MODEL_CARD.md of a built demo model folder from "
                                   "its metrics.json and demo.json.")
    c.add_argument("folder", help="demo model folder, e.g. kronos_quant/assets/demo")
    c.set_defaults(func=_demo_card_command)

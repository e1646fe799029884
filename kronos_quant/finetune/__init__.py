"""Finetuning of the tokenizer and the predictor (``kronos-quant finetune ...``).

One pipeline for both models: :class:`FinetuneConfig` (YAML + overrides), look-ahead-free
training windows from a canonical panel (:mod:`.dataset`), and one :class:`Trainer` that runs
on a CPU, a GPU, or many GPUs/nodes under ``torchrun``. See docs/finetune.md.
"""
from .config import FinetuneConfig
from .dataset import TrainingWindows, build_windows, load_training_panel
from .runlog import read_metrics
from .train import FitResult, Trainer, run_finetune

__all__ = ["FinetuneConfig", "FitResult", "Trainer", "TrainingWindows", "build_windows",
           "load_training_panel", "read_metrics", "run_finetune"]

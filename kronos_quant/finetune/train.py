"""One training loop for both the tokenizer and the predictor, from one CPU to many GPUs.

``Trainer(config).fit()`` runs AdamW with a one-cycle/cosine/constant schedule and warm-up,
gradient accumulation and clipping, optional CUDA AMP and ``torch.compile``, and DDP under
``torchrun``. Each epoch ends with a validation (all-reduced across ranks) and checkpoints:

    out_dir/config.yaml        the resolved config
    out_dir/metrics.jsonl      step, validation and epoch records
    out_dir/best/              lowest validation metric (Hub format: config.json + safetensors)
    out_dir/last/              latest weights + trainer_state.pt + rng/rank-N.pt (for --resume)
    out_dir/tokenizer/         predictor runs: the frozen tokenizer they were trained on

Each checkpoint folder is replaced as one unit (see :mod:`.checkpoint`), so weights, optimizer
state, step and random states always belong together. A fresh run seeds torch's generators
with ``seed + rank`` (dropout, sampled s1); a resumed one restores every saved random state,
so it ends with the same weights, bit for bit, as a run that was never interrupted.
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..hub import WEIGHTS_NAME, check_state_dict, read_state_dict
from ..runtime import DistEnv, init_distributed
from .checkpoint import (
    preserved_rng,
    read_rng_state,
    recover,
    rng_state,
    set_rng_state,
    write_folder_atomic,
    write_rng_states,
)
from .config import FinetuneConfig
from .dataset import TrainingWindows, build_windows, epoch_order, load_training_panel, shard
from .runlog import RunLog
from .tasks import build_task

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.pt"
CHECKPOINT_DIRS = ("last", "best", "tokenizer")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FitResult:
    run_dir: Path
    step: int
    best_metric: float | None
    last_val: dict[str, float] | None
    seconds: float


def lr_factor(step: int, *, schedule: str, warm: int, total: int) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    onecycle: cosine rise from 1/10 over the warm-up, then cosine annealing to ~0 (the
    reference's OneCycleLR shape); cosine: linear warm-up from ~0, then cosine annealing;
    constant: linear warm-up, then flat.
    """
    if step < warm:
        if schedule == "onecycle":
            return 0.1 + 0.9 * 0.5 * (1.0 - math.cos(math.pi * step / warm))
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: FinetuneConfig, total: int):
    """Learning-rate schedule over ``total`` optimizer steps with a warm-up share."""
    warm = round(config.warmup * total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, schedule=config.schedule, warm=warm, total=total))


class Trainer:
    """Finetune the tokenizer or the predictor as ``config.task`` says.

    Parameters
    ----------
    config
        The run's settings.
    panel
        A canonical panel to train on instead of reading ``config.data``.
    env
        Distributed environment (default: detected from ``torchrun``'s variables).
    """

    def __init__(self, config: FinetuneConfig, *, panel: pd.DataFrame | None = None,
                 env: DistEnv | None = None):
        self.config = config
        self.env = env or init_distributed(config.device)
        self.run_dir = Path(config.out_dir)
        self._check_run_dir()
        if config.amp != "none" and self.env.device.type != "cuda":
            raise ValueError(f"amp={config.amp} needs a CUDA device; this run is on "
                             f"{self.env.device} (use amp: none)")
        source = panel if panel is not None else load_training_panel(config)
        self.train_set, self.val_set = build_windows(source, config)
        self.task = build_task(config, self.env.device)
        self.steps_per_epoch = self._steps_per_epoch()
        total = config.epochs * self.steps_per_epoch
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self.forward = self._wrap(self.task.module)
        params = [p for p in self.task.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                                           betas=(config.adam_beta1, config.adam_beta2))
        self.scheduler = make_scheduler(self.optimizer, config, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
        self.step, self.best = 0, math.inf
        if config.resume:
            self._load_state()
        self.log = RunLog(self.run_dir, enabled=self.env.is_main, tensorboard=config.tensorboard)
        self._start_rng()

    # -- setup -----------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        if self.env.is_main:  # a crash during a checkpoint write leaves staging folders
            for name in CHECKPOINT_DIRS:
                recover(self.run_dir / name)
        self.env.barrier()
        last = self.run_dir / "last" / STATE_NAME
        if self.config.resume and not last.is_file():
            raise ValueError(f"--resume: {last} does not exist; nothing to resume in "
                             f"{self.run_dir}")
        if not self.config.resume and last.is_file():
            raise ValueError(f"{self.run_dir} already holds a run; pass --resume (resume: true) "
                             "to continue it or choose another out_dir")
        if self.config.resume:
            saved = FinetuneConfig.from_sources(self.run_dir / "config.yaml")
            problems = self.config.incompatibilities(saved)
            if problems:
                raise ValueError(f"cannot resume {self.run_dir}: the config differs from the "
                                 "saved run in " + "; ".join(problems))
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save_yaml(self.run_dir / "config.yaml")

    def _steps_per_epoch(self) -> int:
        cfg, env = self.config, self.env
        n = min(len(self.train_set), cfg.train_windows or len(self.train_set))
        per_rank = n // env.world_size
        per_step = cfg.batch_size * cfg.accum_steps
        if per_rank < per_step:
            raise ValueError(
                f"batch_size × accum_steps × processes = {per_step * env.world_size} windows per "
                f"step, more than the {n} training windows per epoch; lower batch_size")
        return per_rank // per_step

    def _wrap(self, module: torch.nn.Module):
        """The callable used for training forwards: DDP and/or compiled around ``module``."""
        wrapped: Any = module
        if self.env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.env.device] if self.env.device.type == "cuda" else None
            wrapped = DDP(module, device_ids=ids)
        self.ddp = wrapped if self.env.distributed else None
        return torch.compile(wrapped) if self.config.compile else wrapped

    def _autocast(self):
        if self.config.amp == "none":
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=AMP_DTYPES[self.config.amp])

    # -- one optimizer step ----------------------------------------------------------------
    def _train_step(self, micro_batches: np.ndarray) -> dict[str, float]:
        """Forward/backward ``accum_steps`` micro-batches (rows of ``micro_batches``), step."""
        self.task.module.train()
        totals: dict[str, float] = defaultdict(float)
        n = len(micro_batches)
        for j, idx in enumerate(micro_batches):
            x, stamp = (t.to(self.env.device, non_blocking=True)
                        for t in self.train_set.batch(idx))  # (B, W, 6), (B, W, 5)
            # Gradients are all-reduced only on the last micro-batch of the step.
            sync = self.ddp is None or j == n - 1
            with nullcontext() if sync else self.ddp.no_sync():
                with self._autocast():
                    parts = self.task.loss(self.forward, x, stamp)
                self.scaler.scale(parts["loss"] / n).backward()
            for key, value in parts.items():
                totals[key] += float(value.detach()) / n
        self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.task.module.parameters(),
                                                  self.config.grad_clip)
            totals["grad_norm"] = float(norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return dict(totals)

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> dict[str, float] | None:
        """Mean validation metrics over the fixed validation subset, across all ranks.

        The training's random streams are left where they were, so validating more or less
        often does not change the trained weights.
        """
        if self.val_set is None:
            return None
        with preserved_rng(self.env.device):
            return self._validate(self.val_set)

    @torch.no_grad()
    def _validate(self, windows: TrainingWindows) -> dict[str, float]:
        module = self.task.module
        was_training = module.training
        module.eval()
        order = self._val_order(windows)
        mine = shard(order, rank=self.env.rank, world_size=self.env.world_size, equal=False)
        names = self.task.metric_names
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=self.env.device)
        for chunk in np.array_split(mine, max(1, math.ceil(len(mine) / self.config.batch_size))):
            if len(chunk) == 0:
                continue
            x, stamp = (t.to(self.env.device) for t in windows.batch(chunk))
            with self._autocast():
                parts = self.task.evaluate(x, stamp)
            sums[0] += len(chunk)
            for i, name in enumerate(names):
                sums[i + 1] += float(parts[name]) * len(chunk)
        self.env.all_reduce_sum(sums)
        module.train(was_training)
        count = float(sums[0])
        return {name: float(sums[i + 1]) / count for i, name in enumerate(names)}

    def _val_order(self, windows: TrainingWindows) -> np.ndarray:
        """A fixed subset spread evenly over the validation windows (same every epoch)."""
        n, want = len(windows), self.config.val_windows
        if want is None or want >= n:
            return np.arange(n)
        return np.unique(np.linspace(0, n - 1, want).round().astype(np.int64))

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, val: dict[str, float] | None) -> None:
        """Replace best/ (if the validation metric improved) and last/ (always), each as one
        unit; every rank's random state goes into last/, rank 0 writes."""
        rng_states = self.env.gather(rng_state(self.env.device))
        if val is not None and val[self.task.best_metric] < self.best:
            self.best = val[self.task.best_metric]
            if self.env.is_main:
                write_folder_atomic(self.run_dir / "best", self.task.save)
                logger.info("best %s %.5f at step %d", self.task.best_metric, self.best,
                            self.step)
        if self.env.is_main:
            assert rng_states is not None  # gathered on rank 0
            write_folder_atomic(self.run_dir / "last",
                                partial(self._write_last, rng_states=rng_states))
            tokenizer = getattr(self.task, "tokenizer", None)
            if tokenizer is not None and not (self.run_dir / "tokenizer").exists():
                write_folder_atomic(self.run_dir / "tokenizer", tokenizer.save_pretrained)
        self.env.barrier()

    def _write_last(self, folder: Path, rng_states: list[dict[str, Any]]) -> None:
        self.task.save(folder)
        torch.save({"step": self.step, "best": self.best, "world_size": self.env.world_size,
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict()}, folder / STATE_NAME)
        write_rng_states(folder, rng_states)

    def _load_state(self) -> None:
        last = self.run_dir / "last"
        weights = read_state_dict(last / WEIGHTS_NAME)
        check_state_dict(self.task.module, weights, source=str(last))
        self.task.module.load_state_dict(weights)
        state = torch.load(last / STATE_NAME, map_location=self.env.device, weights_only=False)
        if state["world_size"] != self.env.world_size:
            raise ValueError(f"cannot resume {self.run_dir}: it ran on {state['world_size']} "
                             f"processes, this job has {self.env.world_size}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best = int(state["step"]), float(state["best"])
        logger.info("resumed %s at step %d", self.run_dir, self.step)

    def _start_rng(self) -> None:
        """Seed a fresh run; put a resumed run's random streams back where they stopped."""
        saved = None
        if self.config.resume:
            saved = read_rng_state(self.run_dir / "last", self.env.rank)
            if saved is None:
                logger.warning("%s holds no random state for rank %d (saved by an older "
                               "version): dropout and sampled-s1 draws will differ from an "
                               "uninterrupted run", self.run_dir / "last", self.env.rank)
        if saved is None:
            torch.manual_seed(self.config.seed + self.env.rank)  # CPU and every CUDA device
        else:
            set_rng_state(saved, self.env.device)

    # -- the loop --------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> np.ndarray:
        """(steps_per_epoch, accum_steps, batch_size) window indices of this rank's epoch."""
        cfg = self.config
        order = epoch_order(len(self.train_set), epoch=epoch, seed=cfg.seed,
                            count=cfg.train_windows)
        mine = shard(order, rank=self.env.rank, world_size=self.env.world_size)
        used = self.steps_per_epoch * cfg.accum_steps * cfg.batch_size
        return mine[:used].reshape(self.steps_per_epoch, cfg.accum_steps, cfg.batch_size)

    def fit(self, *, stop_after: int | None = None) -> FitResult:
        """Train until ``total_steps`` (or ``stop_after`` steps, e.g. to test resuming).

        Validation and checkpoints happen at the end of each epoch, every ``eval_every``
        steps if set, and when training stops.
        """
        start_time, cfg = time.time(), self.config
        end = self.total_steps if stop_after is None else min(stop_after, self.total_steps)
        val = None
        while self.step < end:
            epoch, first = divmod(self.step, self.steps_per_epoch)
            batches = self._epoch_batches(epoch)
            todo = range(first, min(self.steps_per_epoch, first + end - self.step))
            bar = tqdm(todo, desc=f"{self.task.name} epoch {epoch + 1}/{cfg.epochs}",
                       disable=not (cfg.progress and self.env.is_main), leave=False)
            losses = []
            for i in bar:
                metrics = self._train_step(batches[i])
                losses.append(metrics["loss"])
                self.step += 1
                lr = self.scheduler.get_last_lr()[0]
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}")
                if self.step % cfg.log_every == 0 or self.step == end:
                    self.log.log("step", self.step, epoch=epoch, lr=lr, **metrics)
                epoch_done = i == self.steps_per_epoch - 1
                if epoch_done or self.step == end or (cfg.eval_every
                                                       and self.step % cfg.eval_every == 0):
                    val = self._evaluate_and_save(
                        epoch, float(np.mean(losses)) if epoch_done else None)
            bar.close()
        self.log.close()
        return FitResult(self.run_dir, self.step, None if math.isinf(self.best) else self.best,
                         val, time.time() - start_time)

    def _evaluate_and_save(self, epoch: int, epoch_loss: float | None) -> dict[str, float] | None:
        """Validate, log, checkpoint; ``epoch_loss`` (mean train loss) when an epoch ended."""
        val = self.validate()
        if val is not None:
            self.log.log("val", self.step, epoch=epoch, **val)
            logger.info("step %d validation: %s", self.step,
                        ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
        if epoch_loss is not None:
            self.log.log("epoch", self.step, epoch=epoch, train_loss=epoch_loss,
                         **{f"val_{k}": v for k, v in (val or {}).items()})
        self.save_checkpoint(val)
        return val


def run_finetune(config: FinetuneConfig, *, panel: pd.DataFrame | None = None) -> FitResult:
    """Build a :class:`Trainer` for ``config`` and train it to the end."""
    return Trainer(config, panel=panel).fit()

"""What differs between tokenizer and predictor training: the model, its loss, its metrics.

The :class:`~kronos_quant.finetune.train.Trainer` is the same for both; it only calls a task's
``module``, ``loss``, ``evaluate`` and ``save``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import PREDICTOR_PRESETS, preset_configs
from ..hub import write_training_record
from ..model import Kronos
from ..tokenizer import KronosTokenizer
from .config import FinetuneConfig

logger = logging.getLogger(__name__)

Metrics = dict[str, torch.Tensor]


def _seeded_init(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a fresh module from a seed without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def load_or_init(cls: type[KronosTokenizer] | type[Kronos], init: str, config: FinetuneConfig):
    """A preset name gives a fresh seeded model; anything else is a checkpoint to load."""
    if init in PREDICTOR_PRESETS:
        tok_cfg, model_cfg = preset_configs(init)
        cfg = tok_cfg if cls is KronosTokenizer else model_cfg
        logger.info("fresh %s from the %r preset", cls.__name__, init)
        return _seeded_init(lambda: cls.from_config(cfg), config.seed)
    return cls.from_pretrained(init, revision=config.revision, cache_dir=config.cache_dir)


@contextmanager
def causal_s2_attention(model: Kronos) -> Iterator[None]:
    """Make the s2 cross-attention causal while evaluating.

    As in the published checkpoints, that attention is causal only in training mode; in
    evaluation mode a full window's s2 logits at bar t would attend to hidden states of later
    bars (which hold the very tokens being predicted), so a validation loss computed that way
    is optimistic. Only the attention's own flag is switched; its dropout stays off.
    """
    attn = model.dep_layer.cross_attn
    saved = attn.training, attn.attn_dropout_p
    attn.training, attn.attn_dropout_p = True, 0.0
    try:
        yield
    finally:
        attn.training, attn.attn_dropout_p = saved


def next_token_losses(forward: Callable, model: Kronos, s1: torch.Tensor, s2: torch.Tensor,
                      stamp: torch.Tensor, *, teacher_forcing: bool = True) -> Metrics:
    """Cross-entropies of next-token prediction over a window of tokens (B, W).

    Token t predicts token t+1, with the stamp of input bar t. ``forward`` is ``model`` itself
    or a wrapper of it (DDP, compiled); the loss head is read from ``model``.
    """
    s1_logits, s2_logits = forward(s1[:, :-1], s2[:, :-1], stamp[:, :-1],
                                   use_teacher_forcing=teacher_forcing,
                                   s1_targets=s1[:, 1:])  # (B, W-1, V1), (B, W-1, V2)
    loss, ce_s1, ce_s2 = model.head.compute_loss(s1_logits, s2_logits, s1[:, 1:], s2[:, 1:])
    return {"loss": loss, "ce_s1": ce_s1, "ce_s2": ce_s2}


class TokenizerTask:
    """Train the tokenizer: (mse(z_pre, x) + mse(z, x) + bsq_loss) / 2 on whole windows."""

    name = "tokenizer"
    metric_names = ("loss", "recon_mse", "recon_pre_mse", "bsq")
    best_metric = "recon_mse"  # full-code reconstruction error, what decoding relies on

    def __init__(self, config: FinetuneConfig, device: torch.device):
        self.module: KronosTokenizer = load_or_init(KronosTokenizer, config.init, config).to(device)
        if self.module.d_in != 6:
            raise ValueError(f"tokenizer d_in is {self.module.d_in}; windows have 6 columns")

    def _parts(self, forward: Callable, x: torch.Tensor) -> Metrics:
        (z_pre, z), bsq, _, _ = forward(x)
        pre, full = F.mse_loss(z_pre, x), F.mse_loss(z, x)
        return {"loss": (pre + full + bsq) / 2, "recon_mse": full, "recon_pre_mse": pre,
                "bsq": bsq}

    def loss(self, forward: Callable, x: torch.Tensor, stamp: torch.Tensor) -> Metrics:
        return self._parts(forward, x)

    def evaluate(self, x: torch.Tensor, stamp: torch.Tensor) -> Metrics:
        return self._parts(self.module, x)

    def save(self, directory: Path) -> None:
        self.module.save_pretrained(directory)


class PredictorTask:
    """Train the predictor on tokens of a frozen tokenizer: mean of the s1 and s2
    cross-entropies of the next token, s2 conditioned on the true next s1 by default."""

    name = "predictor"
    metric_names = ("loss", "ce_s1", "ce_s2")
    best_metric = "loss"

    def __init__(self, config: FinetuneConfig, device: torch.device):
        assert config.tokenizer is not None  # FinetuneConfig enforces it for this task
        tokenizer = KronosTokenizer.from_pretrained(config.tokenizer, revision=config.revision,
                                                    cache_dir=config.cache_dir)
        model = load_or_init(Kronos, config.init, config)
        if (tokenizer.s1_bits, tokenizer.s2_bits) != (model.s1_bits, model.s2_bits):
            raise ValueError(
                f"tokenizer {config.tokenizer} has s1_bits={tokenizer.s1_bits}, "
                f"s2_bits={tokenizer.s2_bits} but the predictor ({config.init}) has "
                f"s1_bits={model.s1_bits}, s2_bits={model.s2_bits}; they must match")
        self.tokenizer = tokenizer.to(device).eval().requires_grad_(False)
        self.module: Kronos = model.to(device)
        self.teacher_forcing = config.teacher_forcing
        self.window = (config.lookback, config.pred_len)

    @torch.no_grad()
    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokenizer.encode(x, half=True)  # each (B, W)

    def _parts(self, forward: Callable, x: torch.Tensor, stamp: torch.Tensor, *,
               teacher_forcing: bool) -> Metrics:
        s1, s2 = self.tokens(x)
        return next_token_losses(forward, self.module, s1, s2, stamp,
                                 teacher_forcing=teacher_forcing)

    def loss(self, forward: Callable, x: torch.Tensor, stamp: torch.Tensor) -> Metrics:
        return self._parts(forward, x, stamp, teacher_forcing=self.teacher_forcing)

    def evaluate(self, x: torch.Tensor, stamp: torch.Tensor) -> Metrics:
        # Always p(s2 | true s1): a sampled s1 would make the validation loss random.
        with causal_s2_attention(self.module):
            return self._parts(self.module, x, stamp, teacher_forcing=True)

    def save(self, directory: Path) -> None:
        """The predictor and, beside its config.json, the windows it was trained on (the
        context :class:`~kronos_quant.predictor.KronosPredictor` then defaults to)."""
        self.module.save_pretrained(directory)
        write_training_record(directory, lookback=self.window[0], pred_len=self.window[1])


def build_task(config: FinetuneConfig, device: torch.device) -> TokenizerTask | PredictorTask:
    return (TokenizerTask if config.task == "tokenizer" else PredictorTask)(config, device)

"""Helpers for tests and benchmarks: tiny checkpoints and a full-recompute generator.

``recompute_generate`` is our own small re-statement of the reference pipeline's generation
loop (spec, "Forecast pipeline"): repeat the context per sample, re-run the whole window for
every bar, drop the oldest bar once the window is full. It is deliberately naive: it is the
yardstick the cached engine is measured and tested against, not a code path users take. The
yardstick itself is held to numbers produced by the reference implementation
(``tests/data/reference-tiny``, ``tests/test_reference_fixture.py``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import KronosConfig, KronosTokenizerConfig
from .model import Kronos
from .sampling import DEFAULT_SAMPLING, SamplingParams, sample_tokens
from .tokenizer import KronosTokenizer

TINY_TOKENIZER = KronosTokenizerConfig(d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2,
                                       n_dec_layers=2, s1_bits=3, s2_bits=3, group_size=3)
TINY_PREDICTOR = KronosConfig(s1_bits=3, s2_bits=3, n_layers=2, d_model=16, n_heads=2,
                              ff_dim=32, ffn_dropout_p=0.1, attn_dropout_p=0.1,
                              resid_dropout_p=0.1, token_dropout_p=0.1)


def random_init_(module: torch.nn.Module, seed: int, scale: float = 0.5) -> None:
    """Give every parameter random values (seeded) so no output is degenerate."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def tiny_pair(seed: int = 0, *, tokenizer_config: KronosTokenizerConfig = TINY_TOKENIZER,
              predictor_config: KronosConfig = TINY_PREDICTOR) -> tuple[KronosTokenizer, Kronos]:
    """A random-weight tokenizer/predictor pair (eval mode)."""
    torch.manual_seed(seed)
    tok = KronosTokenizer.from_config(tokenizer_config)
    model = Kronos.from_config(predictor_config)
    random_init_(tok, seed)
    random_init_(model, seed + 1)
    return tok.eval(), model.eval()


def save_tiny_pair(directory: str | Path, seed: int = 0, **configs) -> tuple[Path, Path]:
    """Save a tiny pair in the Hub layout; returns (tokenizer_dir, model_dir)."""
    tok, model = tiny_pair(seed, **configs)
    root = Path(directory)
    return tok.save_pretrained(root / "tokenizer"), model.save_pretrained(root / "model")


@torch.inference_mode()
def recompute_generate(model: Kronos, tokenizer: KronosTokenizer, x: torch.Tensor,
                       x_stamp: torch.Tensor, y_stamp: torch.Tensor, *, pred_len: int,
                       max_context: int, sampling: SamplingParams = DEFAULT_SAMPLING,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Full-window recompute generation → decoded bars (B, S, pred_len, d_in)."""
    s = sampling.sample_count
    x = x.repeat_interleave(s, dim=0)  # series-major: all samples of series 0 first
    stamps = torch.cat([x_stamp, y_stamp], dim=1).repeat_interleave(s, dim=0)
    s1, s2 = tokenizer.encode(x, half=True)
    for _ in range(pred_len):
        end = s1.shape[1]
        start = max(0, end - max_context)
        logits, h = model.decode_s1(s1[:, start:], s2[:, start:], stamps[:, start:end])
        new_s1 = sample_tokens(logits[:, -1], sampling, generator)
        new_s2 = sample_tokens(model.decode_s2(h, new_s1)[:, -1], sampling, generator)
        s1, s2 = torch.cat([s1, new_s1], dim=1), torch.cat([s2, new_s2], dim=1)
    start = max(0, s1.shape[1] - max_context)
    bars = tokenizer.decode((s1[:, start:], s2[:, start:]), half=True)[:, -pred_len:]
    return bars.reshape(-1, s, pred_len, bars.shape[-1])


@torch.inference_mode()
def recompute_logits(model: Kronos, s1: torch.Tensor, s2: torch.Tensor, stamps: torch.Tensor,
                     max_context: int) -> torch.Tensor:
    """s1 logits of the last position of the window ending at each bar (B, L, V1), each
    computed by its own full-window pass (the reference's per-step computation)."""
    out = []
    for end in range(1, s1.shape[1] + 1):
        start = max(0, end - max_context)
        logits, _ = model.decode_s1(s1[:, start:end], s2[:, start:end], stamps[:, start:end])
        out.append(logits[:, -1])
    return torch.stack(out, dim=1)


def random_walk_bars(n: int = 40, *, freq: str = "D", start: str = "2024-01-02", seed: int = 0,
              volume: bool = True, amount: bool = False) -> pd.DataFrame:
    """Random-walk OHLCV bars indexed by a DatetimeIndex named 'timestamps'."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=n, freq=freq, name="timestamps")
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.003, n))
    df = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.004,
                       "low": np.minimum(open_, close) * 0.996, "close": close}, index=idx)
    if volume:
        df["volume"] = rng.uniform(1e3, 5e3, n)
    if amount:
        df["amount"] = df["volume"] * close
    return df

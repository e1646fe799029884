"""Sampling settings and the one token sampler (top-k / top-p, seeded generators).

Shared by the eager engine (:mod:`.generation`), the static decode step
(:mod:`.static_decode`) and the full-recompute yardstick (:mod:`.testing`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """Temperature, top-k and nucleus settings; top_k > 0 takes precedence over top_p."""

    T: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    sample_count: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.sample_count, int) and self.sample_count >= 1):
            raise ValueError(f"sample_count must be an integer ≥ 1, got {self.sample_count!r}")
        if not self.T > 0:
            raise ValueError(f"temperature T must be > 0, got {self.T!r}")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise ValueError(f"top_k must be an integer ≥ 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")


# SamplingParams is frozen, so one shared default instance is safe.
DEFAULT_SAMPLING = SamplingParams()

Generators = torch.Generator | Sequence[torch.Generator] | None


def _draw(probs: torch.Tensor, generator: torch.Generator | None,
          noise: torch.Tensor | None) -> torch.Tensor:
    """One draw per row of ``probs`` (B, V) → (B, 1).

    ``torch.multinomial`` draws one sample as argmax(p / q) with q ~ Exp(1) of the same shape,
    but first checks the probabilities on the host (a device sync, which a CUDA graph cannot
    hold). With a preallocated ``noise`` buffer (B, V) float32 the same q is drawn into it and
    the same argmax taken: the same tokens from the same generator state, with no sync.
    """
    if noise is None:
        return torch.multinomial(probs, 1, generator=generator)
    noise.exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1, keepdim=True)


def sample_tokens(logits: torch.Tensor, params: SamplingParams,
                  generator: Generators = None, *,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one token per row from ``logits`` (B, V) → (B, 1) int64.

    ``generator`` may be a sequence of generators, one per equal block of consecutive rows
    (one per series): each block's draws then depend only on its own generator.

    Filtering follows the reference: top-k keeps logits ≥ the k-th largest; otherwise top-p
    keeps the most likely tokens up to and including the first one whose cumulative
    probability exceeds ``top_p``. ``top_k == 1`` is greedy: the most likely token.

    With no ``generator`` the draws come from torch's global stream in the reference's order
    and amount, greedy included, so that later unseeded calls see the same stream as after
    the reference's ``predict``. ``noise`` (B, V) float32, optional: a buffer the draws are
    made in (see :func:`_draw`; used by the static decode step, same tokens).
    """
    if params.top_k == 1:
        if generator is not None:
            return logits.argmax(dim=-1, keepdim=True)
        # The reference samples even when greedy: torch.multinomial on the one-hot
        # distribution, which draws an Exp(1) per entry and takes argmax(p / q). Drawing the
        # same q keeps the global stream in step and picks among tied maxima as it does.
        q = torch.empty_like(logits) if noise is None else noise  # (B, V)
        q.exponential_()
        top = logits == logits.amax(dim=-1, keepdim=True)  # (B, V)
        return (top / q).argmax(dim=-1, keepdim=True)
    if params.T != 1.0:  # dividing by 1 changes nothing but costs a pass over (B, V)
        logits = logits / params.T
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    elif params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = torch.zeros_like(cum, dtype=torch.bool)
        drop[..., 1:] = cum[..., :-1] > params.top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if isinstance(generator, Sequence):
        per = probs.shape[0] // len(generator)  # rows per series
        # Each series' Exp(1) noise from its own generator, one block at a time, then one
        # argmax for every row: the tokens torch.multinomial draws block by block (_draw),
        # without a multinomial call (and its checks) per series.
        q = torch.empty_like(probs) if noise is None else noise  # (B, V)
        for block, g in zip(q.split(per), generator, strict=True):
            block.exponential_(generator=g)
        return (probs / q).argmax(dim=-1, keepdim=True)
    return _draw(probs, generator, noise)

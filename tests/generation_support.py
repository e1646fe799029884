"""Random model inputs shared by the generation tests (eager engine and static decode step)."""
from __future__ import annotations

import torch


def random_inputs(n_series: int, ctx_len: int, pred_len: int, seed: int = 0):
    """Normalised context (B, L, 6) and integer time features for context and future."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_series, ctx_len, 6, generator=gen)
    limits = torch.tensor([60, 24, 7, 32, 13])
    stamps = (torch.rand(n_series, ctx_len + pred_len, 5, generator=gen) * limits).floor()
    return x, stamps[:, :ctx_len], stamps[:, ctx_len:]

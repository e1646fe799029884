"""Autoregressive sampling of token paths with key/value caches.

The reference recomputes the whole window for every generated bar. Here the context is
encoded and prefilled once per series and each step runs one token per path through the
network. The context's keys/values are cached once per series and read in place by all of
the series' sample paths (:func:`~kronos_quant.layers.shared_prefix_attention`); each path
caches only its own generated bars, in buffers preallocated for the whole run.

Exactness. While context + generated ≤ ``max_context`` cached decoding equals full
recomputation to float rounding (causal attention: earlier positions never see later ones).
Once the window is full the reference drops the oldest bar each step and restarts positions
at 0, which changes every hidden state. ``slide_block=1`` (exact, the default) then
re-prefills the window every step: the part of the window that is still context is computed
once per series; only each path's generated suffix runs per path.
``slide_block=k > 1`` (fast mode) drops the k oldest bars at once and re-prefills every k
steps, so the window holds between ``max_context-k+1`` and ``max_context`` bars; bars
predicted before the window first fills are identical to exact mode.
"""
from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .layers import KVCache
from .model import Kronos
from .tokenizer import KronosTokenizer


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


Generators = torch.Generator | Sequence[torch.Generator] | None


def sample_tokens(logits: torch.Tensor, params: SamplingParams,
                  generator: Generators = None) -> torch.Tensor:
    """Draw one token per row from ``logits`` (B, V) → (B, 1) int64.

    ``generator`` may be a sequence of generators, one per equal block of consecutive rows
    (one per series): each block's draws then depend only on its own generator.

    Filtering follows the reference: top-k keeps logits ≥ the k-th largest; otherwise top-p
    keeps the most likely tokens up to and including the first one whose cumulative
    probability exceeds ``top_p``. ``top_k == 1`` is greedy: the most likely token.

    With no ``generator`` the draws come from torch's global stream in the reference's order
    and amount, greedy included, so that later unseeded calls see the same stream as after
    the reference's ``predict``.
    """
    if params.top_k == 1:
        if generator is not None:
            return logits.argmax(dim=-1, keepdim=True)
        # The reference samples even when greedy: torch.multinomial on the one-hot
        # distribution, which draws an Exp(1) per entry and takes argmax(p / q). Drawing the
        # same q keeps the global stream in step and picks among tied maxima as it does.
        q = torch.empty_like(logits).exponential_()  # (B, V)
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
        blocks = probs.split(probs.shape[0] // len(generator))  # (S, V) per series
        return torch.cat([torch.multinomial(p, 1, generator=g)
                          for p, g in zip(blocks, generator, strict=True)])
    return torch.multinomial(probs, 1, generator=generator)


@dataclass
class Generation:
    """Output of :func:`generate`: decoded bars (B, S, pred_len, d_in) in normalised units and
    the sampled tokens (B, S, pred_len) each."""

    bars: torch.Tensor
    s1: torch.Tensor
    s2: torch.Tensor


class _Decoder:
    """State of one generation run: caches, token buffers and the current window.

    The window is [window_start, end). Its context part is cached once per series
    (``ctx``/``dep_ctx``, one row per series); each path caches only its generated part
    (``gen``/``dep_gen``), whose attention reads the series' context part without copying it.
    """

    def __init__(self, model: Kronos, s1_ctx: torch.Tensor, s2_ctx: torch.Tensor,
                 stamps: torch.Tensor, *, samples: int, pred_len: int, max_context: int,
                 dtype: torch.dtype):
        self.model, self.samples, self.max_context = model, samples, max_context
        self.n_series, self.ctx_len = s1_ctx.shape
        self.s1_ctx, self.s2_ctx = s1_ctx, s2_ctx  # (B, L)
        self.ctx_stamps = stamps[:, :self.ctx_len]  # (B, L, 5)
        # Future stamps per path, built once rather than re-expanded every step.
        self.gen_stamps = stamps[:, self.ctx_len:].repeat_interleave(samples, dim=0)  # (rows, P, 5)
        rows, dev = self.n_series * samples, s1_ctx.device
        self.gen_s1 = torch.zeros(rows, pred_len, dtype=torch.long, device=dev)
        self.gen_s2 = torch.zeros(rows, pred_len, dtype=torch.long, device=dev)
        self.n_gen = 0
        cfg, dep = model.config, model.dep_layer.cross_attn
        ctx_cap, gen_cap = min(self.ctx_len, max_context), min(pred_len, max_context)
        kw = dict(device=dev, dtype=dtype)
        hd = cfg.d_model // cfg.n_heads
        self.ctx = KVCache.empty(cfg.n_layers, self.n_series, cfg.n_heads, ctx_cap, hd, **kw)
        self.gen = KVCache.empty(cfg.n_layers, rows, cfg.n_heads, gen_cap, hd, **kw,
                                 prefix=self.ctx)
        self.dep_ctx = KVCache.empty(1, self.n_series, dep.n_heads, ctx_cap, dep.head_dim, **kw)
        self.dep_gen = KVCache.empty(1, rows, dep.n_heads, gen_cap, dep.head_dim, **kw)
        self.window_start = 0  # absolute index of the window's first bar
        self.h_last: torch.Tensor | None = None  # (rows, 1, d)

    @property
    def end(self) -> int:
        return self.ctx_len + self.n_gen

    def _write_dep(self, cache: KVCache, h: torch.Tensor, slot: int) -> None:
        """Dependency-layer keys/values of final hidden states ``h`` at ``slot …``."""
        k, v = self.model.dep_layer.cross_attn.project_kv(h)  # (B, 4, L, hd)
        cache.k[0, :, :, slot:slot + h.shape[1]] = k
        cache.v[0, :, :, slot:slot + h.shape[1]] = v
        cache.length = slot + h.shape[1]

    def prefill(self, start: int) -> torch.Tensor:
        """Recompute the window [start, end): context part per series, generated part per path.

        Returns the s1 logits at the window's last position (rows, V1); only that position's
        head is evaluated.
        """
        self.window_start = start
        n_ctx = max(0, self.ctx_len - start)
        self.ctx.length = self.dep_ctx.length = self.gen.length = self.dep_gen.length = 0
        if n_ctx:
            h = self.model.hidden(self.s1_ctx[:, start:], self.s2_ctx[:, start:],
                                  self.ctx_stamps[:, start:], cache=self.ctx)  # (B, n_ctx, d)
            self._write_dep(self.dep_ctx, h, 0)
            self.h_last = h[:, -1:].repeat_interleave(self.samples, dim=0)  # (rows, 1, d)
        g0 = max(start, self.ctx_len) - self.ctx_len  # first generated bar in the window
        if g0 < self.n_gen:
            h = self.model.hidden(self.gen_s1[:, g0:self.n_gen], self.gen_s2[:, g0:self.n_gen],
                                  self.gen_stamps[:, g0:self.n_gen], cache=self.gen,
                                  start=n_ctx)  # (rows, n_gen-g0, d)
            self._write_dep(self.dep_gen, h, 0)
            self.h_last = h[:, -1:]
        return self.model.head(self.h_last)[:, 0]  # (rows, V1)

    def record(self, s1: torch.Tensor, s2: torch.Tensor) -> None:
        """Store the sampled bar (rows, 1) of every path."""
        self.gen_s1[:, self.n_gen] = s1[:, 0]
        self.gen_s2[:, self.n_gen] = s2[:, 0]
        self.n_gen += 1

    def append(self, s1: torch.Tensor, s2: torch.Tensor, slide_block: int) -> torch.Tensor:
        """Add the sampled bar of every path; return the next step's s1 logits (rows, V1)."""
        i = self.n_gen
        self.record(s1, s2)
        if self.end - self.window_start > self.max_context:
            # Positions restart at 0 for the new window: cached keys are stale, recompute.
            return self.prefill(self.end - (self.max_context - slide_block + 1))
        pos = self.end - 1 - self.window_start
        h = self.model.hidden(s1, s2, self.gen_stamps[:, i:i + 1], cache=self.gen,
                              start=pos)  # (rows, 1, d)
        self._write_dep(self.dep_gen, h, pos - self.gen.offset)
        self.h_last = h
        return self.model.head(h)[:, 0]

    def s2_logits(self, s1: torch.Tensor) -> torch.Tensor:
        """s2 logits at the newest position given its sampled s1 (rows, 1) → (rows, V2)."""
        dep = self.model.dep_layer
        sibling = self.model.embedding.emb_s1(s1)  # (rows, 1, d)
        n_ctx, n_gen = self.dep_ctx.length, self.dep_gen.length
        shared = (self.dep_ctx.k[0, :, :, :n_ctx], self.dep_ctx.v[0, :, :, :n_ctx])
        attn = dep.cross_attn.attend_one(sibling, self.dep_gen.k[0, :, :, :n_gen],
                                         self.dep_gen.v[0, :, :, :n_gen], shared)
        return self.model.head.cond_forward(dep.norm(self.h_last + attn))[:, 0]


def decode_paths(tokenizer: KronosTokenizer, s1_ctx: torch.Tensor, s2_ctx: torch.Tensor,
                 gen_s1: torch.Tensor, gen_s2: torch.Tensor, *, max_context: int) -> torch.Tensor:
    """Decode the last ``max_context`` bars of context + path; return the generated part.

    The context part of the causal decoder is run once per series and shared by its paths.
    """
    n_series, ctx_len = s1_ctx.shape
    rows, pred_len = gen_s1.shape
    start = max(0, ctx_len + pred_len - max_context)
    n_ctx = ctx_len - start
    cfg = tokenizer.config
    hd, nl = cfg.d_model // cfg.n_heads, len(tokenizer.decoder)
    kw = dict(device=s1_ctx.device, dtype=tokenizer.head.weight.dtype)
    series = KVCache.empty(nl, n_series, cfg.n_heads, max(n_ctx, 1), hd, **kw)
    paths = KVCache.empty(nl, rows, cfg.n_heads, pred_len, hd, **kw, prefix=series)
    if n_ctx:
        tokenizer.decode((s1_ctx[:, start:], s2_ctx[:, start:]), half=True, cache=series)
    return tokenizer.decode((gen_s1, gen_s2), half=True, cache=paths, start=n_ctx)


def _check_lengths(x: torch.Tensor, x_stamp: torch.Tensor, y_stamp: torch.Tensor, *,
                   pred_len: int, max_context: int, slide_block: int) -> None:
    """One clear error for bad lengths or inconsistent input shapes."""
    for name, value in (("max_context", max_context), ("pred_len", pred_len),
                        ("slide_block", slide_block)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if max_context < 1:
        raise ValueError(f"max_context must be ≥ 1, got {max_context}")
    if not 1 <= pred_len <= max_context:
        raise ValueError(f"pred_len must be in 1..max_context ({max_context}), got {pred_len}")
    if not 1 <= slide_block <= max_context:
        raise ValueError(f"slide_block must be in 1..max_context ({max_context}), "
                         f"got {slide_block}")
    if x.dim() != 3 or x.shape[1] < 1:
        raise ValueError(f"x must be (series, context bars ≥ 1, features), got {tuple(x.shape)}")
    b, n = x.shape[:2]
    for name, t, want in (("x_stamp", x_stamp, (b, n, 5)), ("y_stamp", y_stamp, (b, pred_len, 5))):
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")


@torch.inference_mode()
def generate(model: Kronos, tokenizer: KronosTokenizer, x: torch.Tensor, x_stamp: torch.Tensor,
             y_stamp: torch.Tensor, *, pred_len: int, max_context: int = 512,
             sampling: SamplingParams = SamplingParams(), generator: Generators = None,
             slide_block: int = 1, amp_dtype: torch.dtype | None = None,
             verbose: bool = False) -> Generation:
    """Sample ``sampling.sample_count`` paths per series and decode them to bars.

    Parameters
    ----------
    x, x_stamp, y_stamp
        Normalised context (B, L, d_in), its time features (B, L, 5) and the future bars'
        time features (B, pred_len, 5), all on the model's device.
    pred_len, max_context
        Bars to generate; the longest window the predictor sees.
    generator
        One generator for the batch, or one per series so that a series' paths do not
        depend on which other series share its batch.
    slide_block
        1 reproduces the reference exactly; k > 1 is the fast sliding mode (module docs).
    amp_dtype
        Optional autocast dtype (torch.bfloat16 / torch.float16) for CUDA.
    """
    _check_lengths(x, x_stamp, y_stamp, pred_len=pred_len, max_context=max_context,
                   slide_block=slide_block)
    if isinstance(generator, Sequence) and len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for {x.shape[0]} series")
    model.eval()
    tokenizer.eval()
    amp = (torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype is not None
           else contextlib.nullcontext())
    with amp:
        s1_ctx, s2_ctx = tokenizer.encode(x, half=True)  # (B, L) each
        stamps = torch.cat([x_stamp, y_stamp], dim=1)  # (B, L+P, 5)
        dec = _Decoder(model, s1_ctx, s2_ctx, stamps, samples=sampling.sample_count,
                       pred_len=pred_len, max_context=max_context,
                       dtype=amp_dtype or model.norm.weight.dtype)
        logits = dec.prefill(max(0, s1_ctx.shape[1] - max_context))
        for step in tqdm(range(pred_len), disable=not verbose, desc="generating", leave=False):
            s1 = sample_tokens(logits.float(), sampling, generator)
            s2 = sample_tokens(dec.s2_logits(s1).float(), sampling, generator)
            if step + 1 < pred_len:
                logits = dec.append(s1, s2, slide_block)
            else:  # the last bar needs no forward pass of its own
                dec.record(s1, s2)
        bars = decode_paths(tokenizer, s1_ctx, s2_ctx, dec.gen_s1, dec.gen_s2,
                            max_context=max_context)  # (rows, P, d_in)
    shape = (dec.n_series, sampling.sample_count, pred_len)
    return Generation(bars.float().reshape(*shape, -1), dec.gen_s1.reshape(shape),
                      dec.gen_s2.reshape(shape))

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

Steps. The eager step (the CPU default) appends one bar at a time through
:class:`~kronos_quant.static_decode.Decoder`. ``static_step=True`` runs the static-shape step
of :mod:`~kronos_quant.static_decode` (same tokens); ``cuda_graphs=True`` replays it as CUDA
graphs (the CUDA default since measured exact on a device: :data:`CUDA_GRAPHS_DEFAULT`).
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
from .sampling import DEFAULT_SAMPLING, Generators, SamplingParams, sample_tokens
from .static_decode import Decoder, static_generate
from .tokenizer import KronosTokenizer

__all__ = ["Generation", "SamplingParams", "decode_paths", "generate", "sample_tokens"]


@dataclass
class Generation:
    """Output of :func:`generate`: decoded bars (B, S, pred_len, d_in) in normalised units and
    the sampled tokens (B, S, pred_len) each."""

    bars: torch.Tensor
    s1: torch.Tensor
    s2: torch.Tensor


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


# Which decode step runs when the caller does not say (``None``). The static step is exact on
# CPU (tests) but not faster there (docs/performance.md: measured slower), so CPU keeps the
# eager step. On CUDA the default is CUDA graphs over the static step: `gpu_check.sh` step 1
# showed on an H200 (torch 2.11, CUDA 13) that they draw the eager engine's tokens for greedy,
# top-p and top-k sampling with one, per-series and global generators ("graphs exactness: all
# equal"), and step 2 measured them 1.8-4x faster than the eager engine (docs/performance.md).
STATIC_STEP_DEFAULT = False
CUDA_GRAPHS_DEFAULT = True


def resolve_step(device: torch.device, *, static_step: bool | None,
                 cuda_graphs: bool | None) -> tuple[bool, bool]:
    """(static step?, CUDA graphs?) for a run on ``device``; ``None`` takes the defaults."""
    # By default graphs run on CUDA unless the caller asked for the eager step.
    graphs = (CUDA_GRAPHS_DEFAULT and device.type == "cuda" and static_step is not False) \
        if cuda_graphs is None else bool(cuda_graphs)
    if graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs a CUDA device; the inputs are on {device}")
    if graphs and static_step is False:
        raise ValueError("cuda_graphs=True replays the static step; static_step=False "
                         "contradicts it")
    static = graphs or (STATIC_STEP_DEFAULT if static_step is None else bool(static_step))
    return static, graphs


def _eager_tokens(dec: Decoder, *, pred_len: int, max_context: int, sampling: SamplingParams,
                  generator: Generators, slide_block: int, verbose: bool) -> None:
    """The eager step: sample, then append one bar through the cached predictor."""
    logits = dec.prefill(max(0, dec.ctx_len - max_context))
    for step in tqdm(range(pred_len), disable=not verbose, desc="generating", leave=False):
        s1 = sample_tokens(logits.float(), sampling, generator)
        s2 = sample_tokens(dec.s2_logits(s1).float(), sampling, generator)
        if step + 1 < pred_len:
            logits = dec.append(s1, s2, slide_block)
        else:  # the last bar needs no forward pass of its own
            dec.record(s1, s2)


@torch.inference_mode()
def generate(model: Kronos, tokenizer: KronosTokenizer, x: torch.Tensor, x_stamp: torch.Tensor,
             y_stamp: torch.Tensor, *, pred_len: int, max_context: int = 512,
             sampling: SamplingParams = DEFAULT_SAMPLING, generator: Generators = None,
             slide_block: int = 1, amp_dtype: torch.dtype | None = None,
             static_step: bool | None = None, cuda_graphs: bool | None = None,
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
    static_step
        Decode with the static-shape step (:mod:`.static_decode`): same tokens as the eager
        step. ``None``: :data:`STATIC_STEP_DEFAULT`.
    cuda_graphs
        Replay the static step as CUDA graphs (CUDA only; implies ``static_step``).
        ``None``: :data:`CUDA_GRAPHS_DEFAULT` on CUDA unless ``static_step=False``, off
        elsewhere.
    """
    _check_lengths(x, x_stamp, y_stamp, pred_len=pred_len, max_context=max_context,
                   slide_block=slide_block)
    if isinstance(generator, Sequence) and len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for {x.shape[0]} series")
    static, graphs = resolve_step(x.device, static_step=static_step, cuda_graphs=cuda_graphs)
    model.eval()
    tokenizer.eval()
    # Autocast's cache of cast weights would be freed under a captured graph: off with graphs.
    amp = (torch.autocast(x.device.type, dtype=amp_dtype, cache_enabled=not graphs)
           if amp_dtype is not None else contextlib.nullcontext())
    dtype = amp_dtype or model.norm.weight.dtype
    with amp:
        s1_ctx, s2_ctx = tokenizer.encode(x, half=True)  # (B, L) each
        stamps = torch.cat([x_stamp, y_stamp], dim=1)  # (B, L+P, 5)
        steps = dict(pred_len=pred_len, max_context=max_context, sampling=sampling,
                     generator=generator, slide_block=slide_block, verbose=verbose)
        if static:
            gen_s1, gen_s2 = static_generate(model, s1_ctx, s2_ctx, stamps, dtype=dtype,
                                             cuda_graphs=graphs, **steps)  # (rows, P) each
        else:
            dec = Decoder(model, s1_ctx, s2_ctx, stamps, samples=sampling.sample_count,
                          pred_len=pred_len, max_context=max_context, dtype=dtype)
            _eager_tokens(dec, **steps)
            gen_s1, gen_s2 = dec.gen_s1, dec.gen_s2
        bars = decode_paths(tokenizer, s1_ctx, s2_ctx, gen_s1, gen_s2,
                            max_context=max_context)  # (rows, P, d_in)
    shape = (x.shape[0], sampling.sample_count, pred_len)
    return Generation(bars.float().reshape(*shape, -1), gen_s1.reshape(shape),
                      gen_s2.reshape(shape))

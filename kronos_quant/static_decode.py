"""Decoder state (caches, prefill, cached append), the static-shape decode step, and CUDA
graphs over it.

:class:`Decoder` holds one generation run's caches and window; the eager engine
(:func:`~.generation.generate`) appends one bar at a time through it.

On a GPU one generated bar of a single series is a few hundred tiny kernels (the s1 head,
sampling, the dependency layer for s2, sampling, one token through every layer); the GPU
waits on the launches, not on arithmetic. A CUDA graph replays a recorded sequence of
kernels with one launch, but only if nothing in it changes shape or address between
replays. This module makes the per-bar step static:

* caches are the eager engine's preallocated buffers (:class:`Decoder`: the
  context part once per series, each path's generated part), read at their full capacity;
  which slots are filled is a mask built from a small index tensor, not a Python slice;
* the bar index, the number of context slots and the next own slot live in ``meta`` (3,),
  written in place before each step; rotary tables are gathered at a position tensor
  (:class:`~.layers.StaticKV`);
* tokens, the newest hidden state and the sampling noise live in fixed buffers; sampling
  draws Exp(1) noise into a buffer and takes argmax(p / q), which is what
  ``torch.multinomial`` computes for one draw, minus its host-side checks (same tokens).

The step is two functions: :meth:`StaticDecoder.sample_step` (s1 head, s1 draw, s2 pass, s2
draw) and :meth:`StaticDecoder.advance_step` (the drawn bar through the predictor). Once the
window slides, exact mode re-prefills the window every bar; that runs eagerly between the
two, outside any graph. On CUDA each function is captured once per batch bucket and
replayed per bar (:func:`graphed_decoder`).
"""
from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .layers import KVCache, StaticKV
from .model import Kronos
from .sampling import DEFAULT_SAMPLING, Generators, SamplingParams, sample_tokens

logger = logging.getLogger(__name__)

# Graphs can draw from seeded generators other than the default one only where the graph can
# register them (torch >= 2.4 CUDA builds).
_GRAPH_SAFE_GENERATORS = hasattr(torch.cuda.CUDAGraph, "register_generator_state")
MAX_GRAPHED_DECODERS = 4  # per model: captured buckets kept alive (each holds its caches)


def series_bucket(n_series: int) -> int:
    """Series rows a graph is captured for: the next power of two, so a walk-forward run's
    ragged last batch replays an existing graph instead of capturing a new one."""
    return 1 << max(0, int(n_series) - 1).bit_length()


class Decoder:
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

    def load(self, s1_ctx: torch.Tensor, s2_ctx: torch.Tensor, stamps: torch.Tensor) -> None:
        """Start a new run on other series of the same shape, written into this decoder's
        own buffers in place (a captured CUDA graph keeps reading the same addresses)."""
        self.s1_ctx.copy_(s1_ctx)
        self.s2_ctx.copy_(s2_ctx)
        self.ctx_stamps.copy_(stamps[:, :self.ctx_len])
        self.gen_stamps.copy_(stamps[:, self.ctx_len:].repeat_interleave(self.samples, dim=0))
        self.n_gen, self.window_start = 0, 0

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


class StaticDecoder:
    """Fixed buffers and the two static step functions for ``n_series × samples`` paths.

    Build once per shape, then :meth:`run` any number of batches of that shape.
    """

    def __init__(self, model: Kronos, *, n_series: int, samples: int, ctx_len: int,
                 pred_len: int, max_context: int, dtype: torch.dtype, device: torch.device):
        self.model, self.pred_len, self.max_context = model, pred_len, max_context
        z = dict(device=device, dtype=torch.long)
        # Own copies: load() writes later batches into these same addresses.
        stamps = torch.zeros(n_series, ctx_len + pred_len, 5, device=device)
        self.dec = Decoder(model, torch.zeros(n_series, ctx_len, **z),
                           torch.zeros(n_series, ctx_len, **z), stamps, samples=samples,
                           pred_len=pred_len, max_context=max_context, dtype=dtype)
        dec = self.dec
        for cache in (dec.ctx, dec.gen, dec.dep_ctx, dec.dep_gen):
            cache.k.zero_()  # masked slots are read: they must be finite (0 × NaN is NaN)
            cache.v.zero_()
        rows = n_series * samples
        self.meta = torch.zeros(3, **z)  # bar, filled context slots, next own slot
        self.h_last = torch.zeros(rows, 1, model.d_model, device=device, dtype=dtype)
        self.s1 = torch.zeros(rows, 1, **z)
        self.s2 = torch.zeros(rows, 1, **z)
        f32 = dict(device=device, dtype=torch.float32)
        self.noise = (torch.empty(rows, model.head.vocab_s1, **f32),
                      torch.empty(rows, model.head.vocab_s2, **f32))  # (rows, V) each
        self.ar_ctx = torch.arange(dec.ctx.capacity, device=device)
        self.ar_gen = torch.arange(dec.gen.capacity, device=device)
        self.kv = StaticKV(dec.gen.k, dec.gen.v, dec.ctx.k, dec.ctx.v,
                           pos=torch.zeros(1, **z), slot=torch.zeros(1, **z),
                           keep=torch.zeros(dec.gen.capacity, device=device, dtype=torch.bool),
                           keep_prefix=torch.zeros(dec.ctx.capacity, device=device,
                                                   dtype=torch.bool),
                           positions=max_context)
        self.sampling = DEFAULT_SAMPLING  # set by the caller, with the generators
        self.generators: Generators = None

    # -- the step, in two static functions ------------------------------------------------
    def sample_step(self) -> None:
        """s1 head at the newest position, s1 draw, s2 pass, s2 draw; the bar's tokens go to
        ``s1``/``s2`` and into the paths' token buffers at ``meta[0]``."""
        model, dec = self.model, self.dec
        bar, n_ctx, slot = self.meta[0:1], self.meta[1], self.meta[2]
        logits = model.head(self.h_last)[:, 0].float()  # (rows, V1)
        s1 = sample_tokens(logits, self.sampling, self.generators, noise=self.noise[0])
        dep = model.dep_layer
        keep = (self.ar_gen < slot, self.ar_ctx < n_ctx)  # dependency keys of the window so far
        attn = dep.cross_attn.attend_one(model.embedding.emb_s1(s1), dec.dep_gen.k[0],
                                         dec.dep_gen.v[0], (dec.dep_ctx.k[0], dec.dep_ctx.v[0]),
                                         keep=keep)  # (rows, 1, d)
        logits2 = model.head.cond_forward(dep.norm(self.h_last + attn))[:, 0].float()
        s2 = sample_tokens(logits2, self.sampling, self.generators, noise=self.noise[1])
        self.s1.copy_(s1)
        self.s2.copy_(s2)
        dec.gen_s1.index_copy_(1, bar, s1)
        dec.gen_s2.index_copy_(1, bar, s2)

    def advance_step(self) -> None:
        """The drawn bar through the predictor at window position ``meta[1] + meta[2]``: its
        keys/values into own slot ``meta[2]``, its dependency keys too, ``h_last`` updated."""
        model, dec, kv = self.model, self.dec, self.kv
        bar, n_ctx, slot = self.meta[0:1], self.meta[1:2], self.meta[2:3]
        kv.slot.copy_(slot)
        kv.pos.copy_(n_ctx + slot)
        kv.keep.copy_(self.ar_gen <= slot)
        kv.keep_prefix.copy_(self.ar_ctx < n_ctx)
        stamp = dec.gen_stamps.index_select(1, bar)  # (rows, 1, 5)
        h = model.hidden(self.s1, self.s2, stamp, cache=kv)  # (rows, 1, d)
        k, v = model.dep_layer.cross_attn.project_kv(h)  # (rows, 4, 1, hd)
        dec.dep_gen.k[0].index_copy_(2, kv.slot, k)
        dec.dep_gen.v[0].index_copy_(2, kv.slot, v)
        self.h_last.copy_(h)

    # -- host side --------------------------------------------------------------------------
    def _set_meta(self, bar: int) -> None:
        dec = self.dec
        # A fresh host tensor each time: a reused pinned one could be overwritten before an
        # earlier asynchronous copy has read it.
        self.meta.copy_(torch.tensor([bar, dec.ctx.length, dec.gen.length]))

    def _after_prefill(self) -> None:
        self.h_last.copy_(self.dec.h_last)

    def run(self, s1_ctx: torch.Tensor, s2_ctx: torch.Tensor, stamps: torch.Tensor, *,
            slide_block: int, sample, advance, verbose: bool = False) -> None:
        """Generate ``pred_len`` bars for series of this decoder's shape; tokens are left in
        ``dec.gen_s1``/``dec.gen_s2``. ``sample``/``advance`` run the two step functions
        (called directly, or replaying their graphs)."""
        dec, max_context = self.dec, self.max_context
        dec.load(s1_ctx, s2_ctx, stamps)
        dec.prefill(max(0, dec.ctx_len - max_context))
        self._after_prefill()
        for step in tqdm(range(self.pred_len), disable=not verbose, desc="generating",
                         leave=False):
            self._set_meta(step)
            sample()
            dec.n_gen += 1
            if step + 1 == self.pred_len:
                break  # the last bar needs no forward pass of its own
            if dec.end - dec.window_start > max_context:
                # Positions restart at 0 in the slid window: an eager re-prefill, outside
                # the graphs (its shapes change with the window).
                dec.prefill(dec.end - (max_context - slide_block + 1))
                self._after_prefill()
            else:
                self._set_meta(step)
                advance()
                dec.gen.length += 1
                dec.dep_gen.length += 1


class GraphedDecoder:
    """A :class:`StaticDecoder` whose two step functions are captured as CUDA graphs.

    Seeded generators cannot be swapped inside a captured graph, so the graph draws from
    generators it owns; each run copies the callers' generator states in and back out, so
    callers see their generators advanced exactly as the eager engine advances them.
    """

    def __init__(self, static: StaticDecoder, *, sampling: SamplingParams, n_generators: int,
                 per_series: bool):
        self.static = static
        self.owned = [torch.Generator(device=static.h_last.device) for _ in range(n_generators)]
        static.sampling = sampling
        # None draws from the default CUDA generator, which every capture registers itself.
        static.generators = (self.owned if per_series else
                             self.owned[0] if self.owned else None)
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.capture_seconds = 0.0

    def capture(self) -> None:
        """Warm the step up on a side stream, then record each function once."""
        st = self.static
        rng = torch.cuda.get_rng_state(st.h_last.device)  # warm-up must not move the
        t0 = time.perf_counter()                          # global stream
        st.meta.copy_(torch.tensor([0, 1, 0]))  # a valid state: one context slot filled
        side = torch.cuda.Stream(st.h_last.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # kernels pick their algorithms and workspaces here
                st.sample_step()
                st.advance_step()
        torch.cuda.current_stream().wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        for fn in (st.sample_step, st.advance_step):
            graph = torch.cuda.CUDAGraph()
            for gen in self.owned:
                graph.register_generator_state(gen)
            with torch.cuda.graph(graph, pool=pool):
                fn()
            self.graphs.append(graph)
        torch.cuda.synchronize(st.h_last.device)
        torch.cuda.set_rng_state(rng, st.h_last.device)
        self.capture_seconds = time.perf_counter() - t0

    def run(self, s1_ctx: torch.Tensor, s2_ctx: torch.Tensor, stamps: torch.Tensor, *,
            slide_block: int, generator: Generators, verbose: bool = False) -> None:
        """:meth:`StaticDecoder.run` by graph replays, drawing from the callers' generators."""
        st = self.static
        graphs = not self.owned or _GRAPH_SAFE_GENERATORS
        if not graphs:
            logger.warning("this torch cannot capture seeded generators in CUDA graphs: "
                           "running the static step without graphs")
        elif not self.graphs:
            self.capture()  # its warm-up draws from the owned generators: before the hand-over
        callers = ([] if generator is None else
                   [generator] if isinstance(generator, torch.Generator) else list(generator))
        for own, theirs in zip(self.owned, callers, strict=False):
            own.set_state(theirs.get_state())
        for own in self.owned[len(callers):]:  # padding series: any fixed stream will do
            own.manual_seed(0)
        sample, advance = ((g.replay for g in self.graphs) if graphs
                           else (st.sample_step, st.advance_step))
        st.run(s1_ctx, s2_ctx, stamps, slide_block=slide_block, sample=sample, advance=advance,
               verbose=verbose)
        for own, theirs in zip(self.owned, callers, strict=False):
            theirs.set_state(own.get_state())  # advanced exactly as the eager engine would


_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def graphed_decoder(model: Kronos, *, n_series: int, samples: int, ctx_len: int, pred_len: int,
                    max_context: int, dtype: torch.dtype, sampling: SamplingParams,
                    n_generators: int, per_series: bool) -> GraphedDecoder:
    """The captured decoder of this shape for ``model``, built on first use and kept (up to
    :data:`MAX_GRAPHED_DECODERS` per model, least recently used dropped)."""
    device = next(model.parameters()).device
    pool = _POOLS.setdefault(model, OrderedDict())
    key = (n_series, samples, ctx_len, pred_len, max_context, dtype, sampling, n_generators,
           per_series, torch.is_autocast_enabled("cuda"))
    if key in pool:
        pool.move_to_end(key)
        return pool[key]
    static = StaticDecoder(model, n_series=n_series, samples=samples, ctx_len=ctx_len,
                           pred_len=pred_len, max_context=max_context, dtype=dtype,
                           device=device)
    pool[key] = GraphedDecoder(static, sampling=sampling, n_generators=n_generators,
                               per_series=per_series)
    while len(pool) > MAX_GRAPHED_DECODERS:
        pool.popitem(last=False)
    return pool[key]


def captured(model: Kronos) -> list[GraphedDecoder]:
    """The captured decoders kept for ``model`` (their ``capture_seconds``, buffers)."""
    return list(_POOLS.get(model, {}).values())


def release_graphs(model: Kronos) -> None:
    """Drop every captured decoder of ``model`` (and the caches they hold)."""
    _POOLS.pop(model, None)


def pad_series(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` (B, …) with zero rows appended up to ``rows`` (padding series: valid token ids
    and time features, results discarded)."""
    if t.shape[0] == rows:
        return t
    pad = t.new_zeros(rows - t.shape[0], *t.shape[1:])
    return torch.cat([t, pad])


def static_generate(model: Kronos, s1_ctx: torch.Tensor, s2_ctx: torch.Tensor,
                    stamps: torch.Tensor, *, pred_len: int, max_context: int,
                    sampling: SamplingParams, generator: Generators, slide_block: int,
                    dtype: torch.dtype, cuda_graphs: bool,
                    verbose: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (rows, pred_len) s1 and s2 of every path, by the static step.

    With ``cuda_graphs`` the series are padded to :func:`series_bucket` rows when each has
    its own generator (a padded series then draws from a spare one, so the real series'
    draws do not change); with one generator for the batch, or none, the row count is part
    of every draw's shape, so the graph is captured for the exact count.
    """
    n_series, ctx_len = s1_ctx.shape
    samples = sampling.sample_count
    if not cuda_graphs:
        static = StaticDecoder(model, n_series=n_series, samples=samples, ctx_len=ctx_len,
                               pred_len=pred_len, max_context=max_context, dtype=dtype,
                               device=s1_ctx.device)
        static.sampling, static.generators = sampling, generator
        static.run(s1_ctx, s2_ctx, stamps, slide_block=slide_block, verbose=verbose,
                   sample=static.sample_step, advance=static.advance_step)
        return static.dec.gen_s1, static.dec.gen_s2
    per_series = isinstance(generator, Sequence)
    bucket = series_bucket(n_series) if per_series else n_series
    graphed = graphed_decoder(model, n_series=bucket, samples=samples, ctx_len=ctx_len,
                              pred_len=pred_len, max_context=max_context, dtype=dtype,
                              sampling=sampling, per_series=per_series,
                              n_generators=bucket if per_series else int(generator is not None))
    graphed.run(pad_series(s1_ctx, bucket), pad_series(s2_ctx, bucket),
                pad_series(stamps, bucket), slide_block=slide_block, generator=generator,
                verbose=verbose)
    rows = n_series * samples
    dec = graphed.static.dec
    return dec.gen_s1[:rows].clone(), dec.gen_s2[:rows].clone()


# -- how many paths fit in memory ------------------------------------------------------------
CPU_MEMORY_BUDGET = 2 * 2**30  # bytes one CPU generation batch may use (caches + temporaries)
CPU_MAX_ROWS = 1024  # on CPU larger batches gain nothing, and one seed's draws depend on them
GPU_MEMORY_FRACTION = 0.8  # of the device's free memory at the time of the call
GPU_MAX_ROWS = 1 << 16


def bytes_per_path(model: Kronos, *, ctx_len: int, pred_len: int, samples: int,
                   max_context: int, dtype: torch.dtype) -> int:
    """Estimated memory of one sample path in a generation batch: its share of the series'
    context caches and prefill activations, its own caches, its re-prefill activations and
    its sampling buffers, times 2 for allocator slack and short-lived temporaries."""
    cfg = model.config
    d, ff, item = cfg.d_model, cfg.ff_dim, torch.finfo(dtype).bits // 8
    ctx_cap, gen_cap = min(ctx_len, max_context), min(pred_len, max_context)
    kv_position = (2 * cfg.n_layers + 2) * d * item  # predictor + dependency-layer keys/values
    activations = (6 * d + 3 * ff) * 4  # one position through a block, fp32, with residuals
    vocab = model.head.vocab_s1 + model.head.vocab_s2
    per_series = ctx_cap * (kv_position + activations)
    per_path = gen_cap * (kv_position + activations) + vocab * 4 * 8  # logits, noise, sort
    return 2 * (per_path + -(-per_series // samples))


def auto_batch_rows(model: Kronos, *, ctx_len: int, pred_len: int, samples: int,
                    max_context: int, dtype: torch.dtype) -> int:
    """Series × paths to generate together: what fits in :data:`GPU_MEMORY_FRACTION` of the
    free CUDA memory, or in :data:`CPU_MEMORY_BUDGET` elsewhere; at least one series."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget, cap = int(free * GPU_MEMORY_FRACTION), GPU_MAX_ROWS
    else:
        budget, cap = CPU_MEMORY_BUDGET, CPU_MAX_ROWS
    per = bytes_per_path(model, ctx_len=ctx_len, pred_len=pred_len, samples=samples,
                         max_context=max_context, dtype=dtype)
    return max(samples, min(cap, budget // per))

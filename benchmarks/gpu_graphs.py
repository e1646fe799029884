"""CUDA-graph checks for benchmarks/gpu_check.sh (needs a CUDA device).

    python benchmarks/gpu_graphs.py exactness   # graphs vs eager: tokens, generators, capture
    python benchmarks/gpu_graphs.py universe    # 5,000 names x 16 paths through forecast_panel

``exactness``: the CUDA-graph path against the eager engine (mini preset, random weights, fp32,
TF32 off): the same tokens for greedy, top-k and top-p sampling, with and without a sliding
window, with one generator, one per series (3 series padded to a bucket of 4) and the global
stream; the callers' generators must end where the eager engine leaves them. Prints each
call's time, peak memory and the graph capture time. Exit status 1 on any mismatch.

``universe``: 5,000 synthetic daily names, ctx 120 / pred 5 / 16 paths, Kronos-small-sized
random weights, scored through ``forecast_panel`` with memory-sized batches
(``max_batch_rows=None``, ``batch_size=None``): eager vs graphs, fp32 and bf16; time, rows
per batch, peak memory, and whether the graph paths equal the eager ones.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from kronos_quant import KronosPredictor, static_decode
from kronos_quant.config import KronosConfig, KronosTokenizerConfig, preset_configs
from kronos_quant.data import synthetic_panel
from kronos_quant.generation import SamplingParams, generate
from kronos_quant.model import Kronos
from kronos_quant.signals.walkforward import forecast_panel
from kronos_quant.testing import random_init_
from kronos_quant.tokenizer import KronosTokenizer

DEV = torch.device("cuda")


def _generators(kind: str, seed: int = 7):
    if kind == "global":
        torch.cuda.manual_seed(seed)
        return None
    if kind == "one":
        return torch.Generator(DEV).manual_seed(seed)
    return [torch.Generator(DEV).manual_seed(seed + i) for i in range(3)]


def _state(kind: str, gen) -> torch.Tensor:
    if kind == "global":
        return torch.cuda.get_rng_state()
    return torch.cat([one.get_state() for one in ([gen] if kind == "one" else gen)])


def exactness() -> int:
    tok_cfg, model_cfg = preset_configs("mini")
    tok, model = KronosTokenizer.from_config(tok_cfg), Kronos.from_config(model_cfg)
    random_init_(tok, 0, scale=0.2)
    random_init_(model, 1, scale=0.2)
    tok, model = tok.to(DEV).eval(), model.to(DEV).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 60, 6, generator=g).to(DEV)  # (B, L, 6) normalised bars
    stamps = torch.randint(0, 7, (3, 60 + 40, 5), generator=g).float().to(DEV)
    bad = 0
    cases = [("greedy", SamplingParams(T=1.0, top_k=1, top_p=1.0, sample_count=2)),
             ("top-p", SamplingParams(T=1.0, top_k=0, top_p=0.9, sample_count=4)),
             ("top-k", SamplingParams(T=0.8, top_k=5, top_p=1.0, sample_count=4))]
    for name, sampling in cases:
        for max_context in (128, 80):  # 80 < 60 + 40: the window slides
            for kind in ("one", "per series", "global"):
                bad += _compare(model, tok, x, stamps, name, sampling, max_context, kind)
                static_decode.release_graphs(model)
    print("graphs exactness:", "all equal" if not bad else f"{bad} MISMATCHES")
    return 1 if bad else 0


def _compare(model, tok, x, stamps, name, sampling, max_context, kind) -> int:
    """Eager once, then graphs twice (capture, then replay of the kept graphs)."""
    kw = dict(pred_len=40, max_context=max_context, sampling=sampling)
    ge = _generators(kind)
    eager = generate(model, tok, x, stamps[:, :60], stamps[:, 60:], **kw, generator=ge,
                     cuda_graphs=False)
    after_eager = _state(kind, ge)
    bad = 0
    for run in ("capture", "replay"):
        gg = _generators(kind)
        torch.cuda.synchronize()
        mem0, t0 = torch.cuda.memory_allocated(), time.perf_counter()
        torch.cuda.reset_peak_memory_stats()
        out = generate(model, tok, x, stamps[:, :60], stamps[:, 60:], **kw, generator=gg,
                       cuda_graphs=True)
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() - mem0) / 2**20
        same = torch.equal(out.s1, eager.s1) and torch.equal(out.s2, eager.s2)
        handed = torch.equal(_state(kind, gg), after_eager)
        diff = (out.bars - eager.bars).abs().max().item()
        ok = same and handed and diff < 1e-4
        bad += not ok
        capture = max((d.capture_seconds for d in static_decode.captured(model)), default=0.0)
        extra = f", capture {capture:.3f} s" if run == "capture" else ""
        print(f"{name:6s} max_context {max_context:3d} {kind:10s} {run:7s}: same tokens {same}, "
              f"generators handed back {handed}, max |graphs - eager| bars {diff:.2g}, "
              f"{secs:.3f} s, peak +{peak:.0f} MiB{extra}{'' if ok else '  MISMATCH'}",
              flush=True)
    return bad


def universe() -> int:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)  # Kronos-small-sized random weights
    tok = KronosTokenizer.from_config(KronosTokenizerConfig()).eval()
    model = Kronos.from_config(KronosConfig()).eval()
    panel = synthetic_panel(5000, 125, seed=1)
    last = panel.index.get_level_values("datetime").unique()[-1]
    opts = dict(lookback=120, pred_len=5, sample_count=16, seed=0, start=last,
                batch_size=None, verbose=False)
    paths = {}
    for label, kw in [("eager fp32", dict(cuda_graphs=False)),
                      ("graphs fp32", dict(cuda_graphs=True)),
                      ("eager bf16", dict(cuda_graphs=False, amp_dtype=torch.bfloat16)),
                      ("graphs bf16", dict(cuda_graphs=True, amp_dtype=torch.bfloat16))]:
        pred = KronosPredictor(model, tok, device="cuda", max_batch_rows=None, **kw)
        rows = pred.batch_rows(120, 5, 16)
        for run in ("first", "second"):  # the first call of a shape includes graph capture
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            fc = forecast_panel(pred, panel, **opts)
            torch.cuda.synchronize()
            secs = time.perf_counter() - t0
            print(f"{label:11s} {run:6s}: {len(fc)} names x 16 paths in {secs:.2f} s "
                  f"({len(fc) * 60 / secs:,.0f} series-forecasts/min), batch {rows} rows, "
                  f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
        paths[label] = fc.batch.paths
    for dtype in ("fp32", "bf16"):
        same = np.array_equal(paths[f"eager {dtype}"], paths[f"graphs {dtype}"])
        print(f"{dtype}: graphs paths equal eager paths: {same}")
    return 0


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = False  # exactness is checked in true fp32
    torch.backends.cudnn.allow_tf32 = False
    if len(sys.argv) != 2 or sys.argv[1] not in ("exactness", "universe"):
        raise SystemExit("usage: gpu_graphs.py exactness|universe")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_graphs.py: no CUDA device")
    raise SystemExit(exactness() if sys.argv[1] == "exactness" else universe())

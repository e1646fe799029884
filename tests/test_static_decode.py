"""Static-shape decode step (kronos_quant.static_decode) against the eager engine on CPU:
same tokens for greedy and seeded sampling, with and without a sliding window; the CUDA-graph
driver's padding and generator hand-over run here with the step functions in place of graph
replays (the capture itself is checked by benchmarks/gpu_check.sh on a GPU)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from generation_support import random_inputs

from kronos_quant.generation import SamplingParams, generate, resolve_step
from kronos_quant.sampling import sample_tokens
from kronos_quant.static_decode import (
    Decoder,
    GraphedDecoder,
    StaticDecoder,
    pad_series,
    series_bucket,
    static_generate,
)
from kronos_quant.testing import recompute_generate

pytestmark = pytest.mark.usefixtures("one_thread")


def _generators(kind: str, n_series: int):
    if kind == "none":
        torch.manual_seed(3)  # the global stream, reset before each engine runs
        return None
    if kind == "one":
        return torch.Generator().manual_seed(5)
    return [torch.Generator().manual_seed(10 + i) for i in range(n_series)]


# below the window, exactly filling it, sliding for many bars (exact and fast mode), a
# context longer than the window, and a context shorter than the horizon
WINDOWS = [(10, 6, 16, 1), (10, 7, 16, 1), (12, 14, 16, 1), (12, 14, 16, 4), (20, 9, 16, 1),
           (3, 16, 16, 1)]
SAMPLINGS = {"greedy": SamplingParams(top_k=1, sample_count=2),
             "top_p": SamplingParams(top_p=0.9, sample_count=4),
             "top_k T": SamplingParams(top_k=3, T=0.7, sample_count=3)}


@pytest.mark.parametrize("ctx_len, pred_len, max_context, slide_block", WINDOWS)
@pytest.mark.parametrize("sampling", list(SAMPLINGS))
@pytest.mark.parametrize("kind", ["one", "per series", "none"])
def test_static_step_draws_the_eager_engines_tokens(pair, ctx_len, pred_len, max_context,
                                                    slide_block, sampling, kind):
    tok, model = pair
    x, xs, ys = random_inputs(3, ctx_len, pred_len, seed=ctx_len + pred_len)
    kw = dict(pred_len=pred_len, max_context=max_context, sampling=SAMPLINGS[sampling],
              slide_block=slide_block)
    eager = generate(model, tok, x, xs, ys, generator=_generators(kind, 3), **kw)
    after_eager = torch.rand(1) if kind == "none" else None
    static = generate(model, tok, x, xs, ys, generator=_generators(kind, 3), static_step=True,
                      **kw)
    assert torch.equal(static.s1, eager.s1) and torch.equal(static.s2, eager.s2)
    torch.testing.assert_close(static.bars, eager.bars, rtol=1e-6, atol=1e-6)
    if kind == "none":  # the global stream is left where the eager engine leaves it
        assert torch.equal(torch.rand(1), after_eager)
    if sampling != "greedy":
        assert static.s1.unique().numel() > 2  # really sampled


def test_static_step_equals_full_recompute_with_a_sliding_window(pair):
    tok, model = pair
    x, xs, ys = random_inputs(2, 12, 14, seed=9)
    sampling = SamplingParams(top_p=0.9, sample_count=3)
    got = generate(model, tok, x, xs, ys, pred_len=14, max_context=16, sampling=sampling,
                   generator=torch.Generator().manual_seed(1), static_step=True)
    want = recompute_generate(model, tok, x, xs, ys, pred_len=14, max_context=16,
                              sampling=sampling, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got.bars, want, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_static_logits_equal_the_eager_decoders_at_every_bar(pair):
    """Teacher-forced: the static step's s1/s2 logits equal the eager decoder's to float
    rounding, bar by bar, through the slide (so equal tokens are not luck)."""
    _, model = pair
    ctx_len, pred_len, max_context, samples = 10, 12, 16, 2
    gen = torch.Generator().manual_seed(4)
    s1 = torch.randint(0, 8, (2 * samples, ctx_len + pred_len), generator=gen)
    s2 = torch.randint(0, 8, (2 * samples, ctx_len + pred_len), generator=gen)
    s1[:, :ctx_len], s2[:, :ctx_len] = s1[::samples, :ctx_len].repeat_interleave(samples, 0), \
        s2[::samples, :ctx_len].repeat_interleave(samples, 0)
    stamps = torch.randint(0, 7, (2, ctx_len + pred_len, 5), generator=gen).float()
    args = (s1[::samples, :ctx_len], s2[::samples, :ctx_len], stamps)
    kw = dict(samples=samples, pred_len=pred_len, max_context=max_context, dtype=torch.float32)
    eager = Decoder(model, *args, **kw)
    static = StaticDecoder(model, n_series=2, samples=samples, ctx_len=ctx_len,
                           pred_len=pred_len, max_context=max_context, dtype=torch.float32,
                           device=torch.device("cpu"))
    logits = eager.prefill(0)
    static.dec.load(*args)
    static.dec.prefill(0)
    static.h_last.copy_(static.dec.h_last)
    for i in range(pred_len - 1):
        bar = slice(ctx_len + i, ctx_len + i + 1)
        dec = static.dec
        static.meta.copy_(torch.tensor([i, dec.ctx.length, dec.gen.length]))
        torch.testing.assert_close(model.head(static.h_last)[:, 0], logits, rtol=1e-5, atol=1e-6)
        keep = (static.ar_gen < dec.gen.length, static.ar_ctx < dec.ctx.length)
        attn = model.dep_layer.cross_attn.attend_one(
            model.embedding.emb_s1(s1[:, bar]), dec.dep_gen.k[0], dec.dep_gen.v[0],
            (dec.dep_ctx.k[0], dec.dep_ctx.v[0]), keep=keep)
        got_s2 = model.head.cond_forward(model.dep_layer.norm(static.h_last + attn))[:, 0]
        torch.testing.assert_close(got_s2, eager.s2_logits(s1[:, bar]), rtol=1e-5, atol=1e-6)
        logits = eager.append(s1[:, bar], s2[:, bar], 1)
        dec.gen_s1[:, i], dec.gen_s2[:, i] = s1[:, bar][:, 0], s2[:, bar][:, 0]
        dec.n_gen += 1
        if dec.end - dec.window_start > max_context:
            dec.prefill(dec.end - max_context)
            static.h_last.copy_(dec.h_last)
        else:
            static.s1.copy_(s1[:, bar])
            static.s2.copy_(s2[:, bar])
            static.advance_step()
            dec.gen.length += 1
            dec.dep_gen.length += 1
    assert eager.window_start > 0  # the window did slide


@pytest.mark.parametrize("params", [SamplingParams(top_p=0.9), SamplingParams(top_k=4, T=0.5),
                                    SamplingParams(top_p=1.0), SamplingParams(top_k=1)])
def test_noise_buffer_draws_what_multinomial_draws(params):
    logits = torch.randn(6, 64, generator=torch.Generator().manual_seed(0)) * 3
    for generator in (lambda: torch.Generator().manual_seed(2),
                      lambda: [torch.Generator().manual_seed(s) for s in (1, 2, 3)]):
        want = sample_tokens(logits, params, generator())
        got = sample_tokens(logits, params, generator(), noise=torch.empty(6, 64))
        assert torch.equal(got, want)
    torch.manual_seed(0)
    want = sample_tokens(logits, params)
    torch.manual_seed(0)
    assert torch.equal(sample_tokens(logits, params, noise=torch.empty(6, 64)), want)


def _fake_capture(graphed: GraphedDecoder) -> None:
    """CPU stand-in for capture: warm-up steps that draw from the owned generators, as the
    real warm-up does, then 'graphs' whose replay runs the step functions on the same
    buffers."""
    st = graphed.static
    with torch.inference_mode():
        st.meta.copy_(torch.tensor([0, 1, 0]))
        for _ in range(2):
            st.sample_step()
            st.advance_step()
    graphed.graphs = [SimpleNamespace(replay=st.sample_step),
                      SimpleNamespace(replay=st.advance_step)]


@pytest.mark.parametrize("n_series", [1, 3, 5])
def test_graph_driver_pads_to_a_bucket_and_hands_generators_back(pair, n_series, monkeypatch):
    """Per-series generators: padded to the bucket with spare generators, the real series
    draw what the eager engine draws (the capture's warm-up draws do not leak into them), and
    the callers' generators end where eager leaves them. The same decoder then serves a second
    batch of another size in the bucket."""
    tok, model = pair
    bucket = series_bucket(n_series)
    sampling = SamplingParams(top_p=0.9, sample_count=3)
    with torch.inference_mode():  # as inside generate()
        static = StaticDecoder(model, n_series=bucket, samples=3, ctx_len=12, pred_len=10,
                               max_context=16, dtype=torch.float32, device=torch.device("cpu"))
    graphed = GraphedDecoder(static, sampling=sampling, n_generators=bucket, per_series=True)
    monkeypatch.setattr(GraphedDecoder, "capture", _fake_capture)
    monkeypatch.setattr("kronos_quant.static_decode._GRAPH_SAFE_GENERATORS", True)
    for n, seed in ((n_series, 0), (max(1, bucket // 2 + 1), 1)):
        x, xs, ys = random_inputs(n, 12, 10, seed=seed)
        eager_gens = _generators("per series", n)
        eager = generate(model, tok, x, xs, ys, pred_len=10, max_context=16, sampling=sampling,
                         generator=eager_gens)
        stamps = torch.cat([xs, ys], dim=1)
        gens = _generators("per series", n)
        with torch.inference_mode():
            s1_ctx, s2_ctx = tok.encode(x, half=True)
            graphed.run(pad_series(s1_ctx, bucket), pad_series(s2_ctx, bucket),
                        pad_series(stamps, bucket), slide_block=1, generator=gens)
        rows = n * 3
        assert torch.equal(static.dec.gen_s1[:rows].reshape(n, 3, 10), eager.s1)
        assert torch.equal(static.dec.gen_s2[:rows].reshape(n, 3, 10), eager.s2)
        for a, b in zip(gens, eager_gens, strict=True):
            assert torch.equal(a.get_state(), b.get_state())


def test_step_selection_and_errors():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_step(cpu, static_step=None, cuda_graphs=None) == (False, False)
    assert resolve_step(cpu, static_step=True, cuda_graphs=None) == (True, False)
    assert resolve_step(cuda, static_step=None, cuda_graphs=True) == (True, True)
    # CUDA's default is graphs (measured exact on a device), unless the eager step is asked for.
    assert resolve_step(cuda, static_step=None, cuda_graphs=None) == (True, True)
    assert resolve_step(cuda, static_step=False, cuda_graphs=None) == (False, False)
    assert resolve_step(cuda, static_step=None, cuda_graphs=False) == (False, False)
    assert resolve_step(cuda, static_step=True, cuda_graphs=False) == (True, False)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_step(cpu, static_step=None, cuda_graphs=True)
    with pytest.raises(ValueError, match="contradicts"):
        resolve_step(cuda, static_step=False, cuda_graphs=True)
    assert [series_bucket(n) for n in (1, 2, 3, 5, 64, 65)] == [1, 2, 4, 8, 64, 128]


def test_static_generate_on_cpu_needs_no_graphs(pair):
    tok, model = pair
    x, xs, ys = random_inputs(2, 8, 4)
    with torch.inference_mode():
        s1_ctx, s2_ctx = tok.encode(x, half=True)
        s1, s2 = static_generate(model, s1_ctx, s2_ctx, torch.cat([xs, ys], 1), pred_len=4,
                                 max_context=16, sampling=SamplingParams(sample_count=2),
                                 generator=torch.Generator().manual_seed(0), slide_block=1,
                                 dtype=torch.float32, cuda_graphs=False)
    assert s1.shape == s2.shape == (4, 4) and int(s1.max()) < 8


def test_predictor_static_step_forecasts_equal_the_eager_ones(pair, bars):
    from kronos_quant import KronosPredictor

    tok, model = pair
    eager = KronosPredictor(model, tok, device="cpu", max_context=16)
    static = KronosPredictor(model, tok, device="cpu", max_context=16, static_step=True)
    kw = dict(pred_len=6, sample_count=4, seed=[1, 2])
    want = eager.forecast_batch([bars, bars.iloc[:-3]], **kw)
    got = static.forecast_batch([bars, bars.iloc[:-3]], **kw)
    for a, b in zip(got, want, strict=True):
        assert a.paths.shape == (4, 6, 6)
        assert a.paths.tolist() == b.paths.tolist()  # the same tokens decode to the same bars
    with pytest.raises(ValueError, match="needs a CUDA device"):
        KronosPredictor(model, tok, device="cpu", cuda_graphs=True)


def test_batch_rows_follow_the_memory_budget(pair, monkeypatch):
    from kronos_quant import KronosPredictor, static_decode

    tok, model = pair
    predictor = KronosPredictor(model, tok, device="cpu", max_context=32, max_batch_rows=None)
    per = static_decode.bytes_per_path(model, ctx_len=20, pred_len=4, samples=4,
                                       max_context=32, dtype=torch.float32)
    # longer windows, more cache per path; a path never costs less than its own caches
    assert static_decode.bytes_per_path(model, ctx_len=30, pred_len=8, samples=4,
                                        max_context=32, dtype=torch.float32) > per
    assert per > (4 + 20 / 4) * (2 * 2 + 2) * 16 * 4
    assert predictor.batch_rows(20, 4, 4) == static_decode.CPU_MAX_ROWS  # tiny model
    monkeypatch.setattr(static_decode, "CPU_MEMORY_BUDGET", per * 10)
    assert predictor.batch_rows(20, 4, 4) == 10
    monkeypatch.setattr(static_decode, "CPU_MEMORY_BUDGET", 1)
    assert predictor.batch_rows(20, 4, 4) == 4  # at least one series' paths
    assert KronosPredictor(model, tok, device="cpu", max_batch_rows=8).batch_rows(20, 4, 4) == 8


def test_panel_streams_in_memory_sized_batches_with_the_same_scores(pair, monkeypatch):
    """batch_size=None: windows per call from the predictor's memory bound; per-window seeds
    make the paths independent of the batching."""
    from kronos_quant import KronosPredictor, static_decode
    from kronos_quant.data import synthetic_panel
    from kronos_quant.signals.walkforward import forecast_panel, iter_panel_forecasts

    tok, model = pair
    panel = synthetic_panel(12, 40, seed=3)
    dates = panel.index.get_level_values("datetime").unique()
    opts = dict(lookback=16, pred_len=3, sample_count=4, seed=0, start=dates[-2],  # 24 windows
                verbose=False)
    auto = KronosPredictor(model, tok, device="cpu", max_context=32, max_batch_rows=None)
    per = static_decode.bytes_per_path(model, ctx_len=16, pred_len=3, samples=4,
                                       max_context=32, dtype=torch.float32)
    monkeypatch.setattr(static_decode, "CPU_MEMORY_BUDGET", per * 20)  # 5 windows × 4 paths
    chunks = list(iter_panel_forecasts(auto, panel, batch_size=None, **opts))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 4]
    fixed = KronosPredictor(model, tok, device="cpu", max_context=32)
    want = forecast_panel(fixed, panel, **opts)
    got = forecast_panel(auto, panel, batch_size=None, **opts)
    assert got.keys.equals(want.keys)
    assert np.array_equal(got.batch.paths, want.batch.paths)


def test_static_step_runs_under_bf16_autocast(pair):
    """Autocast is not exact (docs/performance.md), but the static step keeps its caches in
    bf16 and draws (nearly) the eager bf16 engine's tokens on the same seed."""
    tok, model = pair
    x, xs, ys = random_inputs(3, 12, 14, seed=2)
    kw = dict(pred_len=14, max_context=16, sampling=SamplingParams(top_p=0.9, sample_count=4),
              amp_dtype=torch.bfloat16)
    eager = generate(model, tok, x, xs, ys, generator=torch.Generator().manual_seed(1), **kw)
    static = generate(model, tok, x, xs, ys, generator=torch.Generator().manual_seed(1),
                      static_step=True, **kw)
    assert static.bars.dtype == torch.float32 and torch.isfinite(static.bars).all()
    assert (static.s1 == eager.s1).float().mean() > 0.9

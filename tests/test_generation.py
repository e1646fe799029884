"""Cached generation engine vs full-window recomputation: logits, tokens, sliding, caches."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from generation_support import random_inputs

from kronos_quant.generation import SamplingParams, decode_paths, generate
from kronos_quant.layers import RotaryEmbedding, apply_rotary, shared_prefix_attention
from kronos_quant.static_decode import Decoder
from kronos_quant.testing import recompute_generate, recompute_logits

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY = SamplingParams(top_k=1)


def _token_stream(n_series: int, samples: int, ctx_len: int, pred_len: int, seed: int = 0):
    """Token ids (rows, L+P) whose context is shared within a series and whose generated part
    differs per row, plus per-series stamps (B, L+P, 5)."""
    gen = torch.Generator().manual_seed(seed)
    rows = n_series * samples
    ctx = torch.randint(0, 8, (2, n_series, ctx_len), generator=gen).repeat_interleave(samples, 1)
    fut = torch.randint(0, 8, (2, rows, pred_len), generator=gen)
    s1, s2 = torch.cat([ctx, fut], dim=2)  # (rows, L+P) each
    stamps = torch.randint(0, 7, (n_series, ctx_len + pred_len, 5), generator=gen).float()
    return s1, s2, stamps


def _drive(model, s1, s2, stamps, *, samples, ctx_len, max_context, slide_block=1):
    """Teacher-force a token stream through the decoder; collect per-bar s1/s2 logits and the
    window start used for each bar."""
    pred_len = s1.shape[1] - ctx_len
    dec = Decoder(model, s1[::samples, :ctx_len], s2[::samples, :ctx_len], stamps,
                  samples=samples, pred_len=pred_len, max_context=max_context,
                  dtype=torch.float32)
    logits = dec.prefill(max(0, ctx_len - max_context))
    out_s1, out_s2, starts = [], [], []
    for i in range(pred_len):
        bar = slice(ctx_len + i, ctx_len + i + 1)
        out_s1.append(logits)
        out_s2.append(dec.s2_logits(s1[:, bar]))
        starts.append(dec.window_start)
        if i + 1 < pred_len:
            logits = dec.append(s1[:, bar], s2[:, bar], slide_block)
    return torch.stack(out_s1, 1), torch.stack(out_s2, 1), starts


def _window_logits(model, s1, s2, stamps, *, samples, ctx_len, starts):
    """Reference: s1/s2 logits of bar i from one full-window pass over [starts[i], L+i)."""
    rows_stamps = stamps.repeat_interleave(samples, dim=0)
    out_s1, out_s2 = [], []
    for i, start in enumerate(starts):
        end = ctx_len + i
        logits, h = model.decode_s1(s1[:, start:end], s2[:, start:end], rows_stamps[:, start:end])
        out_s1.append(logits[:, -1])
        out_s2.append(model.decode_s2(h, s1[:, end:end + 1])[:, -1])
    return torch.stack(out_s1, 1), torch.stack(out_s2, 1)


# ctx_len, pred_len, max_context: below, exactly at, one beyond, sliding for many steps, and a
# context longer than the window.
WINDOWS = [(6, 5, 16), (10, 7, 16), (10, 8, 16), (12, 14, 16), (20, 9, 16)]


@pytest.mark.parametrize("ctx_len, pred_len, max_context", WINDOWS)
@torch.inference_mode()
def test_cached_logits_equal_full_recompute(pair, ctx_len, pred_len, max_context):
    _, model = pair
    s1, s2, stamps = _token_stream(2, 3, ctx_len, pred_len)
    got_s1, got_s2, starts = _drive(model, s1, s2, stamps, samples=3, ctx_len=ctx_len,
                                    max_context=max_context)
    assert starts == [max(0, ctx_len + i - max_context) for i in range(pred_len)]
    want_s1, want_s2 = _window_logits(model, s1, s2, stamps, samples=3, ctx_len=ctx_len,
                                      starts=starts)
    torch.testing.assert_close(got_s1, want_s1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_s2, want_s2, rtol=1e-5, atol=1e-5)
    # Cross-check against the testing module's own per-bar recompute of the s1 logits.
    ref = recompute_logits(model, s1, s2, stamps.repeat_interleave(3, 0), max_context)
    torch.testing.assert_close(got_s1, ref[:, ctx_len - 1:-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ctx_len, pred_len, max_context", WINDOWS + [(3, 16, 16)])
def test_greedy_generation_equals_recompute(pair, ctx_len, pred_len, max_context):
    tok, model = pair
    x, xs, ys = random_inputs(2, ctx_len, pred_len)
    sampling = SamplingParams(top_k=1, sample_count=2)
    got = generate(model, tok, x, xs, ys, pred_len=pred_len, max_context=max_context,
                   sampling=sampling)
    want = recompute_generate(model, tok, x, xs, ys, pred_len=pred_len,
                              max_context=max_context, sampling=sampling)
    assert got.bars.shape == (2, 2, pred_len, 6) and got.s1.shape == (2, 2, pred_len)
    torch.testing.assert_close(got.bars, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ctx_len, pred_len, max_context", [(10, 6, 16), (14, 12, 16)])
def test_sampled_paths_draw_like_recompute_under_one_seed(pair, ctx_len, pred_len, max_context):
    tok, model = pair
    x, xs, ys = random_inputs(2, ctx_len, pred_len, seed=1)
    sampling = SamplingParams(T=1.0, top_p=0.9, sample_count=4)
    runs = [fn(model, tok, x, xs, ys, pred_len=pred_len, max_context=max_context,
               sampling=sampling, generator=torch.Generator().manual_seed(7))
            for fn in (generate, recompute_generate)]
    torch.testing.assert_close(runs[0].bars, runs[1], rtol=1e-5, atol=1e-5)
    assert runs[0].s1.unique().numel() > 2  # really sampled, not collapsed to one token


@torch.inference_mode()
def test_fast_mode_recomputes_exactly_its_own_shorter_window(pair):
    _, model = pair
    ctx_len, pred_len, max_context, k = 10, 14, 16, 4
    s1, s2, stamps = _token_stream(2, 2, ctx_len, pred_len, seed=3)
    exact = _drive(model, s1, s2, stamps, samples=2, ctx_len=ctx_len, max_context=max_context)
    fast = _drive(model, s1, s2, stamps, samples=2, ctx_len=ctx_len, max_context=max_context,
                  slide_block=k)
    lengths = [ctx_len + i - start for i, start in enumerate(fast[2])]
    slid = lengths[max_context - ctx_len + 1:]  # windows after the first slide
    assert max(slid) == max_context and min(slid) == max_context - k + 1
    assert fast[2] == [0] * 7 + [4] * 4 + [8] * 3  # one re-prefill every k bars
    want_s1, want_s2 = _window_logits(model, s1, s2, stamps, samples=2, ctx_len=ctx_len,
                                      starts=fast[2])
    torch.testing.assert_close(fast[0], want_s1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast[1], want_s2, rtol=1e-5, atol=1e-5)
    # Identical to exact mode until the window first fills, different from then on.
    full = max_context - ctx_len + 1  # bars predicted from windows that never slid
    torch.testing.assert_close(fast[0][:, :full], exact[0][:, :full], rtol=0, atol=0)
    assert (fast[0][:, full:] - exact[0][:, full:]).abs().amax() > 1e-3


def test_fast_mode_shape_determinism_and_agreement_before_the_slide(pair):
    tok, model = pair
    x, xs, ys = random_inputs(3, 12, 10, seed=2)
    sampling = SamplingParams(sample_count=5)

    def run(slide_block, seed=11, pred_len=10):
        return generate(model, tok, x, xs, ys[:, :pred_len], pred_len=pred_len, max_context=16,
                        sampling=sampling, generator=torch.Generator().manual_seed(seed),
                        slide_block=slide_block)

    a, b, exact = run(6), run(6), run(1)
    assert a.bars.shape == (3, 5, 10, 6) and torch.isfinite(a.bars).all()
    assert torch.equal(a.bars, b.bars) and torch.equal(a.s1, b.s1)
    assert not torch.equal(run(6, seed=12).s1, a.s1)
    # Bars 0-4 come from windows of at most 16 bars: same logits, same draws.
    assert torch.equal(a.s1[..., :5], exact.s1[..., :5])
    assert torch.equal(a.s2[..., :5], exact.s2[..., :5])
    assert not torch.equal(a.s1, exact.s1)
    # No slide at all (12 + 4 ≤ 16): fast and exact mode are the same computation.
    assert torch.equal(run(6, pred_len=4).bars, run(1, pred_len=4).bars)


def test_batched_series_equal_each_series_alone(pair):
    tok, model = pair
    x, xs, ys = random_inputs(3, 14, 6, seed=4)
    sampling = SamplingParams(sample_count=4)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = generate(model, tok, x, xs, ys, pred_len=6, max_context=16, sampling=sampling,
                     generator=gens([1, 2, 3]))
    for b, seed in enumerate([1, 2, 3]):
        alone = generate(model, tok, x[b:b + 1], xs[b:b + 1], ys[b:b + 1], pred_len=6,
                         max_context=16, sampling=sampling, generator=gens([seed]))
        torch.testing.assert_close(batch.bars[b], alone.bars[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(batch.s1[b], alone.s1[0])
    greedy = SamplingParams(top_k=1, sample_count=2)
    both = generate(model, tok, x, xs, ys, pred_len=6, max_context=16, sampling=greedy)
    one = generate(model, tok, x[2:], xs[2:], ys[2:], pred_len=6, max_context=16, sampling=greedy)
    torch.testing.assert_close(both.bars[2], one.bars[0], rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_caches_are_preallocated_and_written_in_place(pair):
    _, model = pair
    ctx_len, pred_len, max_context = 12, 10, 16
    s1, s2, stamps = _token_stream(2, 3, ctx_len, pred_len, seed=5)
    dec = Decoder(model, s1[::3, :ctx_len], s2[::3, :ctx_len], stamps, samples=3,
                  pred_len=pred_len, max_context=max_context, dtype=torch.float32)
    caches = (dec.ctx, dec.gen, dec.dep_ctx, dec.dep_gen)
    before = [(c.k.data_ptr(), c.v.data_ptr(), c.k.shape) for c in caches]
    assert dec.ctx.capacity == 12 and dec.gen.capacity == 10  # context / generated parts
    assert dec.gen.k.shape[1] == 6 and dec.ctx.k.shape[1] == 2  # paths vs series rows
    dec.prefill(0)
    for i in range(pred_len - 1):  # 5 plain steps, then 4 sliding re-prefills
        bar = slice(ctx_len + i, ctx_len + i + 1)
        dec.append(s1[:, bar], s2[:, bar], 1)
        assert [(c.k.data_ptr(), c.v.data_ptr(), c.k.shape) for c in caches] == before
    assert dec.window_start == ctx_len + pred_len - 1 - max_context


# One query (decode step), a few queries over a long prefix (grouped math path, causal among
# the own keys), many queries (fused kernel over copied keys), and an empty own part. Under
# inference mode a re-prefill of the own keys (q_len == own) takes the two-flash-call path.
@pytest.mark.parametrize("inference", [False, True])
@pytest.mark.parametrize("groups, per, q_len, s_len, own", [
    (2, 3, 1, 7, 4), (1, 4, 1, 5, 1), (1, 3, 4, 64, 6), (2, 2, 2, 24, 9), (2, 2, 5, 6, 5),
    (3, 1, 3, 4, 8), (2, 3, 9, 40, 9), (1, 2, 30, 8, 30)])
def test_shared_prefix_attention_equals_sdpa_over_copied_keys(groups, per, q_len, s_len, own,
                                                              inference):
    gen = torch.Generator().manual_seed(0)
    rows, heads, hd = groups * per, 2, 8
    q = torch.randn(rows, heads, q_len, hd, generator=gen)
    k, v = torch.randn(2, rows, heads, own, hd, generator=gen)
    ks, vs = torch.randn(2, groups, heads, s_len, hd, generator=gen)
    with torch.inference_mode(inference):
        got = shared_prefix_attention(q, k, v, ks, vs, start=own - q_len)
    full_k = torch.cat([ks.repeat_interleave(per, 0), k], dim=2)
    full_v = torch.cat([vs.repeat_interleave(per, 0), v], dim=2)
    n_keys = s_len + own
    keep = torch.arange(n_keys)[None, :] <= torch.arange(n_keys - q_len, n_keys)[:, None]
    want = F.scaled_dot_product_attention(q, full_k, full_v, attn_mask=keep)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@torch.inference_mode()
def test_decode_paths_equals_decoding_each_full_window(pair):
    tok, _ = pair
    s1, s2, _ = _token_stream(2, 3, 9, 5, seed=6)
    for max_context in (20, 11, 5):
        got = decode_paths(tok, s1[::3, :9], s2[::3, :9], s1[:, 9:], s2[:, 9:],
                           max_context=max_context)
        start = max(0, 14 - max_context)
        want = tok.decode((s1[:, start:], s2[:, start:]), half=True)[:, -5:]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pred_len=0), "pred_len"), (dict(pred_len=17), "pred_len"),
    (dict(pred_len=2.5), "pred_len"), (dict(slide_block=0), "slide_block"),
    (dict(slide_block=17), "slide_block"), (dict(slide_block=1.5), "slide_block"),
    (dict(max_context=0), "max_context"),
])
def test_bad_lengths_raise_one_clear_error(pair, kwargs, message):
    tok, model = pair
    x, xs, ys = random_inputs(1, 8, 4)
    args = dict(pred_len=4, max_context=16) | kwargs
    with pytest.raises((ValueError, TypeError), match=message):
        generate(model, tok, x, xs, ys, **args)


def test_mismatched_input_shapes_are_named(pair):
    tok, model = pair
    x, xs, ys = random_inputs(2, 8, 4)
    with pytest.raises(ValueError, match="y_stamp"):
        generate(model, tok, x, xs, ys[:, :3], pred_len=4, max_context=16)
    with pytest.raises(ValueError, match="x_stamp"):
        generate(model, tok, x, xs[:1], ys, pred_len=4, max_context=16)


def test_bf16_autocast_path_runs_on_cpu(pair):
    tok, model = pair
    x, xs, ys = random_inputs(2, 12, 8)
    kwargs = dict(pred_len=8, max_context=16, sampling=SamplingParams(sample_count=3),
                  amp_dtype=torch.bfloat16)
    a = generate(model, tok, x, xs, ys, generator=torch.Generator().manual_seed(0), **kwargs)
    b = generate(model, tok, x, xs, ys, generator=torch.Generator().manual_seed(0), **kwargs)
    assert a.bars.dtype == torch.float32 and a.bars.shape == (2, 3, 8, 6)
    assert torch.isfinite(a.bars).all() and torch.equal(a.bars, b.bars)



def test_rotary_roll_form_equals_rotate_half_bit_for_bit():
    """apply_rotary uses a roll and a sign-folded sine table; it must equal the checkpoints'
    rotate-half formula exactly (training numbers depend on it)."""
    x = torch.randn(2, 3, 7, 16, generator=torch.Generator().manual_seed(0))
    rot = RotaryEmbedding(16)
    cos, sin = rot.cos_sin(7, x.device)
    emb = torch.outer(torch.arange(7.0), rot.inv_freq)  # (7, 8)
    plain_cos, plain_sin = torch.cat([emb, emb], -1).cos(), torch.cat([emb, emb], -1).sin()
    x1, x2 = x.chunk(2, dim=-1)
    want = x * plain_cos + torch.cat((-x2, x1), dim=-1) * plain_sin
    assert torch.equal(cos, plain_cos)
    assert torch.equal(apply_rotary(x, cos, sin), want)

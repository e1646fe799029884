"""Tokenizer invariants: bit order, half split, causality, training loss."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kronos_quant.testing import tiny_pair


def _x(b=3, length=10, seed=0):
    return torch.randn(b, length, 6, generator=torch.Generator().manual_seed(seed))


def test_indices_are_lsb_first_signs_of_the_normalised_latent():
    tok, _ = tiny_pair(0)
    x = _x()
    z = F.normalize(tok._encode_latent(x), dim=-1)  # (B, L, D)
    s1, s2 = tok.encode(x, half=True)
    positive = (z > 0).long()
    want_s1 = sum(positive[..., j] << j for j in range(tok.s1_bits))
    want_s2 = sum(positive[..., tok.s1_bits + j] << j for j in range(tok.s2_bits))
    assert torch.equal(s1, want_s1) and torch.equal(s2, want_s2)


def test_half_split_matches_the_full_index():
    tok, _ = tiny_pair(0)
    x = _x(seed=1)
    s1, s2 = tok.encode(x, half=True)
    full = tok.encode(x, half=False)
    assert torch.equal(full, s1 + (s2 << tok.s1_bits))
    assert torch.equal(tok.indices_to_bits((s1, s2), half=True), tok.indices_to_bits(full))


def test_bits_are_scaled_signs_and_decode_uses_them():
    tok, _ = tiny_pair(0)
    s1 = torch.tensor([[0, 5]])
    s2 = torch.tensor([[7, 2]])
    bits = tok.indices_to_bits((s1, s2), half=True)
    scale = 1 / math.sqrt(tok.codebook_dim)
    # s1=5 → bits 1,0,1 (LSB first); s2=2 → 0,1,0
    assert torch.allclose(bits[0, 1], torch.tensor([1, -1, 1, -1, 1, -1]) * scale)
    assert torch.allclose(bits[0, 0, :3], -torch.ones(3) * scale)
    by_hand = tok.head(torch.nn.Sequential(*tok.decoder)(tok.post_quant_embed(bits)))
    assert torch.allclose(tok.decode((s1, s2), half=True), by_hand, atol=1e-6)


def test_encoder_and_decoder_are_causal():
    tok, _ = tiny_pair(0)
    x = _x(b=1, length=12, seed=2)
    y = x.clone()
    y[:, 8:] += 3.0
    a, b = tok.encode(x, half=True), tok.encode(y, half=True)
    assert torch.equal(a[0][:, :8], b[0][:, :8]) and torch.equal(a[1][:, :8], b[1][:, :8])
    da, db = tok.decode(a, half=True), tok.decode(b, half=True)
    assert torch.equal(da[:, :8], db[:, :8])


def test_training_forward_and_loss():
    tok, _ = tiny_pair(0)  # no dropout: train mode is deterministic
    tok.train()
    x = _x(seed=3)
    outputs = tok(x)
    (z_pre, z), bsq_loss, quantized, indices = outputs
    assert z_pre.shape == z.shape == x.shape
    assert quantized.shape == (3, 10, tok.codebook_dim)
    assert torch.equal(indices, tok.encode(x))
    # Every output rebuilt from the parts: z_pre from the s1 bits alone, z from the full code.
    with torch.no_grad():
        latent = F.normalize(tok._encode_latent(x), dim=-1)  # (B, L, D)
        codes = torch.where(latent > 0, 1.0, -1.0) / math.sqrt(tok.codebook_dim)
        decoder = torch.nn.Sequential(*tok.decoder)
        want_pre = tok.head(decoder(tok.post_quant_embed_pre(codes[..., :tok.s1_bits])))
        want_z = tok.head(decoder(tok.post_quant_embed(codes)))
        want_bsq = tok.tokenizer.bsq.loss(latent, codes)
    assert torch.allclose(quantized, codes)
    # atol: the straight-through codes differ from exact ±1/sqrt(D) by float rounding.
    assert torch.allclose(z_pre, want_pre, atol=1e-5) and torch.allclose(z, want_z, atol=1e-5)
    assert not torch.allclose(z_pre, z, atol=1e-3)
    assert torch.allclose(bsq_loss, want_bsq, atol=1e-6)
    loss = tok.reconstruction_loss(x, outputs)
    want = (F.mse_loss(want_pre, x) + F.mse_loss(want_z, x) + want_bsq) / 2
    assert torch.allclose(loss, want, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert tok.embed.weight.grad is not None and tok.embed.weight.grad.abs().sum() > 0


def test_bsq_loss_terms():
    tok, _ = tiny_pair(0)
    bsq = tok.tokenizer.bsq
    z = F.normalize(torch.randn(4, 5, bsq.embed_dim, generator=torch.Generator().manual_seed(4)),
                    dim=-1)
    zq = bsq.quantize(z)
    d = bsq.embed_dim
    commit = bsq.beta * ((zq - z) ** 2).sum(-1).mean()
    p = torch.sigmoid(-4 * z / math.sqrt(d))
    h = -(p * torch.log(p + 1e-8) + (1 - p) * torch.log(1 - p + 1e-8))
    per_sample = h.sum(-1).mean()
    pm = p.reshape(-1, d).mean(0)
    codebook = -(pm * torch.log(pm + 1e-8) + (1 - pm) * torch.log(1 - pm + 1e-8)).sum()
    want = commit + bsq.zeta * (bsq.gamma0 * per_sample - bsq.gamma * codebook)
    assert torch.allclose(bsq.loss(z, zq), want, atol=1e-6)
    assert torch.allclose(zq.abs(), torch.full_like(zq, 1 / math.sqrt(d)))

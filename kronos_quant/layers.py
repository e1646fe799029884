"""Transformer building blocks shared by the tokenizer and the predictor.

Parameter and buffer names follow the published Kronos checkpoints exactly (see the
compatibility spec): renaming anything here breaks strict loading.

Attention supports two call patterns:

* full-window: ``attn(x)`` with causal masking, rotary positions ``0 … L-1``;
* cached: ``attn(x, cache=kv, start=p)`` writes this call's keys/values into the
  preallocated buffers of ``kv`` at positions ``p … p+L-1`` and attends over ``0 … p+L-1``.
  Rotating keys once, when they are written, is what makes the cache valid: RoPE depends
  only on a token's position inside the current window.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (bf16 inputs would lose the mean)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU feed-forward: w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, d_model: int, ff_dim: int, dropout_p: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(d_model, ff_dim, bias=False)
        self.w3 = nn.Linear(d_model, ff_dim, bias=False)
        self.w2 = nn.Linear(ff_dim, d_model, bias=False)
        self.ffn_dropout = nn.Dropout(dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class RotaryEmbedding(nn.Module):
    """Rotary position table, "rotate half" layout, base 10000 over ``head_dim``."""

    def __init__(self, head_dim: int):
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq)  # saved in checkpoints
        self._table: tuple[int, torch.device, torch.Tensor, torch.Tensor] | None = None

    def cos_sin(self, end: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos/sin for positions ``0 … end-1``, each (end, head_dim); grown and reused."""
        if self._table is None or self._table[0] < end or self._table[1] != device:
            n = max(end, 64 if self._table is None else 2 * self._table[0])
            t = torch.arange(n, device=device, dtype=self.inv_freq.dtype)
            freqs = torch.outer(t, self.inv_freq.to(device))  # (n, hd/2)
            emb = torch.cat((freqs, freqs), dim=-1)  # (n, hd)
            # The sine's first half negated: rotate-half becomes a roll (see apply_rotary).
            sin = emb.sin() * torch.cat((-torch.ones_like(freqs), torch.ones_like(freqs)), -1)
            self._table = (n, device, emb.cos(), sin)
        return self._table[2][:end], self._table[3][:end]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, H, L, hd) by per-position ``cos`` and sign-folded ``sin`` (L, hd).

    ``sin`` is :meth:`RotaryEmbedding.cos_sin`'s, whose first half is negated, so that
    ``cat(-x2, x1) * sin_table`` equals ``roll(x) * sin``: bit for bit (a sign flip is
    exact) with two kernels fewer.
    """
    return x * cos.to(x.dtype) + x.roll(x.shape[-1] // 2, dims=-1) * sin.to(x.dtype)


@dataclass
class KVCache:
    """Preallocated keys/values for a stack of attention layers.

    ``k`` and ``v`` are (n_layers, B, H, max_len, hd); slots ``0 … length-1`` are valid.
    Writing is in place, so a decode step allocates nothing that grows with the window.

    ``prefix`` optionally holds keys/values that come *before* slot 0 in every row's window
    and are shared by each group of ``B // prefix.batch`` consecutive rows (series-major: the
    sample paths of one series share its context). Window position ``p`` then lives in slot
    ``p - prefix.length``; the shared part is never copied per row.
    """

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0
    prefix: KVCache | None = None

    @classmethod
    def empty(cls, n_layers: int, batch: int, n_heads: int, max_len: int, head_dim: int,
              *, device: torch.device | str, dtype: torch.dtype,
              prefix: KVCache | None = None) -> KVCache:
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        if prefix is not None and batch % prefix.batch:
            raise ValueError(f"{batch} rows cannot share a prefix of {prefix.batch} rows")
        return cls(torch.empty(shape, device=device, dtype=dtype),
                   torch.empty(shape, device=device, dtype=dtype), prefix=prefix)

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def offset(self) -> int:
        """Window position of slot 0 (the shared prefix's length)."""
        return 0 if self.prefix is None else self.prefix.length


def _prepend_shared(shared: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Group-shared (G, H, Ls, hd) then per-row (R, H, Lo, hd) keys → (R, H, Ls+Lo, hd)."""
    groups, heads, s_len, hd = shared.shape
    rows = own.shape[0]
    out = own.new_empty(rows, heads, s_len + own.shape[2], hd)
    out[:, :, :s_len].view(groups, rows // groups, heads, s_len, hd).copy_(shared[:, None])
    out[:, :, s_len:] = own
    return out


# A private ATen op (the kernel behind CPU SDPA) that also returns the log-sum-exp; if a torch
# release renames it, re-prefills fall back to the fused SDPA path below (same numbers).
_HAS_CPU_FLASH = hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


def _flash_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                    causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU flash attention (B, H, Lq, hd) that also returns the rows' log-sum-exp (B, H, Lq)."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal)
    return out, lse


def _split_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_shared: torch.Tensor,
                     v_shared: torch.Tensor) -> torch.Tensor:
    """:func:`shared_prefix_attention` as two flash-attention calls merged by their
    log-sum-exps: the prefix attended once per group with every row's queries stacked (no
    mask, no per-row copy), the own keys causally; the queries sit at own slots
    ``0 … Lq-1`` (``Lq == Lo``, a re-prefill)."""
    rows, heads, q_len, hd = q.shape
    groups = k_shared.shape[0]
    per = rows // groups
    qg = q.view(groups, per, heads, q_len, hd).transpose(1, 2).reshape(groups, heads, -1, hd)
    o_shared, lse_shared = _flash_with_lse(qg, k_shared, v_shared, causal=False)  # (G, H, S·Lq, ·)
    o_shared = o_shared.view(groups, heads, per, q_len, hd).transpose(1, 2)  # (G, S, H, Lq, hd)
    lse_shared = lse_shared.view(groups, heads, per, q_len).transpose(1, 2)  # (G, S, H, Lq)
    o_own, lse_own = _flash_with_lse(q, k, v, causal=True)  # (R, H, Lq, hd), (R, H, Lq)
    lse_shared = lse_shared.reshape(rows, heads, q_len)
    top = torch.maximum(lse_shared, lse_own)
    w_shared, w_own = (lse_shared - top).exp_(), (lse_own - top).exp_()  # (R, H, Lq)
    total = w_shared + w_own
    out = o_shared.reshape(rows, heads, q_len, hd) * (w_shared / total)[..., None]
    return out.add_(o_own * (w_own / total)[..., None])  # (R, H, Lq, hd)


def shared_prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            k_shared: torch.Tensor, v_shared: torch.Tensor, *,
                            start: int) -> torch.Tensor:
    """Causal attention over a key prefix shared by groups of rows, then each row's own keys.

    ``q`` (R, H, Lq, hd) sits at own slots ``start … start+Lq-1``; ``k``/``v`` (R, H, Lo, hd)
    are the rows' own keys; ``k_shared``/``v_shared`` (G, H, Ls, hd) precede them and are shared
    by R/G consecutive rows (series-major). Every query sees the whole prefix. Equal to SDPA
    over the concatenated keys up to float rounding.

    One query per row (decode steps): the prefix is read in place, once per group, and its
    scores are one matrix product per group. A re-prefill of the rows' own keys on CPU
    (queries at own slots 0 …, as many as own keys): two flash-attention calls, see
    :func:`_split_attention`. Otherwise many queries: the fused SDPA kernel over keys copied
    per row is faster than the unfused softmax here.
    """
    rows, heads, q_len, hd = q.shape
    groups, s_len = k_shared.shape[0], k_shared.shape[2]
    if (_HAS_CPU_FLASH and q_len > 1 and start == 0 and q_len == k.shape[2]
            and q.device.type == "cpu"
            and not torch.is_grad_enabled() and q.dtype == k.dtype == k_shared.dtype):
        return _split_attention(q, k, v, k_shared, v_shared)
    if q_len > max(1, s_len // 8):  # crossover measured on CPU at Ls ≈ 400-500
        return attention(q, _prepend_shared(k_shared, k), _prepend_shared(v_shared, v),
                         causal=True, start=s_len + start)
    per, o_len = rows // groups, k.shape[2]
    q = q * hd ** -0.5
    qg = q.view(groups, per, heads, q_len, hd).transpose(1, 2)  # (G, H, S, Lq, hd)
    # (G, H, S·Lq, Ls): one product per group and head reads the prefix once for all rows
    s_shared = qg.reshape(groups, heads, per * q_len, hd) @ k_shared.transpose(-1, -2)
    s_own = (q @ k.transpose(-1, -2)).view(groups, per, heads, q_len, o_len)  # (G, S, H, Lq, Lo)
    s_own = s_own.transpose(1, 2)  # (G, H, S, Lq, Lo)
    if q_len > 1:  # causal among the own keys
        q_pos = torch.arange(start, start + q_len, device=q.device)[:, None]
        s_own = s_own.masked_fill(torch.arange(o_len, device=q.device) > q_pos, float("-inf"))
    scores = [s_shared.view(groups, heads, per, q_len, s_len), s_own]
    probs = torch.cat(scores, dim=-1).softmax(dim=-1)  # (G, H, S, Lq, Ls+Lo)
    out = probs[..., :s_len].reshape(groups, heads, per * q_len, s_len) @ v_shared
    out = out.view(groups, heads, per, q_len, hd).transpose(1, 2).reshape(rows, heads, q_len, hd)
    p_own = probs[..., s_len:].transpose(1, 2).reshape(rows, heads, q_len, o_len)
    return out + p_own @ v  # (R, H, Lq, hd)


def masked_prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            k_shared: torch.Tensor, v_shared: torch.Tensor, *,
                            keep: torch.Tensor, keep_shared: torch.Tensor) -> torch.Tensor:
    """:func:`shared_prefix_attention` for one query per row over fixed-capacity buffers.

    ``k``/``v`` (R, H, Co, hd) and ``k_shared``/``v_shared`` (G, H, Cs, hd) are whole cache
    buffers; ``keep`` (Co,) and ``keep_shared`` (Cs,) mark their filled slots. Shapes never
    depend on how much is filled, so a CUDA graph captured once serves every bar. Unfilled
    slots must hold finite values (a masked score is dropped, but 0 × NaN in the value
    product would not be).
    """
    rows, heads, _, hd = q.shape
    groups, s_cap, o_cap = k_shared.shape[0], k_shared.shape[2], k.shape[2]
    per = rows // groups
    q = q * hd ** -0.5
    qg = q.view(groups, per, heads, hd).transpose(1, 2)  # (G, H, S, hd)
    s_shared = (qg @ k_shared.transpose(-1, -2)).masked_fill(~keep_shared, float("-inf"))
    s_own = (q @ k.transpose(-1, -2)).view(groups, per, heads, o_cap).transpose(1, 2)
    s_own = s_own.masked_fill(~keep, float("-inf"))  # (G, H, S, Co)
    probs = torch.cat([s_shared, s_own], dim=-1).softmax(dim=-1)  # (G, H, S, Cs+Co)
    out = (probs[..., :s_cap] @ v_shared).transpose(1, 2).reshape(rows, heads, 1, hd)
    p_own = probs[..., s_cap:].transpose(1, 2).reshape(rows, heads, 1, o_cap)
    return out + p_own @ v  # (R, H, 1, hd)


@dataclass
class StaticKV:
    """Fixed-shape cache view for a one-token step whose position lives in a tensor.

    ``k``/``v`` (n_layers, R, H, Co, hd) are the rows' own slots, ``prefix_k``/``prefix_v``
    (n_layers, G, H, Cs, hd) the group-shared part before them (the series' context).
    ``pos`` (1,) is the token's window position (rotary), ``slot`` (1,) its own slot, and
    ``keep``/``keep_prefix`` the filled slots including this token. Set them in place
    before each step: nothing here is a Python number, so a captured graph stays valid.
    """

    k: torch.Tensor
    v: torch.Tensor
    prefix_k: torch.Tensor
    prefix_v: torch.Tensor
    pos: torch.Tensor
    slot: torch.Tensor
    keep: torch.Tensor
    keep_prefix: torch.Tensor
    positions: int  # rotary table length needed: the longest window
    offset: int = 0  # run_blocks' bookkeeping: no Python-side lengths here
    length: int = 0

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int) -> torch.Tensor:
        """Write this step's rotated ``k``/``v`` (R, H, 1, hd) at ``slot`` and attend."""
        self.k[layer].index_copy_(2, self.slot, k)
        self.v[layer].index_copy_(2, self.slot, v)
        return masked_prefix_attention(q, self.k[layer], self.v[layer], self.prefix_k[layer],
                                       self.prefix_v[layer], keep=self.keep,
                                       keep_shared=self.keep_prefix)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, start: int = 0,
              key_padding_mask: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """SDPA for queries at positions ``start … start+Lq-1`` over keys ``0 … Lk-1``.

    ``key_padding_mask`` (B, Lk) marks padding with True; padded keys are never attended.
    Uses the fused ``is_causal`` path whenever no explicit mask is needed.
    """
    q_len, k_len = q.shape[2], k.shape[2]
    if key_padding_mask is None:
        if not causal or q_len == 1:  # one query at the newest position sees every key
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        if start == 0 and q_len == k_len:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    keep = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device)
    if causal:
        q_pos = torch.arange(start, start + q_len, device=q.device)[:, None]
        keep = torch.arange(k_len, device=q.device)[None, :] <= q_pos  # (Lq, Lk)
    if key_padding_mask is not None:
        keep = keep[None, None] & ~key_padding_mask[:, None, None, :k_len].bool()  # (B, 1, Lq, Lk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)


def cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache, *,
                     layer: int, start: int,
                     key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Write this call's rotated ``k``/``v`` (B, H, L, hd) for window positions ``start …``
    into ``cache`` layer ``layer`` and attend causally over everything cached before them."""
    length = q.shape[2]
    slot = start - cache.offset  # the shared prefix occupies no slots of its own
    cache.k[layer, :, :, slot:slot + length] = k
    cache.v[layer, :, :, slot:slot + length] = v
    k = cache.k[layer, :, :, :slot + length]  # (B, H, slot+L, hd)
    v = cache.v[layer, :, :, :slot + length]
    if not cache.offset:
        return attention(q, k, v, causal=True, start=slot, key_padding_mask=key_padding_mask)
    if key_padding_mask is not None:
        raise ValueError("key_padding_mask is not supported with a shared prefix")
    pre, n = cache.prefix, cache.offset
    return shared_prefix_attention(q, k, v, pre.k[layer, :, :, :n], pre.v[layer, :, :, :n],
                                   start=slot)


class _Projections(nn.Module):
    """q/k/v/out projections, rotary table and dropouts shared by both attention kinds."""

    def __init__(self, d_model: int, n_heads: int, attn_dropout_p: float = 0.0,
                 resid_dropout_p: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(self.head_dim)
        self.attn_dropout_p = attn_dropout_p
        self.resid_dropout = nn.Dropout(resid_dropout_p)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, length, _ = t.shape
        return t.view(b, length, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)


class MultiHeadAttention(_Projections):
    """Causal self-attention with rotary q/k (parameter names as in the checkpoints)."""

    def forward(self, x: torch.Tensor, *, cache: KVCache | StaticKV | None = None,
                layer: int = 0, start: int = 0,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, length, _ = x.shape
        q, k, v = (self._heads(self.q_proj(x)), self._heads(self.k_proj(x)),
                   self._heads(self.v_proj(x)))
        if isinstance(cache, StaticKV):  # position from a tensor: no host sync, graph-safe
            cos, sin = self.rotary.cos_sin(cache.positions, x.device)
            cos, sin = cos.index_select(0, cache.pos), sin.index_select(0, cache.pos)  # (1, hd)
        else:
            cos, sin = self.rotary.cos_sin(start + length, x.device)
            cos, sin = cos[start:], sin[start:]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # (B, H, L, hd)
        if isinstance(cache, StaticKV):
            out = cache.attend(q, k, v, layer)
        elif cache is not None:
            out = cached_attention(q, k, v, cache, layer=layer, start=start,
                                   key_padding_mask=key_padding_mask)
        elif start:
            raise ValueError("start > 0 needs a cache holding the earlier positions")
        else:
            dropout = self.attn_dropout_p if self.training else 0.0
            out = attention(q, k, v, causal=True, key_padding_mask=key_padding_mask,
                            dropout_p=dropout)  # (B, H, L, hd)
        out = out.transpose(1, 2).reshape(b, length, self.d_model)
        return self.resid_dropout(self.out_proj(out))


class CrossAttention(_Projections):
    """Attention from sibling (s1) embeddings to the predictor's hidden states.

    Rotary positions follow the query length, as the checkpoints were trained: with one query
    the table has length 1, so neither q nor k is rotated.
    """

    def project_kv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unrotated keys/values of hidden states ``h`` (B, L, d) → each (B, H, L, hd)."""
        return self._heads(self.k_proj(h)), self._heads(self.v_proj(h))

    def attend_one(self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   shared: tuple[torch.Tensor, torch.Tensor] | None = None,
                   keep: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One query per row (B, 1, d) over unrotated ``k``/``v`` (B, H, L, hd) → (B, 1, d).

        ``shared`` optionally holds (k, v) (G, H, Ls, hd) that precede ``k``/``v`` and are
        shared by groups of B/G consecutive rows (see :func:`shared_prefix_attention`).
        ``keep`` = (own, shared) filled-slot masks makes ``k``/``v``/``shared`` whole
        fixed-capacity buffers (:func:`masked_prefix_attention`; the static decode step).
        """
        q = self._heads(self.q_proj(query))  # (B, H, 1, hd)
        if keep is not None and shared is not None:
            out = masked_prefix_attention(q, k, v, *shared, keep=keep[0], keep_shared=keep[1])
        elif shared is not None and shared[0].shape[2]:
            out = shared_prefix_attention(q, k, v, *shared, start=k.shape[2] - 1)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, H, 1, hd)
        return self.out_proj(out.transpose(1, 2).reshape(query.shape[0], 1, self.d_model))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, q_len, _ = query.shape
        q = self._heads(self.q_proj(query))
        k, v = self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        if k.shape[2] != q_len and q_len != 1:
            raise ValueError(f"cross-attention needs one query or as many queries as keys, "
                             f"got {q_len} queries for {k.shape[2]} keys")
        # The rotary table has the query's length and broadcasts over the keys (a quirk the
        # checkpoints were trained with): one query means no rotation at all.
        cos, sin = self.rotary.cos_sin(q_len, query.device)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout = self.attn_dropout_p if self.training else 0.0
        # Causal while training, full attention in evaluation, as the checkpoints were built.
        out = attention(q, k, v, causal=self.training, key_padding_mask=key_padding_mask,
                        dropout_p=dropout)
        out = out.transpose(1, 2).reshape(b, q_len, self.d_model)
        return self.resid_dropout(self.out_proj(out))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1 x), then x + ffn(norm2 x)."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, ffn_dropout_p: float = 0.0,
                 attn_dropout_p: float = 0.0, resid_dropout_p: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, attn_dropout_p, resid_dropout_p)
        self.norm2 = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ff_dim, ffn_dropout_p)

    def forward(self, x: torch.Tensor, *, cache: KVCache | StaticKV | None = None,
                layer: int = 0, start: int = 0,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), cache=cache, layer=layer, start=start,
                               key_padding_mask=key_padding_mask)
        return x + self.ffn(self.norm2(x))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, *,
               cache: KVCache | StaticKV | None = None,
               start: int = 0, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a stack of blocks to window positions ``start …``; with a cache, layer i uses
    cache layer i and the cache then holds everything up to the last of these positions."""
    for i, block in enumerate(blocks):
        x = block(x, cache=cache, layer=i, start=start, key_padding_mask=key_padding_mask)
    if cache is not None:
        cache.length = start - cache.offset + x.shape[1]
    return x

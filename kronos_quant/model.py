"""Kronos: decoder-only Transformer over hierarchical (s1, s2) candlestick tokens.

Each step predicts the coarse token s1 from the hidden state, then the fine token s2 from the
hidden states and the chosen s1 (a small cross-attention "dependency" layer).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import KronosConfig
from .hub import HubModelMixin
from .layers import CrossAttention, KVCache, RMSNorm, StaticKV, TransformerBlock, run_blocks

TIME_FEATURES = ("minute", "hour", "weekday", "day", "month")
_TIME_SIZES = (60, 24, 7, 32, 13)


class HierarchicalEmbedding(nn.Module):
    """fusion_proj(concat(emb_s1(s1)·sqrt(d), emb_s2(s2)·sqrt(d)))."""

    def __init__(self, s1_bits: int, s2_bits: int, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.emb_s1 = nn.Embedding(2 ** s1_bits, d_model)
        self.emb_s2 = nn.Embedding(2 ** s2_bits, d_model)
        self.fusion_proj = nn.Linear(2 * d_model, d_model)
        nn.init.normal_(self.emb_s1.weight, mean=0.0, std=d_model ** -0.5)
        nn.init.normal_(self.emb_s2.weight, mean=0.0, std=d_model ** -0.5)

    def forward(self, s1_ids: torch.Tensor, s2_ids: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(self.d_model)
        fused = torch.cat([self.emb_s1(s1_ids) * scale, self.emb_s2(s2_ids) * scale], dim=-1)
        return self.fusion_proj(fused)  # (B, L, d)


class FixedEmbedding(nn.Module):
    """Frozen sinusoidal lookup table (used when ``learn_te`` is false)."""

    def __init__(self, rows: int, d_model: int):
        super().__init__()
        pos = torch.arange(rows, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                        * -(math.log(10000.0) / d_model))
        table = torch.zeros(rows, d_model)
        table[:, 0::2] = torch.sin(pos * div)
        table[:, 1::2] = torch.cos(pos * div)
        self.emb = nn.Embedding(rows, d_model)
        self.emb.weight = nn.Parameter(table, requires_grad=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.emb(idx).detach()


class TemporalEmbedding(nn.Module):
    """Sum of minute, hour, weekday, day-of-month and month embeddings."""

    def __init__(self, d_model: int, learn_te: bool):
        super().__init__()
        make = nn.Embedding if learn_te else FixedEmbedding
        self.minute_embed = make(_TIME_SIZES[0], d_model)
        self.hour_embed = make(_TIME_SIZES[1], d_model)
        self.weekday_embed = make(_TIME_SIZES[2], d_model)
        self.day_embed = make(_TIME_SIZES[3], d_model)
        self.month_embed = make(_TIME_SIZES[4], d_model)

    def forward(self, stamp: torch.Tensor) -> torch.Tensor:
        """``stamp`` (B, L, 5) in TIME_FEATURES order → (B, L, d)."""
        s = stamp.long()
        # Summation order as in the checkpoints' code (float addition is not associative).
        return (self.hour_embed(s[..., 1]) + self.weekday_embed(s[..., 2])
                + self.day_embed(s[..., 3]) + self.month_embed(s[..., 4])
                + self.minute_embed(s[..., 0]))


class DependencyAwareLayer(nn.Module):
    """s2 context: norm(h + cross_attn(query=emb_s1(s1), keys/values=h)); always 4 heads."""

    def __init__(self, d_model: int, n_heads: int = 4):
        super().__init__()
        self.cross_attn = CrossAttention(d_model, n_heads)
        self.norm = RMSNorm(d_model)

    def forward(self, hidden: torch.Tensor, sibling: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        attn = self.cross_attn(sibling, hidden, hidden, key_padding_mask=key_padding_mask)
        return self.norm(hidden + attn)  # one query row broadcasts over all positions


class DualHead(nn.Module):
    """Linear heads for the s1 and s2 vocabularies."""

    def __init__(self, s1_bits: int, s2_bits: int, d_model: int):
        super().__init__()
        self.vocab_s1, self.vocab_s2 = 2 ** s1_bits, 2 ** s2_bits
        self.proj_s1 = nn.Linear(d_model, self.vocab_s1)
        self.proj_s2 = nn.Linear(d_model, self.vocab_s2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_s1(x)

    def cond_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_s2(x)

    def compute_loss(self, s1_logits, s2_logits, s1_targets, s2_targets, padding_mask=None):
        """Mean of the s1 and s2 cross-entropies over non-padded positions."""
        if padding_mask is not None:
            valid = padding_mask == 0
            s1_logits, s2_logits = s1_logits[valid], s2_logits[valid]
            s1_targets, s2_targets = s1_targets[valid], s2_targets[valid]
        ce_s1 = F.cross_entropy(s1_logits.reshape(-1, self.vocab_s1), s1_targets.reshape(-1))
        ce_s2 = F.cross_entropy(s2_logits.reshape(-1, self.vocab_s2), s2_targets.reshape(-1))
        return (ce_s1 + ce_s2) / 2, ce_s1, ce_s2


class Kronos(nn.Module, HubModelMixin):
    """The Kronos predictor network (parameter names match the published checkpoints)."""

    config_class = KronosConfig

    def __init__(self, s1_bits: int, s2_bits: int, n_layers: int, d_model: int, n_heads: int,
                 ff_dim: int, ffn_dropout_p: float, attn_dropout_p: float,
                 resid_dropout_p: float, token_dropout_p: float, learn_te: bool):
        super().__init__()
        self.config = KronosConfig(
            s1_bits=s1_bits, s2_bits=s2_bits, n_layers=n_layers, d_model=d_model,
            n_heads=n_heads, ff_dim=ff_dim, ffn_dropout_p=ffn_dropout_p,
            attn_dropout_p=attn_dropout_p, resid_dropout_p=resid_dropout_p,
            token_dropout_p=token_dropout_p, learn_te=learn_te)
        self.s1_bits, self.s2_bits, self.d_model = s1_bits, s2_bits, d_model
        self.s1_vocab_size = 2 ** s1_bits
        self.embedding = HierarchicalEmbedding(s1_bits, s2_bits, d_model)
        self.time_emb = TemporalEmbedding(d_model, learn_te)
        self.token_drop = nn.Dropout(token_dropout_p)
        self.transformer = nn.ModuleList([
            TransformerBlock(d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p,
                             resid_dropout_p) for _ in range(n_layers)])
        self.norm = RMSNorm(d_model)
        self.dep_layer = DependencyAwareLayer(d_model)
        self.head = DualHead(s1_bits, s2_bits, d_model)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and module.weight.requires_grad:
            nn.init.normal_(module.weight, mean=0.0, std=self.d_model ** -0.5)

    @property
    def n_heads(self) -> int:
        return self.config.n_heads

    def hidden(self, s1_ids: torch.Tensor, s2_ids: torch.Tensor,
               stamp: torch.Tensor | None = None, *, cache: KVCache | StaticKV | None = None,
               start: int = 0, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised hidden states (B, L, d) for tokens at window positions start … start+L-1."""
        x = self.embedding(s1_ids, s2_ids)  # (B, L, d)
        if stamp is not None:
            x = x + self.time_emb(stamp)
        x = self.token_drop(x)
        x = run_blocks(self.transformer, x, cache=cache, start=start,
                       key_padding_mask=padding_mask)
        return self.norm(x)

    def decode_s1(self, s1_ids: torch.Tensor, s2_ids: torch.Tensor,
                  stamp: torch.Tensor | None = None, padding_mask: torch.Tensor | None = None):
        """Full-window pass → (s1 logits (B, L, V1), hidden states (B, L, d))."""
        h = self.hidden(s1_ids, s2_ids, stamp, padding_mask=padding_mask)
        return self.head(h), h

    def decode_s2(self, context: torch.Tensor, s1_ids: torch.Tensor,
                  padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """s2 logits (B, L, V2) given hidden states and chosen s1 ids ((B, L) or (B, 1))."""
        sibling = self.embedding.emb_s1(s1_ids)
        return self.head.cond_forward(self.dep_layer(context, sibling, padding_mask))

    def forward(self, s1_ids: torch.Tensor, s2_ids: torch.Tensor,
                stamp: torch.Tensor | None = None, padding_mask: torch.Tensor | None = None,
                use_teacher_forcing: bool = False, s1_targets: torch.Tensor | None = None):
        """Training pass → (s1 logits, s2 logits), each (B, L, V).

        With ``use_teacher_forcing`` s2 is conditioned on ``s1_targets`` (the true next s1);
        otherwise on an s1 sampled from the model's own s1 distribution, as upstream trains.
        """
        h = self.hidden(s1_ids, s2_ids, stamp, padding_mask=padding_mask)
        s1_logits = self.head(h)
        if use_teacher_forcing:
            if s1_targets is None:
                raise ValueError("use_teacher_forcing=True needs s1_targets")
            sibling_ids = s1_targets
        else:
            probs = F.softmax(s1_logits.detach(), dim=-1)
            sibling_ids = torch.multinomial(probs.view(-1, self.s1_vocab_size), 1)
            sibling_ids = sibling_ids.view(s1_ids.shape)
        sibling = self.embedding.emb_s1(sibling_ids)
        s2_logits = self.head.cond_forward(self.dep_layer(h, sibling, padding_mask))
        return s1_logits, s2_logits

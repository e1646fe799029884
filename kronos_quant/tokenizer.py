"""KronosTokenizer: OHLCV bars ↔ hierarchical binary tokens (s1 coarse, s2 fine).

Binary spherical quantisation (BSQ, arXiv 2406.07548): the encoder output is projected to
``D = s1_bits + s2_bits`` dims, L2-normalised, and each dim is replaced by its sign / sqrt(D).
The first ``s1_bits`` signs form the coarse token, the rest the fine token, each read least
significant bit first.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import KronosTokenizerConfig
from .hub import HubModelMixin
from .layers import KVCache, TransformerBlock, run_blocks


def _entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return -(probs * torch.log(probs + 1e-8)).sum(dim=dim)


class BinarySphericalQuantizer(nn.Module):
    """Sign quantiser on the unit sphere with the BSQ commitment and entropy losses."""

    def __init__(self, embed_dim: int, beta: float, gamma0: float, gamma: float, zeta: float,
                 group_size: int):
        super().__init__()
        self.embed_dim, self.group_size = embed_dim, group_size
        self.beta, self.gamma0, self.gamma, self.zeta = beta, gamma0, gamma, zeta
        # Saved in checkpoints (most significant bit first), though decoding never reads them.
        self.register_buffer("basis", 2 ** torch.arange(embed_dim - 1, -1, -1))
        self.register_buffer("group_basis", 2 ** torch.arange(group_size - 1, -1, -1))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """±1/sqrt(D) codes with a straight-through gradient."""
        zhat = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        return (z + (zhat - z).detach()) * (1.0 / math.sqrt(self.embed_dim))

    def loss(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """beta·commitment + zeta·(gamma0·per-sample entropy − gamma·codebook entropy).

        Soft estimates as in the checkpoints' training code: a bit is 'on' with probability
        sigmoid(-4 z / sqrt(D)); the per-sample term is the bits' mean entropy, the codebook
        term the entropy of the batch-averaged bit probabilities, summed over dims.
        """
        commit = self.beta * ((zq.detach() - z) ** 2).sum(dim=-1).mean()
        p = torch.sigmoid(-4 * z / math.sqrt(self.embed_dim))
        probs = torch.stack([p, 1 - p], dim=-1)  # (..., D, 2)
        per_sample = _entropy(probs).sum(dim=-1).mean()
        avg = probs.reshape(-1, self.embed_dim, 2).mean(dim=0)  # (D, 2)
        codebook = _entropy(avg).sum()
        return commit + self.zeta * (self.gamma0 * per_sample - self.gamma * codebook)


class BSQuantizer(nn.Module):
    """Splits BSQ codes into the s1/s2 halves (module path kept for checkpoint key names)."""

    def __init__(self, s1_bits: int, s2_bits: int, beta: float, gamma0: float, gamma: float,
                 zeta: float, group_size: int):
        super().__init__()
        self.s1_bits, self.s2_bits = s1_bits, s2_bits
        self.bsq = BinarySphericalQuantizer(s1_bits + s2_bits, beta, gamma0, gamma, zeta,
                                            group_size)

    @staticmethod
    def bits_to_indices(bits: torch.Tensor) -> torch.Tensor:
        """Signs (..., n) → integers, dim j contributing 2^j when positive (LSB first)."""
        weights = 2 ** torch.arange(bits.shape[-1], device=bits.device, dtype=torch.long)
        return ((bits >= 0).long() * weights).sum(-1)

    def forward(self, z: torch.Tensor, *, half: bool = False, with_loss: bool = True):
        z = F.normalize(z, dim=-1)
        zq = self.bsq.quantize(z)
        loss = self.bsq.loss(z, zq) if with_loss else zq.new_zeros(())
        if half:
            indices = [self.bits_to_indices(zq[..., :self.s1_bits]),
                       self.bits_to_indices(zq[..., self.s1_bits:])]
        else:
            indices = self.bits_to_indices(zq)
        return loss, zq, indices


class KronosTokenizer(nn.Module, HubModelMixin):
    """Causal Transformer autoencoder with a BSQ bottleneck (names match the checkpoints)."""

    config_class = KronosTokenizerConfig

    def __init__(self, d_in: int, d_model: int, n_heads: int, ff_dim: int, n_enc_layers: int,
                 n_dec_layers: int, ffn_dropout_p: float, attn_dropout_p: float,
                 resid_dropout_p: float, s1_bits: int, s2_bits: int, beta: float, gamma0: float,
                 gamma: float, zeta: float, group_size: int):
        super().__init__()
        self.config = KronosTokenizerConfig(
            d_in=d_in, d_model=d_model, n_heads=n_heads, ff_dim=ff_dim,
            n_enc_layers=n_enc_layers, n_dec_layers=n_dec_layers, ffn_dropout_p=ffn_dropout_p,
            attn_dropout_p=attn_dropout_p, resid_dropout_p=resid_dropout_p, s1_bits=s1_bits,
            s2_bits=s2_bits, beta=beta, gamma0=gamma0, gamma=gamma, zeta=zeta,
            group_size=group_size)
        self.d_in, self.d_model = d_in, d_model
        self.s1_bits, self.s2_bits = s1_bits, s2_bits
        self.codebook_dim = s1_bits + s2_bits

        def block() -> TransformerBlock:
            return TransformerBlock(d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p,
                                    resid_dropout_p)

        self.embed = nn.Linear(d_in, d_model)
        self.head = nn.Linear(d_model, d_in)
        # The checkpoints hold one block fewer than the configured layer counts.
        self.encoder = nn.ModuleList([block() for _ in range(n_enc_layers - 1)])
        self.decoder = nn.ModuleList([block() for _ in range(n_dec_layers - 1)])
        self.quant_embed = nn.Linear(d_model, self.codebook_dim)
        self.post_quant_embed_pre = nn.Linear(s1_bits, d_model)
        self.post_quant_embed = nn.Linear(self.codebook_dim, d_model)
        self.tokenizer = BSQuantizer(s1_bits, s2_bits, beta, gamma0, gamma, zeta, group_size)

    @property
    def n_heads(self) -> int:
        return self.config.n_heads

    def _encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        z = run_blocks(self.encoder, self.embed(x))  # (B, L, d)
        return self.quant_embed(z)  # (B, L, D)

    def encode(self, x: torch.Tensor, half: bool = False):
        """Bars (B, L, d_in) → token ids: (s1, s2) each (B, L) if ``half`` else (B, L)."""
        _, _, indices = self.tokenizer(self._encode_latent(x), half=half, with_loss=False)
        return indices

    def indices_to_bits(self, indices, half: bool = False) -> torch.Tensor:
        """Token ids → ±1/sqrt(D) codes (B, L, D), LSB-first within each half."""
        if half:
            s1, s2 = indices
            parts = [(s1.unsqueeze(-1) >> torch.arange(self.s1_bits, device=s1.device)) & 1,
                     (s2.unsqueeze(-1) >> torch.arange(self.s2_bits, device=s2.device)) & 1]
            bits = torch.cat(parts, dim=-1)
        else:
            shifts = torch.arange(self.codebook_dim, device=indices.device)
            bits = (indices.unsqueeze(-1) >> shifts) & 1
        return (bits.float() * 2 - 1) * (1.0 / math.sqrt(self.codebook_dim))

    def decode(self, indices, half: bool = False, *, cache: KVCache | None = None,
               start: int = 0) -> torch.Tensor:
        """Token ids → reconstructed (normalised) bars (B, L, d_in).

        With ``cache``/``start`` the causal decoder continues from cached positions, so a
        context shared by many sample paths is decoded once.
        """
        z = self.post_quant_embed(self.indices_to_bits(indices, half))  # (B, L, d)
        return self.head(run_blocks(self.decoder, z, cache=cache, start=start))

    def forward(self, x: torch.Tensor):
        """Training pass → ((z_pre, z), bsq_loss, quantized, indices).

        ``z_pre`` reconstructs from the s1 bits alone, ``z`` from the full code.
        """
        bsq_loss, quantized, indices = self.tokenizer(self._encode_latent(x))
        z_pre = self.head(run_blocks(self.decoder,
                                     self.post_quant_embed_pre(quantized[..., :self.s1_bits])))
        z = self.head(run_blocks(self.decoder, self.post_quant_embed(quantized)))
        return (z_pre, z), bsq_loss, quantized, indices

    @staticmethod
    def reconstruction_loss(x: torch.Tensor, outputs) -> torch.Tensor:
        """(mse(z_pre, x) + mse(z, x) + bsq_loss) / 2, the checkpoints' training objective."""
        (z_pre, z), bsq_loss, _, _ = outputs
        return (F.mse_loss(z_pre, x) + F.mse_loss(z, x) + bsq_loss) / 2

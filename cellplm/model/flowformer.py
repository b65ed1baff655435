"""The encoder: pre-LayerNorm Flowformer layers with attention across the cells of a sentence.

Flow attention (Wu et al., ICML 2022, non-causal) is linear in the number of cells. Per head, with
Q = σ(x W_q), K = σ(x W_k), V = x W_v (σ the sigmoid; no 1/√d scaling) and ε = 1e-6:

    incoming  I_i = 1 / ((Q_i + ε) · (Σ_j K_j + ε))          outgoing  O_j = 1 / ((K_j + ε) · (Σ_i Q_i + ε))
    sink      Î_i = (Q_i + ε) · (Σ_j K_j O_j + ε)            source    Ô_j = clamp((K_j + ε) · (Σ_i Q_i I_i + ε), ±1)
    allocation A_i = sigmoid(Î_i)                           competition C_j = softmax_j(Ô_j) · N
    out_i = A_i · (Q_i I_i)ᵀ Σ_j K_j ⊗ (V_j C_j)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import Dropout

EPS = 1e-6
ATTN_OUT_DROPOUT = 0.01  # fixed in the released model: the layer's dropout is not passed to the attention


class FlowAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query_projection = nn.Linear(dim, dim)
        self.key_projection = nn.Linear(dim, dim)
        self.value_projection = nn.Linear(dim, dim)
        self.out_projection = nn.Linear(dim, dim)
        self.dropout = Dropout(ATTN_OUT_DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # N x D -> N x D
        n = x.shape[0]
        # one matrix product for the three projections (same result as three Linear calls, one input cast)
        projections = (self.query_projection, self.key_projection, self.value_projection)
        qkv = F.linear(x, torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections]))
        q, k, v = (t.reshape(n, self.heads, -1) for t in qkv.chunk(3, dim=-1))  # N x H x d
        with torch.autocast(x.device.type, enabled=False):
            out = self._flow(torch.sigmoid(q), torch.sigmoid(k), v)
        return self.dropout(self.out_projection(out.reshape(n, -1)))

    @staticmethod
    def _flow(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # N x H x d -> N x H x d
        """The flow normalisers sum over all cells of the sentence, so they are computed in float32; the two
        d x d products keep the projections' dtype (bf16 under autocast, with float32 accumulation)."""
        n, dtype = q.shape[0], v.dtype
        q, k = q.float(), k.float()
        q_eps, k_eps = q + EPS, k + EPS
        incoming = 1.0 / (q_eps * (k.sum(0) + EPS)).sum(-1)  # N x H
        outgoing = 1.0 / (k_eps * (q.sum(0) + EPS)).sum(-1)
        sink = (q_eps * ((k * outgoing[..., None]).sum(0) + EPS)).sum(-1)
        source = (k_eps * ((q * incoming[..., None]).sum(0) + EPS)).sum(-1).clamp(-1.0, 1.0)
        allocation = torch.sigmoid(sink)  # N_queries / N_keys = 1: queries and keys are the same cells
        competition = torch.softmax(source, dim=0) * n  # over cells
        kv = torch.einsum("nhd,nhe->hde", k.to(dtype), v * competition[..., None].to(dtype))  # H x d x d
        out = torch.einsum("nhd,hde->nhe", (q * incoming[..., None]).to(dtype), kv)
        return out * allocation[..., None].to(dtype)


class FlowformerLayer(nn.Module):
    """x + Dropout(FlowAttn(LN1 x)), then x + FFN(LN2 x), FFN = Linear(D,2D), GELU, Dropout, Linear(2D,D), Dropout."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.self_attn = FlowAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = Dropout(dropout)
        self._ff_block = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), Dropout(dropout), nn.Linear(2 * dim, dim), Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout1(self.self_attn(self.norm1(x)))
        return x + self._ff_block(self.norm2(x))


class FlowformerEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, n_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(FlowformerLayer(dim, heads, dropout) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class PreLatentNorm(nn.Module):
    """LayerNorm between the encoder and the latent (``pre_latent_norm.norm``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

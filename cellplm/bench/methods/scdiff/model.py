"""scDiff's conditional denoising network, as its annotation config builds it.

Written from ``DiffusionModel`` in ``scdiff/model.py`` and the modules it uses (``scdiff/modules/diffusion_model/``
embedder, encoder, decoder; ``scdiff/modules/layers/`` attention, basic, scmodel; ``scdiff/utils/modules.py``) of
OmicsML/scDiff, with the options of ``configs/eval_annotation.yaml`` and ``eval_annotation_cellxgene.yaml`` (the
other branches of upstream's code are left out):

- a **context encoder**: the context cells' expression (masked entries zero) is embedded by a gene-embedding sum
  (``Embedder``: ``x @ E``, then GELU, LayerNorm) and passed through ``depth`` MLP blocks (Linear, GELU, LayerNorm,
  ``encoder_type: mlp``), whose outputs are kept, one per block;
- a **denoising decoder**: the noised expression is embedded the same way (its own embedding,
  ``decoder_embed_type: embedder``), the sinusoidal embedding of the time step is added (``mlp_time_embed: false``),
  and ``depth`` cross-attention blocks (``cond_type: crossattn``) refine this one token, block ``i`` attending to the
  context encoder's output of block ``depth - 1 - i`` and to the cell-type condition's embedding for that block
  (``EmbeddingDict``: one embedding table per block, ``cond_tokens: 1``);
- an **output head**: LayerNorm, the batch condition's embedding added (the post-conditioner, ``post_cond_layers: 1``),
  a Linear layer to every gene (the predicted clean expression, ``parameterization: x0``).

Condition codes are 1-based; 0 is the null condition. While training, each condition code is replaced by 0 with
probability ``cond_mask_ratio`` (cell type) or ``post_cond_mask_ratio`` (batch), as ``EmbeddingDict`` does.
Weights start as upstream's ``init_weights``: Xavier-uniform Linear weights, zero biases, LayerNorm at 1 and 0;
gene embeddings ``N(0, 0.005^2)``; condition embeddings ``N(0, 1)`` (PyTorch's default, untouched upstream).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding of the time steps ``t`` (B,) -> (B, dim): cosines then sines (``sinusoidal_embedding``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class GeneEmbedder(nn.Module):
    """A cell's embedding: the sum of its genes' embeddings weighted by expression, then GELU and LayerNorm."""

    def __init__(self, n_genes: int, dim: int, dropout: float = 0.0):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(n_genes, dim) * 0.005)
        self.post = nn.Sequential(nn.GELU(), nn.LayerNorm(dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, genes) -> (B, dim)
        return self.post(x @ self.emb)


class ConditionEmbedding(nn.Module):
    """One embedding table per block for each condition key (``EmbeddingDict``); codes masked to 0 while training."""

    def __init__(self, n_codes: dict[str, int], dim: int, depth: int, mask_ratio: float):
        super().__init__()
        self.keys = sorted(n_codes)
        self.mask_ratio = mask_ratio
        self.tables = nn.ModuleDict(
            {k: nn.ModuleList(nn.Embedding(n_codes[k], dim) for _ in range(depth)) for k in self.keys}
        )

    def forward(self, codes: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """One (B, n_keys, dim) tensor per block."""
        masked = {}
        for k in self.keys:
            c = codes[k].long()
            if self.training:
                c = c.masked_fill(torch.rand(c.shape, device=c.device) < self.mask_ratio, 0)
            masked[k] = c
        depth = len(self.tables[self.keys[0]])
        return [torch.stack([self.tables[k][i](masked[k]) for k in self.keys], dim=1) for i in range(depth)]


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class CrossAttentionBlock(nn.Module):
    """``BasicTransformerBlock(self_attn=False, cross_attn=True, qkv_bias=True)``: pre-norm cross-attention of the
    cell's token to its context tokens, then a pre-norm gated (GEGLU, 4x) feed-forward, both residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.norm1, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, inner) for _ in range(3))
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.ff = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim))

    def attend(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # x: (B, 1, dim), context: (B, m, dim)
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (y.reshape(b, y.shape[1], self.heads, -1).transpose(1, 2) for y in (q, k, v))  # (B, h, *, d)
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attend(self.norm1(x), context) + x
        return self.ff(self.norm3(x)) + x


class ScDiffDenoiser(nn.Module):
    """Predicts a cell's clean (log-normalised) expression from its noised expression, the time step, its
    conditions (cell type, batch) and the context cells' expression."""

    def __init__(
        self,
        n_genes: int,
        n_cell_types: int,
        n_batches: int,
        *,
        embed_dim: int = 512,
        depth: int = 6,
        num_heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        cond_mask_ratio: float = 0.1,
        post_cond_mask_ratio: float = 0.1,
        cell_mask_ratio: float = 0.25,
    ):
        super().__init__()
        self.embed_dim, self.cell_mask_ratio = embed_dim, cell_mask_ratio
        # context encoder
        self.context_embedder = GeneEmbedder(n_genes, embed_dim, dropout)
        self.context_blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU(), nn.LayerNorm(embed_dim)) for _ in range(depth)
        )
        # denoising decoder
        self.noised_embedder = GeneEmbedder(n_genes, embed_dim, dropout)
        self.cond_embed = ConditionEmbedding({"cell_type": n_cell_types + 1}, embed_dim, depth, cond_mask_ratio)
        self.blocks = nn.ModuleList(CrossAttentionBlock(embed_dim, num_heads, dim_head, dropout) for _ in range(depth))
        # output head
        self.norm = nn.LayerNorm(embed_dim)
        self.post_cond_embed = ConditionEmbedding({"batch": n_batches + 1}, embed_dim, 1, post_cond_mask_ratio)
        self.head = nn.Linear(embed_dim, n_genes)
        self.apply(_init_weights)

    def random_mask(self, x: torch.Tensor) -> torch.Tensor:
        """scDiff's ``mask_mode: v2`` (True = hidden from the context encoder): each cell hides a uniform random
        fraction of its genes, all of them with probability ``cell_mask_ratio``."""
        ratios = torch.rand(x.shape[0], 1, device=x.device)
        ratios[torch.rand(x.shape[0], device=x.device) < self.cell_mask_ratio] = 1
        return torch.rand_like(x) < ratios

    def forward(
        self,
        x_context: torch.Tensor,
        x_noised: torch.Tensor,
        t: torch.Tensor,
        cell_type: torch.Tensor,
        batch: torch.Tensor,
    ) -> torch.Tensor:
        """(B, genes) context and noised expression, (B,) or (1,) time steps, (B,) condition codes -> (B, genes)."""
        hidden, h = [], self.context_embedder(x_context)
        for block in self.context_blocks:
            h = block(h)
            hidden.append(h[:, None])  # (B, 1, dim)
        x = self.noised_embedder(x_noised)
        x = x + timestep_embedding(t.expand(x.shape[0]) if len(t) == 1 else t, self.embed_dim)
        conds = self.cond_embed({"cell_type": cell_type})  # depth x (B, 1, dim)
        x = x[:, None]
        for block, ctx, cond in zip(self.blocks, reversed(hidden), reversed(conds)):
            x = block(x, torch.cat([ctx, cond], dim=1))
        x = self.norm(x[:, 0]) + self.post_cond_embed({"batch": batch})[0][:, 0]
        return self.head(x)


def _init_weights(m: nn.Module) -> None:
    """upstream's ``init_weights``: Xavier-uniform Linear weights and zero biases, LayerNorm weight 1 and bias 0."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

"""Cell tokens: an expression-weighted sum of gene embeddings, plus an optional 2-D spatial encoding.

token_c = GroupNorm(Dropout(ReLU(W · Σ_g log1p(count_cg) · E_g + b)))  (+ PE(x_c, y_c) before W when enabled)

The sum runs over the cell's non-zero genes only (``embedding_bag`` over the CSR rows), so it costs
O(nnz · D), needs no dense cells × genes matrix, has a gradient only for the genes seen, and, unlike a
``torch.sparse.mm``, runs under bf16 autocast on every device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import Dropout
from .sentence import Sentence

PE_GRID = 100  # the spatial encoding is a 100 x 100 lattice over coordinates scaled to [0, 1]


class GeneEmbedding(nn.Module):
    """The gene-embedding table E: one D-vector per vocabulary gene (``feat_enc.emb``, V x D)."""

    def __init__(self, n_genes: int, dim: int):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(n_genes, dim) * 0.005)

    def forward(self, sentence: Sentence) -> torch.Tensor:  # -> N x D
        weights = torch.log1p(sentence.values)
        if sentence.entry_keep is not None:  # masked entries contribute nothing
            weights = weights * sentence.entry_keep
        return F.embedding_bag(
            sentence.indices,
            self.emb,
            sentence.indptr[:-1],
            mode="sum",
            per_sample_weights=weights.to(self.emb.dtype),
            include_last_offset=False,
        )


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """Standard 1-D sinusoidal encoding: channel 2i is sin(p / 10000^(2i/dim)), channel 2i+1 the cosine."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.float()


class Sinusoidal2dPE(nn.Module):
    """2-D encoding: the first D/2 channels encode x, the last D/2 encode y, on a 100 x 100 lattice.

    ``pe_enc`` is a frozen table of PE_GRID² rows (row = x_bin · 100 + y_bin). Cells without coordinates
    (scRNA-seq; coordinates -1) share the learned ``missing_pe`` vector.
    """

    def __init__(self, dim: int):
        super().__init__()
        half = sinusoid_table(PE_GRID, dim // 2)
        table = torch.cat([half.repeat_interleave(PE_GRID, 0), half.repeat(PE_GRID, 1)], dim=1)
        self.pe_enc = nn.Embedding.from_pretrained(table, freeze=True)
        self.missing_pe = nn.Parameter(torch.randn(dim) * 0.01)

    def forward(self, coords: torch.Tensor | None, n_cells: int) -> torch.Tensor:  # -> N x D
        if coords is None or bool((coords[0] == -1).all()):
            return self.missing_pe.expand(n_cells, -1)
        bins = torch.floor((coords * 1.02 - 0.01) * PE_GRID).long().clamp(0, PE_GRID - 1)
        return self.pe_enc(bins[:, 0] * PE_GRID + bins[:, 1])


class OmicsEmbedder(nn.Module):
    """Counts to cell tokens (``embedder.*`` in the released weights)."""

    def __init__(self, n_genes: int, dim: int, dropout: float, spatial_pe: bool = False):
        super().__init__()
        self.feat_enc = GeneEmbedding(n_genes, dim)
        self.pe_enc = Sinusoidal2dPE(dim)
        self.spatial_pe = spatial_pe
        # ``norm0`` exists in the released weights but the released forward pass never applies it; it is kept
        # only so that checkpoints round-trip between this package and upstream.
        self.norm0 = nn.GroupNorm(4, dim)
        self.extra_linear = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), Dropout(dropout), nn.GroupNorm(4, dim))

    def forward(self, sentence: Sentence) -> torch.Tensor:  # -> N x D
        x = self.feat_enc(sentence)
        if self.spatial_pe:
            x = x + self.pe_enc(sentence.coords, x.shape[0])
        return self.extra_linear(x)

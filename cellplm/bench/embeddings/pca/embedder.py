"""PCA of log-normalised highly variable genes: the classic embedding, fitted on the cells it embeds (no labels).

:func:`pca_embedding` is also the pre-integration embedding of scib's PCR comparison.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

from ....hvg import highly_variable_genes
from ...normalise import log1p_cp10k
from ..base import Embedder


def log_hvg(adata: ad.AnnData, n_hvg: int) -> sp.csr_matrix:
    """log1p(CP10k) of raw counts ``adata.X`` on the ``n_hvg`` most variable genes (scanpy's seurat flavour, over
    all the given cells; all genes when there are no more than ``n_hvg``): ``(n_cells, n_selected)`` CSR."""
    X = log1p_cp10k(adata.X)  # (n_cells, n_genes)
    return X[:, highly_variable_genes(X, n_hvg, flavor="seurat")]


def pca(X, n_comps: int, seed: int = 0) -> np.ndarray:
    """``(n_cells, n_comps)`` float32 principal components of ``X``: scanpy's ``pp.pca`` with ARPACK, zero-centred
    (implicitly: a sparse matrix stays sparse) and not scaled, seeded; ``n_comps`` is capped at one fewer than the
    cells or the genes (ARPACK's limit)."""
    n_comps = min(n_comps, X.shape[0] - 1, X.shape[1] - 1)
    if n_comps < 1:
        raise ValueError(f"PCA needs at least 2 cells and 2 genes, got {X.shape[0]} cells x {X.shape[1]} genes")
    return np.asarray(
        sc.pp.pca(X, n_comps=n_comps, zero_center=True, svd_solver="arpack", random_state=seed), dtype=np.float32
    )


def pca_embedding(adata: ad.AnnData, n_comps: int = 50, n_hvg: int = 2000, seed: int = 0) -> np.ndarray:
    """``(n_cells, n_comps)`` float32: the :func:`pca` of the :func:`log_hvg` of raw counts ``adata.X``."""
    return pca(log_hvg(adata, n_hvg), n_comps, seed)


class PCAEmbedder(Embedder):
    """:func:`pca_embedding` of the split's cells."""

    packages = ("scanpy",)

    def embed(self, cells):
        X = log_hvg(cells, int(self.param("n_hvg")))  # (n_cells, n_hvg)
        z = pca(X, int(self.param("n_comps")), self.seed)
        self.n_genes_used = X.shape[1]
        self.extra = {
            "n_hvg": X.shape[1],
            "hvg_flavor": "seurat",
            "normalisation": "log1p CP10k",
            "n_comps": int(z.shape[1]),
            "svd_solver": "arpack",
            "scaled": False,
        }
        return z

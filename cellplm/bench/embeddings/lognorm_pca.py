"""PCA of log-normalised highly variable genes, shared by the embedding methods ``pca`` (all cells: the unintegrated
embedding) and ``pca_per_batch`` (each batch apart), and the pre-integration embedding of scib's PCR comparison
(:func:`pca_embedding`)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

from ...hvg import highly_variable_genes
from ..normalise import log1p_cp10k

HVG_FLAVOR = "seurat"
SVD_SOLVER = "arpack"


def log_hvg(adata: ad.AnnData, n_hvg: int) -> sp.csr_matrix:
    """log1p(CP10k) of raw counts ``adata.X`` on the ``n_hvg`` most variable genes (scanpy's seurat flavour, over
    all the given cells; all genes when there are no more than ``n_hvg``): ``(n_cells, n_selected)`` CSR."""
    X = log1p_cp10k(adata.X)  # (n_cells, n_genes)
    return X[:, highly_variable_genes(X, n_hvg, flavor=HVG_FLAVOR)]


def pca(X, n_comps: int, seed: int = 0) -> np.ndarray:
    """``(n_cells, n_comps)`` float32 principal components of ``X``: scanpy's ``pp.pca`` with ARPACK, zero-centred
    (implicitly: a sparse matrix stays sparse) and not scaled, seeded; ``n_comps`` is capped at one fewer than the
    cells or the genes (ARPACK's limit)."""
    n_comps = min(n_comps, X.shape[0] - 1, X.shape[1] - 1)
    if n_comps < 1:
        raise ValueError(f"PCA needs at least 2 cells and 2 genes, got {X.shape[0]} cells x {X.shape[1]} genes")
    return np.asarray(
        sc.pp.pca(X, n_comps=n_comps, zero_center=True, svd_solver=SVD_SOLVER, random_state=seed), dtype=np.float32
    )


def pca_embedding(adata: ad.AnnData, n_comps: int = 50, n_hvg: int = 2000, seed: int = 0) -> np.ndarray:
    """``(n_cells, n_comps)`` float32: the :func:`pca` of the :func:`log_hvg` of raw counts ``adata.X``."""
    return pca(log_hvg(adata, n_hvg), n_comps, seed)


def settings(n_hvg: int, n_comps: int) -> dict:
    """What a run record's ``extra`` says about these settings (the genes and components actually used)."""
    return {
        "n_hvg": n_hvg,
        "hvg_flavor": HVG_FLAVOR,
        "normalisation": "log1p CP10k",
        "n_comps": n_comps,
        "svd_solver": SVD_SOLVER,
        "scaled": False,
    }

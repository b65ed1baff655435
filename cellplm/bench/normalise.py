"""Input transforms shared by the classic annotation methods and the embedding methods: log1p(CP10k) and the highly
variable genes of the training cells."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..hvg import highly_variable_genes


def log1p_cp10k(X) -> sp.csr_matrix:
    """log1p of counts scaled to 10,000 per cell (scanpy's normalize_total + log1p), as a new CSR matrix."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    size = np.asarray(X.sum(axis=1)).ravel()
    size[size == 0] = 1
    X.data *= np.repeat(1e4 / size, np.diff(X.indptr)).astype(np.float32)
    np.log1p(X.data, out=X.data)
    return X


def select_hvg(train: ad.AnnData, n_top: int) -> np.ndarray:
    """Boolean mask of the ``n_top`` most variable genes of the training cells (scanpy 'seurat' flavour)."""
    if n_top is None or n_top >= train.n_vars:
        return np.ones(train.n_vars, dtype=bool)
    return highly_variable_genes(log1p_cp10k(train.X), n_top, flavor="seurat")

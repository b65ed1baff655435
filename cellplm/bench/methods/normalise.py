"""Shared input transforms for the classic methods: log1p(CP10k), highly variable genes, and the base of the
methods that fit on the HVGs of the training cells."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ...hvg import highly_variable_genes
from .base import Annotator


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


class HVGAnnotator(Annotator):
    """Features: log1p-CP10k of the ``n_hvg`` (default 2,000) most variable training genes."""

    packages = ("scikit-learn",)

    def _features(self, adata):
        return log1p_cp10k(adata.X)[:, self.genes_]

    def _fit_genes(self, train):
        self.genes_ = select_hvg(train, self.params.get("n_hvg", 2000))
        self.n_genes_used = int(self.genes_.sum())

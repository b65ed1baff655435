"""The base of the classic methods that fit on the highly variable genes of the training cells."""

from __future__ import annotations

from ..normalise import log1p_cp10k, select_hvg
from .base import Annotator


class HVGAnnotator(Annotator):
    """Features: log1p-CP10k of the ``n_hvg`` most variable training genes (a param of every subclass)."""

    packages = ("scikit-learn",)

    def _features(self, adata):
        return log1p_cp10k(adata.X)[:, self.genes_]

    def _fit_genes(self, train):
        self.genes_ = select_hvg(train, self.param("n_hvg"))
        self.n_genes_used = int(self.genes_.sum())

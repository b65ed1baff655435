"""The base of the classic methods that fit on the highly variable genes of the training cells."""

from __future__ import annotations

from ..normalise import log1p_cp10k, select_hvg
from .base import Annotator


class HVGAnnotator(Annotator):
    """Features: log1p-CP10k of the ``n_hvg`` (default 2,000) most variable training genes."""

    packages = ("scikit-learn",)

    def _features(self, adata):
        return log1p_cp10k(adata.X)[:, self.genes_]

    def _fit_genes(self, train):
        self.genes_ = select_hvg(train, self.params.get("n_hvg", 2000))
        self.n_genes_used = int(self.genes_.sum())

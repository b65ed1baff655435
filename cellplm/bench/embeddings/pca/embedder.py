"""PCA of log-normalised highly variable genes: the classic embedding, fitted on the cells it embeds (no labels).

It is also the zero-shot track's unintegrated reference: all cells in one PCA, batches as they are
(OpenProblems' ``no_integration`` control; :mod:`..lognorm_pca` holds the code it shares with ``pca_per_batch``).
"""

from __future__ import annotations

from ..base import Embedder
from ..lognorm_pca import log_hvg, pca, settings


class PCAEmbedder(Embedder):
    """:func:`~..lognorm_pca.pca_embedding` of the split's cells."""

    packages = ("scanpy",)

    def embed(self, cells):
        X = log_hvg(cells, int(self.param("n_hvg")))  # (n_cells, n_hvg)
        z = pca(X, int(self.param("n_comps")), self.seed)
        self.n_genes_used = X.shape[1]
        self.extra = settings(X.shape[1], int(z.shape[1]))
        return z

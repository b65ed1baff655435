"""Control: a PCA of each batch apart (OpenProblems' ``no_integration_batch``, openproblems-bio/task_batch_integration,
src/control_methods/no_integration_batch/script.py): each batch is centred on its own mean and projected on its own
axes, so batch offsets vanish (batches overlap around the origin) while nothing aligns a cell type across batches:
batch mixing without integration, the naive baseline beside ``pca``'s unintegrated embedding.

OpenProblems fills ``n_comps`` columns of zeros batch by batch, fewer where a batch has no more cells than
components; so does this one. Unlike it, each batch's genes are its own highly variable genes (``pca``'s log1p-CP10k
and HVG settings within the batch), so that nothing of one batch reaches another's embedding.
"""

from __future__ import annotations

import numpy as np

from ....keys import BATCH
from ..base import Embedder
from ..lognorm_pca import log_hvg, pca, settings


class PCAPerBatch(Embedder):
    packages = ("scanpy",)

    def embed(self, cells):
        n_comps, n_hvg = int(self.param("n_comps")), int(self.param("n_hvg"))
        batches = cells.obs[BATCH].astype(str).to_numpy()
        z = np.zeros((cells.n_obs, n_comps), dtype=np.float32)
        comps, genes = {}, {}
        for batch in dict.fromkeys(batches):
            rows = np.flatnonzero(batches == batch)
            if len(rows) < 2:
                raise ValueError(f"PCA per batch needs at least 2 cells in every batch; batch '{batch}' has 1")
            X = log_hvg(cells[rows], n_hvg)  # (n_batch_cells, n_batch_hvg)
            pcs = pca(X, n_comps, self.seed)
            z[rows, : pcs.shape[1]] = pcs
            comps[batch], genes[batch] = int(pcs.shape[1]), int(X.shape[1])
        self.n_genes_used = max(genes.values())
        self.extra = {**settings(self.n_genes_used, n_comps), "n_batches": len(comps), "n_comps_per_batch": comps}
        return z

"""Control: Gaussian noise, one vector per cell (the floor of bio conservation, perfect batch mixing)."""

from __future__ import annotations

import numpy as np

from ..base import Embedder


class RandomEmbedder(Embedder):
    def embed(self, cells):
        self.n_genes_used = 0
        rng = np.random.default_rng(self.seed)
        return rng.standard_normal((cells.n_obs, int(self.param("n_dims"))), dtype=np.float32)

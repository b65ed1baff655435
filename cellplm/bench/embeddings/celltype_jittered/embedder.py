"""Control: the cell types, one-hot, with a little noise (the ceiling of bio conservation).

As OpenProblems' ``embed_cell_types_jittered`` (openproblems-bio/task_batch_integration,
src/control_methods/embed_cell_types_jittered/script.py and ``_perfect_embedding`` in src/control_methods/utils.py):
one column per cell type (sorted, as scikit-learn's LabelEncoder), plus noise drawn uniformly from
``[-jitter, jitter]`` (``np.random.uniform`` there; seeded by the run seed here).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ....keys import LABEL
from ..base import Embedder


class CellTypeJittered(Embedder):
    needs_labels = True  # the harness puts obs['cell_type'] on the cells (train file, then solution file)

    def embed(self, cells):
        if LABEL not in cells.obs:
            raise ValueError(f"celltype_jittered needs obs['{LABEL}'] (the split's solution file: --solution)")
        codes = pd.Categorical(cells.obs[LABEL].astype(str)).codes  # categories sorted, as LabelEncoder
        one_hot = np.eye(codes.max() + 1, dtype=np.float32)[codes]  # (n_cells, n_cell_types)
        jitter = float(self.param("jitter"))
        noise = np.random.default_rng(self.seed).uniform(-jitter, jitter, one_hot.shape)
        self.n_genes_used = 0
        self.extra = {"n_cell_types": int(one_hot.shape[1]), "jitter": jitter}
        return one_hot + noise.astype(np.float32)

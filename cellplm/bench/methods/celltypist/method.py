"""CellTypist trained from scratch on the training split (as DANCE runs it for the published table)."""

from __future__ import annotations

import anndata as ad
import numpy as np

import celltypist

from ..base import Annotator
from ..normalise import log1p_cp10k


class CellTypistFromScratch(Annotator):
    packages = ("celltypist",)

    def _lognorm(self, adata):
        return ad.AnnData(log1p_cp10k(adata.X), obs=adata.obs[[]], var=adata.var[[]])

    def fit(self, train, solution=None, unlabelled=None):
        p = self.params
        self.model_ = celltypist.train(
            self._lognorm(train), labels=train.obs["cell_type"].astype(str).to_numpy(),
            use_SGD=p.get("use_SGD", True), max_iter=p.get("max_iter", 200), mini_batch=p.get("mini_batch", False),
            feature_selection=p.get("feature_selection", False), n_jobs=p.get("n_jobs", 1), check_expression=False,
        )
        self.n_genes_used = int(len(self.model_.features))
        return self

    def predict(self, test):
        result = celltypist.annotate(self._lognorm(test), model=self.model_, majority_voting=False)
        return np.asarray(result.predicted_labels["predicted_labels"].astype(str))

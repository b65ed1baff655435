"""CellTypist trained from scratch on the training split: ``celltypist.train`` (SGD logistic regression, 200
iterations, no feature selection) on log1p(CP10k) counts, then ``celltypist.annotate`` without majority voting.

These are the settings of DANCE's CellTypist example (OmicsML/dance,
``examples/single_modality/cell_type_annotation/celltypist.py``, the same since the 2023-11 "DANCE V1.0.0 benchmark
production" commit): a new model trained with ``use_SGD`` on, ``max_iter=200``, ``n_jobs=10``, feature selection
left off, majority voting off; no pretrained CellTypist model. DANCE, from the group that wrote scDiff, is a
plausible source of the published CellTypist row, but neither scDiff nor CellPLM says how that row was produced,
so its exact settings are unknown. Differences from DANCE's example: DANCE's module
(``dance/modules/single_modality/cell_type_annotation/celltypist.py``, its own copy of CellTypist's training code)
normalises nothing and takes its datasets' stored expression, which its SingleCellNet example calls already
normalised; here raw counts are log1p(CP10k)-normalised, the input ``celltypist.train`` expects. ``n_jobs`` is 1
(parallelism only).
"""

from __future__ import annotations

import anndata as ad
import numpy as np

import celltypist

from ....keys import LABEL
from ...normalise import log1p_cp10k
from ..base import Annotator


class CellTypistFromScratch(Annotator):
    packages = ("celltypist",)

    def _lognorm(self, adata):
        return ad.AnnData(log1p_cp10k(adata.X), obs=adata.obs[[]], var=adata.var[[]])

    def fit(self, train, solution=None, unlabelled=None):
        p = self.param
        self.model_ = celltypist.train(
            self._lognorm(train),
            labels=train.obs[LABEL].astype(str).to_numpy(),
            use_SGD=p("use_SGD"),
            max_iter=p("max_iter"),
            mini_batch=p("mini_batch"),
            feature_selection=p("feature_selection"),
            n_jobs=p("n_jobs"),
            check_expression=False,
        )
        self.n_genes_used = int(len(self.model_.features))
        return self

    def predict(self, test):
        result = celltypist.annotate(self._lognorm(test), model=self.model_, majority_voting=False)
        return np.asarray(result.predicted_labels["predicted_labels"].astype(str))

"""Control: labels drawn from the training label frequencies (the score of chance)."""

from __future__ import annotations

import numpy as np

from ....keys import LABEL
from ..base import Annotator


class RandomLabels(Annotator):
    def fit(self, train, solution=None, unlabelled=None):
        freq = train.obs[LABEL].astype(str).value_counts(normalize=True)
        self.classes_, self.p_ = freq.index.to_numpy(), freq.to_numpy()
        self.n_genes_used = 0
        return self

    def predict(self, test):
        return np.random.default_rng(self.seed).choice(self.classes_, size=test.n_obs, p=self.p_)

"""Control: every test cell gets the most frequent training label (the score of knowing only the class sizes)."""

from __future__ import annotations

import numpy as np

from ....keys import LABEL
from ..base import Annotator


class MajorityClass(Annotator):
    def fit(self, train, solution=None, unlabelled=None):
        self.label_ = train.obs[LABEL].astype(str).value_counts().idxmax()
        self.n_genes_used = 0
        return self

    def predict(self, test):
        return np.full(test.n_obs, self.label_, dtype=object)

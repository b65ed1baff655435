"""Logistic regression on log1p-CP10k highly variable genes."""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression

from ....keys import LABEL
from ..hvg import HVGAnnotator


class LogisticRegressionHVG(HVGAnnotator):
    def fit(self, train, solution=None, unlabelled=None):
        self._fit_genes(train)
        self.model_ = LogisticRegression(
            C=self.param("C"),
            max_iter=self.param("max_iter"),
            random_state=self.seed,
        ).fit(self._features(train), train.obs[LABEL].astype(str).to_numpy())
        return self

    def predict(self, test):
        return self.model_.predict(self._features(test))

"""Logistic regression on log1p-CP10k highly variable genes."""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression

from ..hvg import HVGAnnotator


class LogisticRegressionHVG(HVGAnnotator):

    def fit(self, train, solution=None, unlabelled=None):
        self._fit_genes(train)
        self.model_ = LogisticRegression(
            C=self.params.get("C", 1.0), max_iter=self.params.get("max_iter", 1000), random_state=self.seed,
        ).fit(self._features(train), train.obs["cell_type"].astype(str).to_numpy())
        return self

    def predict(self, test):
        return self.model_.predict(self._features(test))


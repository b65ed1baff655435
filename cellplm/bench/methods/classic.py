"""Classic baselines: logistic regression on log1p-CP10k HVGs, and kNN on PCA."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from .base import Annotator
from .normalise import log1p_cp10k, select_hvg


class _HVGAnnotator(Annotator):
    packages = ("scikit-learn",)

    def _features(self, adata):
        return log1p_cp10k(adata.X)[:, self.genes_]

    def _fit_genes(self, train):
        self.genes_ = select_hvg(train, self.params.get("n_hvg", 2000))
        self.n_genes_used = int(self.genes_.sum())


class LogisticRegressionHVG(_HVGAnnotator):
    label = "Logistic regression (log1p-CP10k HVGs)"
    implementation = "scikit-learn LogisticRegression (lbfgs, multinomial) on log1p(CP10k) HVGs"

    def fit(self, train, solution=None, unlabelled=None):
        self._fit_genes(train)
        self.model_ = LogisticRegression(
            C=self.params.get("C", 1.0), max_iter=self.params.get("max_iter", 1000), random_state=self.seed,
        ).fit(self._features(train), train.obs["cell_type"].astype(str).to_numpy())
        return self

    def predict(self, test):
        return self.model_.predict(self._features(test))


class KNNOnPCA(_HVGAnnotator):
    label = "kNN on PCA (log1p-CP10k HVGs)"
    implementation = "scikit-learn PCA + KNeighborsClassifier on scaled log1p(CP10k) HVGs"

    def fit(self, train, solution=None, unlabelled=None):
        self._fit_genes(train)
        X = self._features(train).toarray()
        self.scaler_ = StandardScaler().fit(X)
        n_comps = int(min(self.params.get("n_pcs", 50), X.shape[0] - 1, X.shape[1]))
        self.pca_ = PCA(n_components=n_comps, random_state=self.seed).fit(self._scale(X))
        self.knn_ = KNeighborsClassifier(n_neighbors=min(self.params.get("k", 15), X.shape[0])).fit(
            self.pca_.transform(self._scale(X)), train.obs["cell_type"].astype(str).to_numpy())
        return self

    def _scale(self, X):
        return np.clip(self.scaler_.transform(X), -10, 10)

    def predict(self, test):
        X = self._features(test).toarray()
        return self.knn_.predict(self.pca_.transform(self._scale(X)))

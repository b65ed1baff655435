"""kNN on the PCA of scaled log1p-CP10k highly variable genes."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from ....keys import LABEL
from ..hvg import HVGAnnotator


class KNNOnPCA(HVGAnnotator):
    def fit(self, train, solution=None, unlabelled=None):
        self._fit_genes(train)
        X = self._features(train).toarray()
        self.scaler_ = StandardScaler().fit(X)
        n_comps = int(min(self.param("n_pcs"), X.shape[0] - 1, X.shape[1]))
        self.pca_ = PCA(n_components=n_comps, random_state=self.seed).fit(self._scale(X))
        self.knn_ = KNeighborsClassifier(n_neighbors=min(self.param("k"), X.shape[0])).fit(
            self.pca_.transform(self._scale(X)), train.obs[LABEL].astype(str).to_numpy()
        )
        return self

    def _scale(self, X):
        return np.clip(self.scaler_.transform(X), -10, 10)

    def predict(self, test):
        X = self._features(test).toarray()
        return self.knn_.predict(self.pca_.transform(self._scale(X)))

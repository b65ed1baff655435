"""Control methods (OpenProblems convention): they bound what a metric can say.

``true_labels`` must score 1, ``random_labels`` about chance, ``majority_class`` the share of the largest class.
"""

from __future__ import annotations

import numpy as np

from .base import Annotator


class MajorityClass(Annotator):
    label = "Majority class (control)"
    implementation = "cellplm.bench controls: most frequent training label"
    is_control = True

    def fit(self, train, solution=None, unlabelled=None):
        self.label_ = train.obs["cell_type"].astype(str).value_counts().idxmax()
        self.n_genes_used = 0
        return self

    def predict(self, test):
        return np.full(test.n_obs, self.label_, dtype=object)


class RandomLabels(Annotator):
    label = "Random labels (control)"
    implementation = "cellplm.bench controls: labels drawn from the training label frequencies"
    is_control = True

    def fit(self, train, solution=None, unlabelled=None):
        freq = train.obs["cell_type"].astype(str).value_counts(normalize=True)
        self.classes_, self.p_ = freq.index.to_numpy(), freq.to_numpy()
        self.n_genes_used = 0
        return self

    def predict(self, test):
        return np.random.default_rng(self.seed).choice(self.classes_, size=test.n_obs, p=self.p_)


class TrueLabels(Annotator):
    label = "True labels (control)"
    implementation = "cellplm.bench controls: copies the solution (upper bound)"
    is_control = True
    needs_solution = True

    def fit(self, train, solution=None, unlabelled=None):
        if solution is None:
            raise ValueError("true_labels needs the solution file")
        self.truth_ = solution.obs["cell_type"].astype(str)
        self.n_genes_used = 0
        return self

    def predict(self, test):
        return self.truth_.reindex(test.obs_names).to_numpy(dtype=object)

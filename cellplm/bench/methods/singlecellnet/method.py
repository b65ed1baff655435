"""SingleCellNet (Tan & Cahan 2019, Cell Systems 9:207): top-scoring gene pairs + a random forest with a "rand" class.

This project's re-implementation, written from the paper and the defaults of the authors' R package
(``singleCellNet::scn_train``: ``nTopGenes=10, nTopGenePairs=25, nRand=70, nTrees=1000, stratify=FALSE``; the
gene-statistics filter ``alpha1=0.05, alpha2=0.001, mu=2`` and at most 3 pairs per gene), which are this
method's defaults here:

1. **Classification genes.** Training counts are log1p(CP10k)-normalised and (``limit_to_hvg``, as the authors'
   Python port does) limited to highly variable genes (scanpy ``seurat``: ``min_mean=0.0125, max_mean=4,
   min_disp=0.5``). Genes pass the statistics filter if detected in more than ``alpha1`` of the cells, or in more
   than ``alpha2`` with a mean above ``mu`` where detected. For every cell type, each gene is scored by
   template matching: the Pearson correlation of its expression with the 0/1 indicator of that type
   (:func:`template_correlation`); the ``n_top_genes`` highest and the ``n_top_genes`` lowest are that type's
   genes, kept in decreasing order of correlation.
2. **Top-scoring pairs.** For every type, every pair ``(a, b)`` of its genes with ``a`` ranked before ``b``
   becomes the binary feature ``a > b`` within a cell (:func:`pair_transform`; invariant to any per-cell
   normalisation, so raw counts are compared). Pairs are scored by the correlation of that feature with the type
   indicator and the ``n_top_gene_pairs`` best are taken, each gene in at most ``max_pairs_per_gene`` of them
   (:func:`best_pairs`). The union over types is the feature set.
3. **Random forest with a "rand" class.** ``n_rand`` random profiles, made by shuffling the training pair
   matrix within each cell and then within each pair (:func:`random_profiles`), are added with the label
   ``rand``; scikit-learn's ``RandomForestClassifier`` (``n_trees`` trees, ``max_features='sqrt'`` as R's
   randomForest, ``class_weight='balanced'`` only with ``stratify``) is trained on the pair features.

**Unassigned cells.** A test cell whose highest-scoring class is ``rand`` is SingleCellNet's "unassigned": with
``unassigned: rand`` (default, as the method reports it) its predicted label is the string ``rand``, which
never equals a true cell type, so it counts as an error in every metric (and, as a predicted label absent from
the truth, adds a class with F1 and precision 0 to the macro averages). ``unassigned: best_type`` reports the
best-scoring real type instead. The number of ``rand`` calls is in the run record (``extra.n_predicted_rand``).

*Differences from the authors' code:* genes are scored on log-normalised values (the R package's input; the
Python port z-scores first, which leaves the correlation unchanged apart from clipping at 10 s.d.); random
profiles and trees are seeded with the run's seed (the authors fix ``random_state=100``).

*DANCE's settings* (``alternative_params: dance`` in method.yaml, with the upstream files they come from): 100
"rand" profiles, balanced class weights (``stratify``) and no HVG limit, 1,000 trees; whether the published
SingleCellNet row used them is unknown.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import scipy.sparse as sp
from sklearn.ensemble import RandomForestClassifier

from ....hvg import highly_variable_genes
from ....keys import LABEL
from ...errors import NotApplicable
from ...normalise import log1p_cp10k
from ..base import Annotator

RAND = "rand"


def template_correlation(X, onehot: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``X`` (cells x features, dense or sparse) with every column of the
    0/1 matrix ``onehot`` (cells x types); ``types x features``, NaN where a feature is constant."""
    n = X.shape[0]
    Y = np.asarray(onehot, dtype=np.float64)
    Xs = sp.csr_matrix(X, dtype=np.float64)
    mean = np.asarray(Xs.mean(axis=0)).ravel()
    var = np.asarray(Xs.multiply(Xs).mean(axis=0)).ravel() - mean**2
    p = Y.mean(axis=0)
    cov = np.asarray(Xs.T @ Y).T / n - np.outer(p, mean)  # E[x y] - E[x] E[y]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(np.outer(p * (1 - p), np.maximum(var, 0)))
    r[:, var <= 1e-12 * np.maximum(mean**2, 1)] = np.nan
    return r


def pair_transform(X, gene_index: dict, pairs) -> np.ndarray:
    """Binary top-scoring-pair features: ``X[:, a] > X[:, b]`` for every pair ``(a, b)`` (gene names)."""
    if not pairs:
        return np.zeros((X.shape[0], 0), dtype=np.float32)
    genes = sorted({g for pair in pairs for g in pair})
    cols = X[:, [gene_index[g] for g in genes]]
    cols = cols.toarray() if sp.issparse(cols) else np.asarray(cols)
    pos = {g: i for i, g in enumerate(genes)}
    a = cols[:, [pos[p[0]] for p in pairs]]
    b = cols[:, [pos[p[1]] for p in pairs]]
    return (a > b).astype(np.float32)


def best_pairs(scores: np.ndarray, pairs, n_pairs: int, max_per_gene: int):
    """The ``n_pairs`` highest-scoring pairs (NaN scores skipped), each gene used in at most ``max_per_gene``."""
    chosen, used = [], {}
    for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable"):
        if np.isnan(scores[i]) or len(chosen) == n_pairs:
            break
        a, b = pairs[i]
        if used.get(a, 0) < max_per_gene and used.get(b, 0) < max_per_gene:
            chosen.append(pairs[i])
            used[a], used[b] = used.get(a, 0) + 1, used.get(b, 0) + 1
    return chosen


def random_profiles(features: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """SingleCellNet's "rand" profiles: shuffle each cell's values, then each feature across cells; ``n`` rows."""
    out = []
    while sum(len(o) for o in out) < n:
        out.append(rng.permuted(rng.permuted(features, axis=1), axis=0))
    return np.concatenate(out)[:n] if out else np.zeros((0, features.shape[1]), dtype=features.dtype)


def gene_stats_filter(L: sp.csr_matrix, alpha1: float, alpha2: float, mu: float) -> np.ndarray:
    """SingleCellNet's gene filter on normalised expression: detected (> 0) in more than ``alpha1`` of the cells,
    or in more than ``alpha2`` of them with mean expression where detected above ``mu``."""
    L = sp.csr_matrix(L)
    detected = np.bincount(L.indices[L.data > 0], minlength=L.shape[1])
    alpha = detected / L.shape[0]
    total = np.bincount(L.indices, weights=np.where(L.data > 0, L.data, 0), minlength=L.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_detected = np.where(detected > 0, total / np.maximum(detected, 1), 0)
    return (alpha > alpha1) | ((alpha > alpha2) & (mean_detected > mu))


def _hvg_mask(L: sp.csr_matrix) -> np.ndarray:
    return highly_variable_genes(L, flavor="seurat", min_mean=0.0125, max_mean=4, min_disp=0.5)


class SingleCellNet(Annotator):
    packages = ("scikit-learn", "scanpy")

    def _classy_genes(self, train, types: np.ndarray, onehot: np.ndarray) -> dict:
        L = log1p_cp10k(train.X)
        keep = np.ones(train.n_vars, dtype=bool)
        n_hvg = None
        if self.param("limit_to_hvg"):
            hvg = _hvg_mask(L)
            n_hvg = int(hvg.sum())
            if n_hvg >= 2 * self.param("n_top_genes"):  # too few HVGs (tiny panels): keep every gene, recorded
                keep &= hvg
        keep &= gene_stats_filter(L, self.param("alpha1"), self.param("alpha2"), self.param("mu"))
        idx = np.flatnonzero(keep)
        if idx.size < 2:
            raise NotApplicable(f"only {idx.size} gene(s) pass SingleCellNet's gene filters; at least 2 are needed")
        r = template_correlation(L[:, idx], onehot)
        k = int(self.param("n_top_genes"))
        genes = {}
        for t, ct in enumerate(types):
            valid = np.flatnonzero(~np.isnan(r[t]))
            order = valid[np.argsort(-r[t, valid], kind="stable")]
            picked = order if order.size <= 2 * k else np.concatenate([order[:k], order[-k:]])
            genes[ct] = [str(g) for g in train.var_names[idx[picked]]]
        self.extra.update(
            n_hvg=n_hvg,
            hvg_used=bool(self.param("limit_to_hvg")) and n_hvg is not None and n_hvg >= 2 * k,
            n_genes_passing_filters=int(idx.size),
        )
        return genes

    def fit(self, train, solution=None, unlabelled=None):
        self.check_params()
        if self.param("unassigned") not in ("rand", "best_type"):
            raise ValueError(f"unassigned must be 'rand' or 'best_type', not {self.param('unassigned')!r}")
        labels = train.obs[LABEL].astype(str).to_numpy()
        if RAND in set(labels):
            raise NotApplicable(f"a training cell type is called '{RAND}', SingleCellNet's reserved class name")
        types, y = np.unique(labels, return_inverse=True)
        onehot = np.eye(len(types))[y]
        self.extra = {}
        genes = self._classy_genes(train, types, onehot)

        self.gene_index_ = {g: i for i, g in enumerate(train.var_names)}
        counts = sp.csc_matrix(train.X)  # column access for the pair features
        self.pairs_ = []
        for t, ct in enumerate(types):
            candidates = list(itertools.combinations(genes[ct], 2))  # a ranked before b: 'a > b' marks the type
            scores = template_correlation(pair_transform(counts, self.gene_index_, candidates), onehot[:, [t]])[0]
            self.pairs_ += best_pairs(
                scores, candidates, int(self.param("n_top_gene_pairs")), int(self.param("max_pairs_per_gene"))
            )
        self.pairs_ = sorted(set(self.pairs_))
        if not self.pairs_:
            raise NotApplicable("no informative gene pair found (every candidate pair is constant)")
        features = pair_transform(counts, self.gene_index_, self.pairs_)

        rng = np.random.default_rng(self.seed)
        rand = random_profiles(features, int(self.param("n_rand")), rng)
        n_jobs = self.param("n_jobs") or int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
        self.forest_ = RandomForestClassifier(
            n_estimators=int(self.param("n_trees")),
            max_features="sqrt",
            random_state=self.seed,
            n_jobs=n_jobs,
            class_weight="balanced" if self.param("stratify") else None,
        ).fit(np.vstack([features, rand]), np.concatenate([labels, np.full(len(rand), RAND)]))
        self.n_genes_used = len({g for p in self.pairs_ for g in p})
        self.extra.update(
            n_pairs=len(self.pairs_),
            n_rand_profiles=len(rand),
            n_jobs=n_jobs,
            unassigned=self.param("unassigned"),
            pairs=["_".join(p) for p in self.pairs_],
        )
        return self

    def predict_proba(self, test) -> tuple[np.ndarray, np.ndarray]:
        """Class scores (cells x classes, including ``rand``) and the class names."""
        missing = [g for p in self.pairs_ for g in p if g not in test.var_names]
        if missing:
            raise ValueError(f"test data lacks {len(set(missing))} gene(s) of SingleCellNet's pairs, e.g. {missing[0]}")
        index = {g: i for i, g in enumerate(test.var_names)}
        features = pair_transform(sp.csc_matrix(test.X) if sp.issparse(test.X) else test.X, index, self.pairs_)
        return self.forest_.predict_proba(features), self.forest_.classes_

    def predict(self, test):
        proba, classes = self.predict_proba(test)
        if self.param("unassigned") == "best_type":
            proba = np.where(classes == RAND, -np.inf, proba)
        pred = classes[proba.argmax(axis=1)]
        self.extra["n_predicted_rand"] = int((pred == RAND).sum())
        return pred

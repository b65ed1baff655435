"""ACTINN (Ma & Pellegrini 2020, Bioinformatics 36:533): a 3-hidden-layer MLP on log2-normalised expression.

This project's re-implementation in PyTorch, written from the paper and the authors' ``actinn_predict.py``
(TensorFlow 1) defaults, which are this method's defaults here:

- **Normalisation** (:func:`actinn_normalise`): counts scaled to 10,000 per cell over all genes, then
  ``log2(x + 1)``.
- **Gene filter** (:func:`actinn_gene_filter`): genes whose total normalised expression or whose coefficient of
  variation (std / mean over cells) lies outside the 1st-99th percentile are dropped. Genes never detected in the
  training cells are dropped first (their CV is undefined; DANCE does the same with ``filter_genes(min_cells=1)``).
  *Difference:* the authors' script filters on the training and test cells together; here only the training
  cells decide, so no test cell influences the model.
- **Network**: ``n_genes -> 100 -> 50 -> 25 -> n_types``, ReLU, softmax cross-entropy, plus an L2 penalty
  ``l2_lambda * sum(||W||^2 / 2)`` over the weight matrices (TensorFlow's ``l2_loss``; biases not penalised).
  Weights start from Glorot/Xavier-uniform (TensorFlow's ``xavier_initializer``), biases from zero: random
  initialisation, no pretrained weights exist for ACTINN.
- **Training**: Adam, learning rate 1e-4 decayed by 0.95 every 1,000 steps (staircase), minibatches of 128
  reshuffled every epoch, 50 epochs; the last, partial minibatch of an epoch is used. Validation cells are
  trained on like any other (ACTINN has no early stopping).

DANCE (``pydance``, the package the published ACTINN row most likely came from) uses the same network and
schedule but ``learning_rate=0.01`` and ``lambd=0.01``: set ``learning_rate`` and ``l2_lambda`` to reproduce it.

Seeded (weights, minibatch order) and deterministic on CPU for a given thread count.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ....keys import LABEL
from ....runtime import resolve_device
from ..base import Annotator


def actinn_normalise(X) -> sp.csr_matrix:
    """ACTINN's normalisation: counts scaled to 10,000 per cell, then log2(x + 1). Empty cells stay zero."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    size = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    size[size == 0] = 1
    X.data = np.log2(1 + X.data * np.repeat(1e4 / size, np.diff(X.indptr))).astype(np.float32)
    return X


def actinn_gene_filter(X_norm, percentiles=(1, 99)) -> np.ndarray:
    """Boolean mask of genes kept by ACTINN's filter on normalised expression (cells x genes).

    Genes never detected are dropped; of the rest, genes whose total expression lies outside the
    [lo, hi] percentiles are dropped, then (among the survivors) genes whose coefficient of variation does.
    """
    lo, hi = percentiles
    X = sp.csr_matrix(X_norm, dtype=np.float64)
    n = X.shape[0]
    total = np.asarray(X.sum(axis=0)).ravel()
    keep = total > 0
    idx = np.flatnonzero(keep)
    t = total[idx]
    idx = idx[(t >= np.percentile(t, lo)) & (t <= np.percentile(t, hi))]
    mean = total[idx] / n
    sq = np.asarray(X[:, idx].multiply(X[:, idx]).sum(axis=0)).ravel() / n
    cv = np.sqrt(np.maximum(sq - mean**2, 0)) / mean
    idx = idx[(cv >= np.percentile(cv, lo)) & (cv <= np.percentile(cv, hi))]
    mask = np.zeros(X.shape[1], dtype=bool)
    mask[idx] = True
    return mask


class ACTINNNetwork(nn.Sequential):
    """The ACTINN multilayer perceptron: Linear-ReLU blocks of ``hidden_dims``, then a linear output layer."""

    def __init__(self, n_genes: int, n_types: int, hidden_dims=(100, 50, 25)):
        dims = [n_genes, *hidden_dims]
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], n_types))
        super().__init__(*layers)
        for m in self.linear_layers():
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def linear_layers(self):
        return [m for m in self if isinstance(m, nn.Linear)]

    def l2_penalty(self) -> torch.Tensor:
        """TensorFlow's ``sum(tf.nn.l2_loss(W))`` over weight matrices: sum of squares / 2."""
        return sum((m.weight**2).sum() for m in self.linear_layers()) / 2


class _Rows:
    """Row access to a cells x genes matrix as float32 tensors: dense once if small, else per minibatch."""

    def __init__(self, X: sp.csr_matrix, device: torch.device, max_dense_gb: float):
        self.device = device
        self.dense = X.shape[0] * X.shape[1] * 4 <= max_dense_gb * 2**30
        self.X = torch.from_numpy(X.toarray()).to(device) if self.dense else X

    def __getitem__(self, rows: np.ndarray) -> torch.Tensor:
        if self.dense:
            return self.X[torch.from_numpy(rows).to(self.device)]
        return torch.from_numpy(self.X[rows].toarray()).to(self.device)


class ACTINN(Annotator):
    packages = ("torch",)

    def _features(self, adata) -> sp.csr_matrix:
        X = adata.X
        if not np.array_equal(np.asarray(adata.var_names), self.genes_all_):  # align by gene name
            col = {g: i for i, g in enumerate(adata.var_names)}
            src = np.array([col.get(g, -1) for g in self.genes_all_])
            if (src < 0).all():
                raise ValueError("no gene of the training data is in the test data (var_names differ)")
            X = sp.csr_matrix(X)[:, np.maximum(src, 0)] @ sp.diags((src >= 0).astype(np.float32))  # missing: 0
        return actinn_normalise(X)[:, self.genes_]

    def fit(self, train, solution=None, unlabelled=None):
        self.check_params()
        self.genes_all_ = np.asarray(train.var_names)
        X = actinn_normalise(train.X)
        self.genes_ = actinn_gene_filter(X, self.param("gene_percentiles"))
        X = X[:, self.genes_]
        self.n_genes_used = int(self.genes_.sum())
        self.classes_, y = np.unique(train.obs[LABEL].astype(str).to_numpy(), return_inverse=True)

        device = resolve_device(self.param("device"))
        self.device = str(device)
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
            torch.manual_seed(self.seed)
            self.net_ = ACTINNNetwork(X.shape[1], len(self.classes_), self.param("hidden_dims")).to(device)
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.param("learning_rate"))
        sched = torch.optim.lr_scheduler.StepLR(
            opt, step_size=self.param("lr_decay_steps"), gamma=self.param("lr_decay_rate")
        )
        rows = _Rows(X, device, self.param("max_dense_gb"))
        y_t = torch.from_numpy(y.astype(np.int64)).to(device)
        loss_fn = nn.CrossEntropyLoss()
        l2, bs = self.param("l2_lambda"), int(self.param("minibatch_size"))
        n, steps, losses = X.shape[0], 0, []
        self.net_.train()
        for epoch in range(int(self.param("num_epochs"))):
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            total = 0.0
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                logits = self.net_(rows[idx])
                loss = loss_fn(logits, y_t[torch.from_numpy(idx).to(device)]) + l2 * self.net_.l2_penalty()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()  # per step: StepLR then decays every lr_decay_steps steps (staircase)
                steps += 1
                total += loss.item() * len(idx)
            losses.append(total / n)
        self.extra = {
            "initialisation": "random initialisation (Xavier uniform, seeded); ACTINN has no pretrained weights",
            "network": [X.shape[1], *self.param("hidden_dims"), len(self.classes_)],
            "n_genes_input": int(train.n_vars),
            "n_genes_after_filter": self.n_genes_used,
            "n_types": len(self.classes_),
            "steps": steps,
            "final_learning_rate": float(opt.param_groups[0]["lr"]),
            "loss_first_epoch": losses[0] if losses else None,
            "loss_last_epoch": losses[-1] if losses else None,
            "dense_training_matrix": rows.dense,
        }
        return self

    @torch.no_grad()
    def predict_logits(self, test) -> np.ndarray:
        X = self._features(test)
        rows = _Rows(X, torch.device(self.device), self.param("max_dense_gb"))
        self.net_.eval()
        out = [
            self.net_(rows[np.arange(s, min(s + 4096, X.shape[0]))]).cpu().numpy() for s in range(0, X.shape[0], 4096)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), dtype=np.float32)

    def predict(self, test):
        return self.classes_[self.predict_logits(test).argmax(axis=1)]

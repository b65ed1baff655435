"""scDiff (Luo et al. 2024, "scDiff: a general single-cell analysis framework via conditional diffusion
generative models"): cell-type annotation by a conditional denoising diffusion model and its diffusion classifier.

This project's PyTorch re-implementation of what OmicsML/scDiff's ``main.py -b configs/eval_annotation.yaml``
(PBMC12K, Pancreas) and ``eval_annotation_cellxgene.yaml`` (HLCA, Immune, Brain, Liver) do; scDiff cannot be
installed beside this project's stack (its pins: fairseq 0.12.2, pytorch-lightning 2.0.4, numpy 1.24). Every
hyperparameter is in ``method.yaml`` with the upstream file it comes from.

- **Input** (``scdiff/data/pbmc12k.py``, ``cellxgene.py``): log1p of counts scaled to 10,000 per cell, every gene,
  dense. Conditions: the cell type (the cross-attention condition, ``cond_num_dict``) and the batch (the output
  head's post-condition, ``post_cond_flag: true``), coded 1.. in sorted order, 0 the null condition.
- **Training** (``ScDiff.p_losses``, ``main.py``): for each minibatch of ``batch_size`` cells (reshuffled every
  epoch, the last partial one kept), a time step per cell uniform in ``[0, timesteps)``, Gaussian noise, the v2
  random mask of the context (:meth:`~.model.ScDiffDenoiser.random_mask`), the model predicts the clean expression
  from the masked context and the noised expression (conditions masked to null at random), l2 loss over all genes
  (:func:`~.diffusion.x0_loss`). AdamW with weight decay 0 and learning rate ``batch_size x base_learning_rate``
  (``main.py`` scales the base rate by GPUs x batch size x gradient accumulation: 1 x 2048 x 1 = 2.048e-5),
  ``max_epochs`` epochs, no early stopping, no gradient clipping. Cells marked as validation cells are not trained
  on (upstream trains on its train split only).
- **Prediction** (``DiffusionClassifier``, :mod:`.classifier`): the (batch, cell type) pair of the training cells
  under which the final weights reconstruct the test cell best; the prediction is that pair's cell type.

Differences from upstream (``differences`` in ``method.yaml``, listed in the README): no EMA copy of the weights
(upstream keeps one, ``use_ema``, but tests with the training weights, ``trainer.test(model, data, None)``, and logs
only validation losses with it); no checkpoint files (the test uses the weights in memory after the last epoch);
the random draws (noise, masks, minibatch order, condition masking) come from this project's seeded generators, not
from Lightning's ``seed_everything(10)`` stream; the loop is plain PyTorch, not Lightning's ``Trainer``. The split
(and the drop of cell types of at most 10 cells that upstream's cellxgene loader does) is the split files', as for
every method.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ....keys import BATCH, IS_VALIDATION, LABEL
from ....runtime import resolve_device
from ...errors import NotApplicable
from ...normalise import log1p_cp10k
from ..base import Annotator
from .classifier import classify, uniform_time_steps
from .diffusion import GaussianDiffusion, x0_loss
from .model import ScDiffDenoiser

ARCHITECTURE = ("embed_dim", "depth", "num_heads", "dim_head", "dropout", "cond_mask_ratio", "post_cond_mask_ratio",
                "cell_mask_ratio")  # fmt: skip


def _codes(values: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """1-based codes of ``values`` among sorted ``categories`` (0 = null, as upstream's LabelEncoder with "null")."""
    return np.searchsorted(categories, values) + 1


class ScDiff(Annotator):
    packages = ("torch",)

    def fit(self, train, solution=None, unlabelled=None):
        self.check_params()
        keep = ~train.obs[IS_VALIDATION].to_numpy(bool) if IS_VALIDATION in train.obs else np.ones(train.n_obs, bool)
        train = train[keep]
        labels = train.obs[LABEL].astype(str).to_numpy()
        batches = train.obs[BATCH].astype(str).to_numpy() if BATCH in train.obs else np.full(len(labels), "none")
        self.classes_, self.batches_ = np.unique(labels), np.unique(batches)
        if len(self.classes_) < 2:
            raise NotApplicable(
                f"scDiff's classifier needs at least two cell types in the training cells, got {len(self.classes_)}"
            )
        self.genes_ = np.asarray(train.var_names)
        self.n_genes_used = len(self.genes_)

        device = resolve_device(self.param("device"))
        self.device = str(device)
        X = torch.from_numpy(log1p_cp10k(train.X).toarray())  # dense in host memory, minibatches moved (as upstream)
        cell_type = torch.from_numpy(_codes(labels, self.classes_))
        batch = torch.from_numpy(_codes(batches, self.batches_))
        # query_mode "seen": the (cell type, batch) pairs of the training cells, the classifier's candidates
        self.candidates_ = torch.unique(torch.stack([cell_type, batch], dim=1), dim=0)

        arch = {k: self.param(k) for k in ARCHITECTURE}
        self.model_ = ScDiffDenoiser(len(self.genes_), len(self.classes_), len(self.batches_), **arch).to(device)
        self.diffusion_ = GaussianDiffusion(
            self.param("timesteps"), self.param("linear_start"), self.param("linear_end")
        ).to(device)
        bs = int(self.param("batch_size"))
        lr = bs * float(self.param("base_learning_rate"))  # main.py: accumulate (1) x GPUs (1) x batch size x base
        opt = torch.optim.AdamW(self.model_.parameters(), lr=lr, weight_decay=float(self.param("weight_decay")))

        n, losses, steps, epochs = len(X), [], 0, int(self.param("max_epochs"))
        started = time.perf_counter()
        self.model_.train()
        for epoch in range(epochs):
            order = torch.randperm(n)
            total = 0.0
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                x0, ct, b = X[idx].to(device), cell_type[idx].to(device), batch[idx].to(device)
                t = torch.randint(0, self.diffusion_.timesteps, (len(idx),), device=device)
                mask = self.model_.random_mask(x0)
                loss = x0_loss(self.model_(x0 * ~mask, self.diffusion_.q_sample(x0, t), t, ct, b), x0)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                steps += 1
            losses.append(total / n)
            if (epoch + 1) % max(1, epochs // 20) == 0 or epoch + 1 == epochs:  # progress: 20 lines in the job log
                print(
                    f"scdiff: epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}, {time.perf_counter() - started:.0f} s"
                )
        self.extra = {
            "implementation": "this project's re-implementation (upstream scDiff cannot be installed here)",
            "initialisation": "random initialisation (seeded); scDiff's annotation trains from scratch",
            "n_train_cells": n,
            "n_validation_cells_not_trained_on": int((~keep).sum()),
            "n_types": len(self.classes_),
            "n_batches": len(self.batches_),
            "n_candidates": len(self.candidates_),
            "learning_rate": lr,
            "epochs": len(losses),
            "steps": steps,
            "loss_first_epoch": losses[0] if losses else None,
            "loss_last_epoch": losses[-1] if losses else None,
            "time_steps": uniform_time_steps(self.diffusion_.timesteps, int(self.param("n_samples"))),
            "precision": "fp32",
        }
        return self

    @torch.no_grad()
    def predict(self, test):
        if not np.array_equal(np.asarray(test.var_names), self.genes_):
            raise ValueError("scDiff: the test cells' genes differ from the training cells' (same var_names needed)")
        device = torch.device(self.device)
        self.model_.eval()
        steps = self.extra["time_steps"]
        size = int(self.param("predict_batch_size"))
        X = log1p_cp10k(test.X)
        candidates = self.candidates_.to(device)
        picks = [
            classify(
                self.model_, self.diffusion_, torch.from_numpy(X[s : s + size].toarray()).to(device), candidates, steps
            )
            for s in range(0, X.shape[0], size)
        ]
        picked = torch.cat(picks).cpu().numpy() if picks else np.zeros(0, dtype=int)
        return self.classes_[self.candidates_[picked, 0].numpy() - 1]

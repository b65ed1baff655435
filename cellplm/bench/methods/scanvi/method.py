"""scANVI (scvi-tools): an SCVI model on train + test counts, then SCANVI with the test cells unlabelled."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import scvi

from ....keys import BATCH, LABEL
from ...normalise import select_hvg
from ..base import Annotator

UNLABELLED = "__unlabelled__"


class SCANVIAnnotator(Annotator):
    packages = ("scvi-tools", "torch")
    transductive = True

    def fit(self, train, solution=None, unlabelled=None):
        import torch

        test = unlabelled
        p = self.param
        scvi.settings.seed = self.seed
        genes = select_hvg(train, p("n_hvg"))
        self.n_genes_used = int(genes.sum())
        labels = np.concatenate([train.obs[LABEL].astype(str), np.full(test.n_obs, UNLABELLED)])
        batches = np.concatenate([train.obs[BATCH].astype(str), test.obs[BATCH].astype(str)])
        joint = ad.AnnData(
            sp.vstack([train.X[:, genes], test.X[:, genes]], format="csr"),
            obs=pd.DataFrame(
                {"label": labels, "batch": batches}, index=np.concatenate([train.obs_names, test.obs_names])
            ),
        )
        accelerator = "gpu" if torch.cuda.is_available() and p("use_gpu") else "cpu"
        self.device = "cuda" if accelerator == "gpu" else "cpu"
        scvi.model.SCVI.setup_anndata(joint, batch_key="batch", labels_key="label")
        vae = scvi.model.SCVI(joint, n_latent=p("n_latent"), n_layers=p("n_layers"))
        vae.train(
            max_epochs=p("scvi_epochs"),
            accelerator=accelerator,
            enable_progress_bar=True,
            early_stopping=p("early_stopping"),
        )
        model = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category=UNLABELLED)
        model.train(
            max_epochs=p("scanvi_epochs"),
            n_samples_per_label=p("n_samples_per_label"),
            accelerator=accelerator,
            enable_progress_bar=True,
        )
        self.model_, self.joint_ = model, joint
        self.extra = {"scvi_epochs": p("scvi_epochs"), "scanvi_epochs": p("scanvi_epochs")}
        return self

    def predict(self, test):
        query = self.joint_[test.obs_names]
        return np.asarray(self.model_.predict(query), dtype=object)

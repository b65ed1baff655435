"""scVI latent space (scvi-tools): a variational autoencoder of the counts with the batch as a covariate, fitted
on the cells it embeds (no labels)."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import scipy.sparse as sp

import scvi

from ....keys import BATCH
from ...normalise import select_hvg
from ..base import Embedder


class SCVIEmbedder(Embedder):
    """``SCVI.get_latent_representation()`` (the posterior mean) of the highly variable genes' raw counts."""

    packages = ("scvi-tools", "torch")

    def embed(self, cells):
        import torch

        p = self.param
        scvi.settings.seed = self.seed
        genes = select_hvg(cells, int(p("n_hvg")))  # seurat flavour on log1p(CP10k) of all the cells
        self.n_genes_used = int(genes.sum())
        data = ad.AnnData(
            sp.csr_matrix(cells.X[:, genes]),
            obs=pd.DataFrame({BATCH: cells.obs[BATCH].to_numpy()}, index=cells.obs_names),
        )
        gpu = bool(p("use_gpu")) and torch.cuda.is_available()
        self.device = "cuda" if gpu else "cpu"
        scvi.model.SCVI.setup_anndata(data, batch_key=BATCH)
        model = scvi.model.SCVI(
            data, n_latent=int(p("n_latent")), n_layers=int(p("n_layers")), gene_likelihood=p("gene_likelihood")
        )
        model.train(
            max_epochs=p("max_epochs"), accelerator="gpu" if gpu else "cpu", enable_progress_bar=bool(p("progress"))
        )
        self.extra = {
            "n_hvg": self.n_genes_used,
            "hvg_flavor": "seurat",
            "n_latent": int(p("n_latent")),
            "n_layers": int(p("n_layers")),
            "gene_likelihood": p("gene_likelihood"),
            "max_epochs": p("max_epochs"),
            "epochs_run": len(model.history["elbo_train"]),
            "n_batches": int(data.obs[BATCH].nunique()),
        }
        return model.get_latent_representation()  # (n_cells, n_latent) float32

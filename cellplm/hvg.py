"""Highly variable genes: one function for every caller, the flavour and its options as parameters.

scanpy (and, for ``flavor="seurat_v3"``, scikit-misc) is imported only when genes are actually selected, so
embedding, and fine-tuning on data with no more genes than ``n_hvg`` (or with ``n_hvg=0``), never load it.
"""

from __future__ import annotations

import numpy as np


def highly_variable_genes(data, n_top: int | None = None, flavor: str = "seurat", **options) -> np.ndarray:
    """Boolean mask over the genes (columns) of ``data`` (an AnnData or a cells x genes matrix): scanpy's
    ``highly_variable_genes`` with ``flavor`` and ``options`` (e.g. ``min_mean``, ``max_disp``, ``batch_key``).

    ``n_top``: the number of genes to keep (None: scanpy's cut-offs decide); ``n_top`` at least the number of genes
    keeps them all without calling scanpy. ``data`` is not modified. ``"seurat_v3"`` expects raw counts, the
    other flavours log-normalised values.
    """
    n_genes = data.shape[1]
    if n_top is not None and n_top >= n_genes:
        return np.ones(n_genes, dtype=bool)
    try:
        import scanpy as sc
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "selecting highly variable genes needs scanpy and scikit-misc (pip install "
            "'cellplm-bench[hvg]'), or select none with n_hvg=0"
        ) from None
    import anndata as ad

    adata = data if isinstance(data, ad.AnnData) else ad.AnnData(data)
    if n_top is not None:
        options["n_top_genes"] = int(n_top)
    table = sc.pp.highly_variable_genes(adata, flavor=flavor, inplace=False, **options)
    return table["highly_variable"].to_numpy()

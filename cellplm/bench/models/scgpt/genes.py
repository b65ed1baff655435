"""Genes for scGPT: symbols of the columns, raw counts, the match against the scGPT vocabulary (by symbol) with its
coverage check, and the highly variable genes among the matched ones."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .... import genes as genes_
from ....genes import ensembl_fraction, ensembl_to_symbols
from ....hvg import highly_variable_genes
from ...errors import InputError
from .tokenizer import SPECIAL_TOKENS, quiet_scgpt

SYMBOL_COLUMNS = ("feature_name", "gene_symbols", "gene_symbol", "gene_name", "symbol", "gene_names")


def gene_symbols(adata) -> tuple[np.ndarray, str]:
    """Gene symbols of ``adata``'s columns, and where they came from.

    ``var_names`` when they are symbols; for Ensembl ids a symbol column of ``var`` (CELLxGENE's
    ``feature_name`` and the like) or, failing that, the GENCODE v44 table that CellTypist ships (offline).
    Unmapped ids give an empty string.
    """
    names = np.asarray(adata.var_names, dtype=object).astype(str)
    if ensembl_fraction(names) <= 0.5:
        return names, "var_names (symbols)"
    for col in SYMBOL_COLUMNS:
        if col in adata.var.columns and ensembl_fraction(adata.var[col].astype(str)) < 0.5:
            return adata.var[col].astype(str).to_numpy(dtype=object), f"var['{col}']"
    return ensembl_to_symbols(names), "Ensembl ids mapped to symbols with GENCODE v44 (CellTypist's table)"


def counts_of(adata, source: str) -> sp.csr_matrix:
    """Raw counts (``layers['counts']`` if present, else X) as CSR float32; refuses negative values."""
    X = adata.layers["counts"] if "counts" in adata.layers else adata.X
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.nnz and X.data.min() < 0:
        raise InputError(source, "negative values where raw counts are required (is X scaled?)")
    return X


def match_vocabulary(symbols: np.ndarray, counts: sp.csr_matrix, vocab) -> tuple[np.ndarray, dict]:
    """Columns whose symbol is in ``vocab`` (the first of duplicated symbols) and the coverage they give."""
    seen: set[str] = set()
    keep = np.zeros(len(symbols), dtype=bool)
    for j, s in enumerate(symbols):
        if s and s not in seen and s not in SPECIAL_TOKENS and s in vocab:
            keep[j] = True
            seen.add(s)
    totals = np.asarray(counts.sum(axis=0)).ravel()
    coverage = {
        "n_genes": int(len(symbols)),
        "n_in_vocabulary": int(keep.sum()),
        "gene_share": float(keep.mean()) if len(symbols) else 0.0,
        "count_share": genes_.count_share(totals, keep),
        "vocabulary_size": int(len(vocab)),
    }
    return keep, coverage


def require_coverage(coverage: dict, source: str, min_gene_share: float, min_count_share: float) -> None:
    """Raise :class:`NotApplicable` when too little of the data lands in the scGPT vocabulary (``coverage``: see
    :func:`match_vocabulary`)."""
    genes_.require_coverage(
        source,
        n_matched=coverage["n_in_vocabulary"],
        gene_share=coverage["gene_share"],
        count_share=coverage["count_share"],
        min_gene_share=min_gene_share,
        min_count_share=min_count_share,
        none_matched=(
            f"none of its {coverage['n_genes']} genes is in the scGPT vocabulary "
            f"({coverage['vocabulary_size']} tokens; genes are matched by symbol)"
        ),
        describe=(
            f"{coverage['n_in_vocabulary']}/{coverage['n_genes']} genes ({coverage['gene_share']:.1%}) "
            f"and {coverage['count_share']:.1%} of counts in the scGPT vocabulary"
        ),
    )


def select_hvg(counts: sp.csr_matrix, n_hvg: int | None) -> tuple[np.ndarray, dict]:
    """The ``n_hvg`` most variable genes by scanpy's seurat_v3 on raw counts (the scGPT Preprocessor's HVG step)."""
    n = counts.shape[1]
    if n_hvg is None or n_hvg >= n:
        return np.ones(n, dtype=bool), {"hvg": "none (all genes in the vocabulary)", "n_selected": n}
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(counts)
    flavor = "seurat_v3 (scanpy) on the training counts"
    with quiet_scgpt():
        try:
            mask = highly_variable_genes(tmp, n_hvg, flavor="seurat_v3")
        except ValueError as e:  # skmisc's loess fails on very few genes ("near singularities")
            sc.pp.normalize_total(tmp, target_sum=1e4)
            sc.pp.log1p(tmp)
            mask = highly_variable_genes(tmp, n_hvg, flavor="seurat")
            flavor = f"seurat (scanpy) on log1p(CP10k) training counts, because seurat_v3 failed: {str(e)[:80]}"
    return mask, {"hvg": f"{flavor}; {int(n_hvg)} of {n} genes in the vocabulary", "n_selected": int(mask.sum())}

"""Canonical preprocessing: layout, count recovery, filtering, and one-line errors on bad input."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cellplm.bench.errors import InputError
from cellplm.bench.data.preprocess import DatasetSpec, preprocess
from cellplm.bench.data.catalog import builtin_path
from conftest import make_counts_adata


def spec(**kw):
    kw.setdefault("min_cells_per_type", 0)
    return DatasetSpec("toy", **kw)


def test_canonical_layout(counts_adata, write):
    out, rep = preprocess(write(counts_adata), spec())
    assert sp.isspmatrix_csr(out.X) and out.X.dtype == np.float32
    assert (out.layers["counts"] != out.X).nnz == 0
    assert list(out.obs.columns) == ["cell_type", "batch"]
    assert out.uns["batch_key"] == spec().batch_key  # which column obs['batch'] is (CellPLM's sentences say it)
    assert out.var_names.is_unique and "ensembl_id" in out.var
    assert out.var.loc["CD3E", "ensembl_id"] == "ENSG00000198851"  # GENCODE v44 via CellTypist
    assert rep.counts_from == "X" and rep.n_cell_types == 3


def test_pbmc68k_counts_recovered_from_raw():
    out, rep = preprocess(
        builtin_path("pbmc68k_reduced"), DatasetSpec("pbmc68k", label_key="bulk_labels", batch_key=None)
    )
    assert rep.counts_from.startswith("raw/X (recovered")
    assert np.array_equal(out.X.data, np.round(out.X.data)) and out.X.data.min() >= 1
    # the 8-cell type is dropped (<= 10 cells), 692 of 700 cells remain
    assert rep.dropped_rare_types == {"CD4+/CD45RA+/CD25- Naive T": 8}
    assert out.n_obs == 692 and out.obs["batch"].unique().tolist() == ["pbmc68k"] and out.uns["batch_key"] == ""
    # first cell: log1p(count / n_counts * 1e4) reproduces the stored value
    raw = ad.read_h5ad(builtin_path("pbmc68k_reduced")).raw
    cell = out.obs_names[0]
    i = list(raw.obs_names if hasattr(raw, "obs_names") else out.obs_names).index(cell)
    stored = raw.X[i].toarray().ravel()
    n_counts = ad.read_h5ad(builtin_path("pbmc68k_reduced")).obs.loc[cell, "n_counts"]
    assert np.allclose(np.log1p(out.X[0].toarray().ravel() / n_counts * 1e4), stored, atol=0.05)


def test_counts_layer_preferred_over_lognorm_X(counts_adata, write):
    counts = counts_adata.X.copy()
    counts_adata.layers["counts"] = counts
    X = counts.copy()
    X.data = np.log1p(X.data / 3.3)
    counts_adata.X = X
    out, rep = preprocess(write(counts_adata), spec())
    assert rep.counts_from == "layers/counts"
    assert (out.X != counts).nnz == 0


def test_lognorm_without_counts_is_refused(counts_adata, write):
    X = counts_adata.X.copy()
    X.data = np.log1p(X.data / 3.3)
    counts_adata.X = X
    with pytest.raises(InputError, match="no raw counts found.*log-normalised values cannot be used as counts"):
        preprocess(write(counts_adata), spec())


@pytest.mark.parametrize("bad, message", [(np.nan, "contains NaN"), (-1.0, "contains negative values")])
def test_nan_and_negative_values(counts_adata, write, bad, message):
    X = counts_adata.X.toarray()
    X[0, 0] = bad
    counts_adata.X = sp.csr_matrix(X)
    with pytest.raises(InputError, match=message) as e:
        preprocess(write(counts_adata), spec())
    assert "\n" not in str(e.value) and "input.h5ad" in str(e.value)


def test_missing_label_column(counts_adata, write):
    with pytest.raises(
        InputError, match=r"input.h5ad: label column 'celltype' not in obs \(columns: cell_type, batch\)"
    ):
        preprocess(write(counts_adata), spec(label_key="celltype"))


def test_ensembl_ids_where_symbols_expected(write):
    a = make_counts_adata(genes=["ENSG00000198851", "ENSG00000010610", "ENSG00000153563"])
    with pytest.raises(InputError, match="holds Ensembl ids .* where gene symbols are expected"):
        preprocess(write(a), spec())


def test_symbols_where_ensembl_expected(counts_adata, write):
    counts_adata.var["gene_ids"] = counts_adata.var_names
    with pytest.raises(InputError, match=r"var\['gene_ids'\] holds gene symbols .* where Ensembl ids are expected"):
        preprocess(write(counts_adata), spec(gene_ids="gene_ids"))


def test_duplicate_gene_and_cell_names(write):
    a = make_counts_adata(genes=["CD3E", "CD4", "CD4", "LYZ"])
    with pytest.raises(InputError, match="duplicate gene names"):
        preprocess(write(a, "genes.h5ad"), spec())
    out, rep = preprocess(write(a, "genes.h5ad"), spec(duplicate_genes="make_unique"))
    assert rep.duplicate_gene_names == 1 and out.var_names.is_unique
    b = make_counts_adata()
    b.obs_names = ["same"] * 2 + list(b.obs_names[2:])
    with pytest.raises(InputError, match="duplicate cell names in obs"):
        preprocess(write(b, "cells.h5ad"), spec())


def test_single_class_dataset(write):
    a = make_counts_adata(n_types=1)
    with pytest.raises(InputError, match="single-class dataset"):
        preprocess(write(a), spec())


def test_rare_types_dropped_as_published(write):
    a = make_counts_adata(n_cells=40, n_types=3)
    a.obs["cell_type"] = ["rare"] * 5 + ["common1"] * 20 + ["common2"] * 15
    out, rep = preprocess(write(a), spec(min_cells_per_type=10))
    assert rep.dropped_rare_types == {"rare": 5}
    assert set(out.obs["cell_type"]) == {"common1", "common2"} and out.n_obs == 35


def test_truncated_h5ad(counts_adata, write):
    path = write(counts_adata)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable h5ad file"):
        preprocess(path, spec())


def test_stored_split_kept(counts_adata, write):
    counts_adata.obs["split"] = np.where(np.arange(60) < 40, "train", np.where(np.arange(60) < 50, "valid", "test"))
    out, rep = preprocess(write(counts_adata), spec())
    assert rep.stored_split and out.obs["split"].tolist() == counts_adata.obs["split"].tolist()


def test_only_counts_matrix_is_read(counts_adata, write, monkeypatch):
    """Memory: only the matrix that holds the counts is loaded (not X and the layer and .raw)."""
    counts_adata.layers["counts"] = counts_adata.X.copy()
    X = counts_adata.X.copy()
    X.data = np.log1p(X.data)
    counts_adata.X = X
    counts_adata.raw = counts_adata.copy()
    from cellplm.bench.data import counts as counts_mod

    loaded = []
    original = counts_mod.read_matrix
    monkeypatch.setattr(counts_mod, "read_matrix", lambda f, loc: loaded.append(loc) or original(f, loc))
    preprocess(write(counts_adata), spec())
    assert loaded == ["layers/counts"]


def test_counts_in_raw_with_gene_columns_in_var(counts_adata, write):
    """CELLxGENE layout: normalised X, counts in .raw, Ensembl ids as var_names, symbols in var['feature_name']."""
    ids = [
        "ENSG00000198851",
        "ENSG00000010610",
        "ENSG00000153563",
        "ENSG00000156738",
        "ENSG00000170458",
        "ENSG00000090382",
        "ENSG00000105374",
        "ENSG00000115523",
        "ENSG00000163736",
        "ENSG00000203747",
        "ENSG00000168685",
        "ENSG00000126353",
    ]
    symbols = list(counts_adata.var_names)
    counts_adata.var_names = ids
    counts_adata.raw = counts_adata.copy()
    X = counts_adata.X.copy()
    X.data = np.log1p(X.data / 2.7)
    counts_adata.X = X
    counts_adata.var["feature_name"] = symbols
    out, rep = preprocess(write(counts_adata), spec(counts="raw", gene_symbols="feature_name", gene_ids="var_names"))
    assert rep.counts_from == "raw/X" and list(out.var_names) == symbols
    assert out.var["ensembl_id"].tolist() == ids

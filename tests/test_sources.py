"""Data sources: the seeded synthetic generator, CellTypist's unlabelled corpus, archive members."""

import subprocess
import sys
import tarfile

import numpy as np
import pytest

from cellplm.bench.errors import InputError
from cellplm.bench.data.sources import celltypist_sample, extract_members, synthetic


def test_synthetic_is_seeded_counts_with_types_and_batches():
    a = synthetic(n_cells=500, n_genes=300, n_cell_types=4, n_batches=2, seed=3, chunk=128)
    b = synthetic(n_cells=500, n_genes=300, n_cell_types=4, n_batches=2, seed=3, chunk=500)
    assert (a.X != b.X).nnz == 0  # chunking does not change the result
    assert np.array_equal(a.X.data, np.round(a.X.data))
    assert a.obs["cell_type"].nunique() == 4 and a.obs["batch"].nunique() == 2
    assert 1500 < np.asarray(a.X.sum(axis=1)).mean() < 2600  # about 2,000 counts per cell
    assert a.var_names.is_unique
    c = synthetic(n_cells=500, n_genes=300, n_cell_types=4, n_batches=2, seed=4)
    assert (a.X != c.X).nnz > 0


def test_celltypist_sample_corpus():
    a = celltypist_sample()
    assert a.shape == (559, 32786)
    assert np.array_equal(a.X.data, np.round(a.X.data)) and a.X.data.min() > 0
    assert (a.var["ensembl_id"] != "").mean() > 0.5


def test_extract_members_in_one_pass(tmp_path):
    (tmp_path / "inner").mkdir()
    for name in ("Immune_sub.h5ad", "HLCA_zstd_sub.h5ad", "other.ckpt"):
        (tmp_path / "inner" / name).write_bytes(name.encode())
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "inner", arcname="reproduce")
    extract_members(tmp_path / "a.tar.gz", ["Immune_sub.h5ad", "HLCA_zstd_sub.h5ad"], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["HLCA_zstd_sub.h5ad", "Immune_sub.h5ad"]
    assert (tmp_path / "out" / "Immune_sub.h5ad").read_bytes() == b"Immune_sub.h5ad"
    with pytest.raises(InputError, match="archive has no file named 'Brain_processed.h5ad'"):
        extract_members(tmp_path / "a.tar.gz", ["Immune_sub.h5ad", "Brain_processed.h5ad"], tmp_path / "none")
    assert not (tmp_path / "none").exists() and not (tmp_path / ".none.partial").exists()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes((tmp_path / "a.tar.gz").read_bytes()[:-40])  # a truncated download
    with pytest.raises(InputError, match="truncated or corrupt|has no file named"):
        extract_members(cut, ["other.ckpt", "HLCA_zstd_sub.h5ad", "Immune_sub.h5ad"], tmp_path / "cut")
    assert not (tmp_path / "cut").exists()


def test_zstd_compressed_h5ad_is_read(tmp_path):
    """scDiff's HLCA_zstd_sub.h5ad: HDF5 with the Zstd filter, readable once hdf5plugin is loaded (bench.preprocess)."""
    import anndata as ad
    import h5py
    import hdf5plugin

    from cellplm.bench.data.preprocess import DatasetSpec, preprocess
    from conftest import make_counts_adata

    a = make_counts_adata(n_cells=80)
    a.write_h5ad(tmp_path / "zstd.h5ad", compression=hdf5plugin.Zstd(clevel=3))
    with h5py.File(tmp_path / "zstd.h5ad") as f:  # really Zstd: HDF5 filter id 32015
        assert "32015" in f["X/data"]._filters
    plain = subprocess.run(
        [sys.executable, "-c", "import h5py, sys; h5py.File(sys.argv[1])['X/data'][:]", str(tmp_path / "zstd.h5ad")],
        capture_output=True,
        text=True,
    )
    assert plain.returncode != 0 and "read data" in plain.stderr  # h5py alone cannot read it (no Zstd filter)
    out, report = preprocess(tmp_path / "zstd.h5ad", DatasetSpec("zstd", min_cells_per_type=0))
    assert out.shape == (80, a.n_vars) and report.counts_from == "X"
    assert (out.X != ad.read_h5ad(tmp_path / "zstd.h5ad").X).nnz == 0


def test_synthetic_spatial_is_seeded_clustered_and_in_vocabulary():
    from cellplm.bench.data.sources import synthetic_spatial
    from cellplm.model.config import released_config

    a = synthetic_spatial(n_tissues=2, fovs_per_tissue=2, cells_per_fov=200, n_genes=300, n_cell_types=4, seed=1)
    b = synthetic_spatial(n_tissues=2, fovs_per_tissue=2, cells_per_fov=200, n_genes=300, n_cell_types=4, seed=1)
    assert a.shape == (800, 300) and (a.X != b.X).nnz == 0
    assert np.array_equal(a.obsm["spatial"], b.obsm["spatial"]) and a.obsm["spatial"].shape == (800, 2)
    assert np.array_equal(a.X.data, np.round(a.X.data)) and a.var_names.is_unique
    assert a.obs["fov"].nunique() == 4 and (a.obs["batch"] == a.obs["fov"]).all()
    vocab = set(released_config().gene_list)
    assert set(a.var["ensembl_id"]) <= vocab
    # spatial clustering: a cell's nearest neighbour (same FOV) shares its type far more often than chance
    same = []
    for _, idx in a.obs.groupby("fov", observed=True).indices.items():
        xy = a.obsm["spatial"][idx]
        d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        t = a.obs["cell_type"].to_numpy()[idx]
        same.append(t == t[d.argmin(1)])
    assert np.concatenate(same).mean() > 0.6
    c = synthetic_spatial(n_tissues=2, fovs_per_tissue=2, cells_per_fov=200, n_genes=300, n_cell_types=4, seed=2)
    assert not np.array_equal(a.obsm["spatial"], c.obsm["spatial"])


def test_corpus_items_have_no_labels_and_only_cells_train_in_every_split(tmp_path):
    from cellplm.bench.data.sources import corpus_item, synthetic

    a = synthetic(n_cells=60, n_genes=50, n_cell_types=2, n_batches=2, seed=0)
    a[:40].write_h5ad(tmp_path / "published.h5ad")  # train of split 1: cells 0-39
    a[20:].write_h5ad(tmp_path / "holdout.h5ad")  # train of split 2: cells 20-59
    item = corpus_item("train__toy", [str(tmp_path / "published.h5ad"), str(tmp_path / "holdout.h5ad")])
    assert list(item.obs_names) == list(a.obs_names[20:40])  # test cells of either split are left out
    assert list(item.obs.columns) == ["batch"] and item.obs["batch"].str.startswith("toy/").all()
    assert (item.X != a[20:40].X).nnz == 0
    spatial = corpus_item(
        "synthetic_spatial",
        spec={"enabled": True, "n_tissues": 1, "fovs_per_tissue": 2, "cells_per_fov": 20, "n_genes": 40},
    )
    assert spatial.obs["batch"].nunique() == 2 and spatial.obsm["spatial"].shape == (40, 2)
    assert "cell_type" not in spatial.obs
    with pytest.raises(InputError, match="unknown corpus item"):
        corpus_item("everything")

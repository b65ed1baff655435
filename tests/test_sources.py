"""Data sources: the seeded synthetic generator, CellTypist's unlabelled corpus, archive members."""

import tarfile

import numpy as np
import pytest

from cellplm.bench.errors import InputError
from cellplm.bench.sources import celltypist_sample, extract_member, synthetic


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


def test_extract_member(tmp_path):
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "Immune_sub.h5ad").write_bytes(b"payload")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "inner", arcname="reproduce")
    extract_member(tmp_path / "a.tar.gz", "Immune_sub.h5ad", tmp_path / "out.h5ad")
    assert (tmp_path / "out.h5ad").read_bytes() == b"payload"
    with pytest.raises(InputError, match="archive has no file named 'HLCA_zstd_sub.h5ad'"):
        extract_member(tmp_path / "a.tar.gz", "HLCA_zstd_sub.h5ad", tmp_path / "none.h5ad")
    assert not (tmp_path / "none.h5ad").exists()

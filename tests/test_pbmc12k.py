"""PBMC12K assembly (scvi.data.pbmc_dataset on our downloaded files) on a tiny fake of the four files."""

import io
import tarfile

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from cellplm.bench.io import read_h5ad
from cellplm.bench.data.preprocess import DatasetSpec, preprocess
from cellplm.bench.data.sources import PBMC12K_LAYOUT, assemble_pbmc12k

pytest.importorskip("scvi")

GENES = [("ENSG00000198851", "CD3E"), ("ENSG00000010610", "CD4"), ("ENSG00000090382", "LYZ"),
         ("ENSG00000105374", "NKG7"), ("ENSG00000163736", "PPBP")]


def tenx_tarball(path, barcodes, seed):
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(rng.poisson(3, size=(len(GENES), len(barcodes))).astype(np.float32))
    files = {
        "filtered_gene_bc_matrices/GRCh38/genes.tsv": "".join(f"{i}\t{s}\n" for i, s in GENES).encode(),
        "filtered_gene_bc_matrices/GRCh38/barcodes.tsv": "".join(f"{b}\n" for b in barcodes).encode(),
    }
    buf = io.BytesIO()
    scipy.io.mmwrite(buf, counts)
    files["filtered_gene_bc_matrices/GRCh38/matrix.mtx"] = buf.getvalue()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_assemble_pbmc12k(tmp_path):
    b8 = [f"AAAC{i:04d}-1" for i in range(12)]
    b4 = [f"GGGT{i:04d}-1" for i in range(8)]
    tenx_tarball(tmp_path / "pbmc8k_filtered_gene_bc_matrices.tar.gz", b8, 0)
    tenx_tarball(tmp_path / "pbmc4k_filtered_gene_bc_matrices.tar.gz", b4, 1)
    pd.DataFrame({"ENSG": [g for g, _ in GENES[:4]]}).to_csv(tmp_path / "gene_info.csv", index=False)
    barcodes = b8 + b4
    n = len(barcodes)
    clusters = np.arange(n) % 3
    meta = {
        "barcodes": pd.DataFrame(index=barcodes),
        "design": pd.DataFrame(np.zeros((n, 1))), "raw_qc": pd.DataFrame(np.zeros((n, 1))),
        "normalized_qc": pd.DataFrame(np.zeros((n, 1))), "qc_pc": np.zeros((n, 1)),
        "clusters": clusters, "list_clusters": ["B cells", "CD4 T cells", "NK cells"],
    }
    pd.to_pickle(meta, tmp_path / "pbmc_metadata.pickle")
    files = {name: str(tmp_path / name) for name in PBMC12K_LAYOUT}
    assemble_pbmc12k(files, tmp_path / "pbmc12k.h5ad")
    raw = read_h5ad(tmp_path / "pbmc12k.h5ad")
    assert raw.n_obs == n and raw.n_vars == 4  # genes limited to gene_info.csv, as scVI does
    assert set(raw.obs["batch"]) == {"0", "1"}
    spec = DatasetSpec("pbmc12k", label_key="str_labels", batch_key="batch", gene_symbols="gene_symbols",
                       gene_ids="gene_ids", duplicate_genes="make_unique", min_cells_per_type=0)
    out, rep = preprocess(tmp_path / "pbmc12k.h5ad", spec)
    assert list(out.var_names) == ["CD3E", "CD4", "LYZ", "NKG7"]
    assert out.var["ensembl_id"].tolist() == [g for g, _ in GENES[:4]]
    assert out.obs["cell_type"].value_counts().to_dict() == {"B cells": 7, "CD4 T cells": 7, "NK cells": 6}

"""PBMC12K: assembly (scvi.data.pbmc_dataset on our downloaded files) on a tiny fake of the four files, and the
published member read with the Ensembl ids scDiff kept."""

import io
import tarfile

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
import yaml

from cellplm.bench.io import read_h5ad
from cellplm.bench.data.preprocess import DatasetSpec, preprocess
from cellplm.bench.data.sources import PBMC12K_LAYOUT, assemble_pbmc12k
from cellplm.genes import symbols_to_ensembl
from conftest import ROOT, make_counts_adata

GENES = [
    ("ENSG00000198851", "CD3E"),
    ("ENSG00000010610", "CD4"),
    ("ENSG00000090382", "LYZ"),
    ("ENSG00000105374", "NKG7"),
    ("ENSG00000163736", "PPBP"),
]


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
    pytest.importorskip("scvi")
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
        "design": pd.DataFrame(np.zeros((n, 1))),
        "raw_qc": pd.DataFrame(np.zeros((n, 1))),
        "normalized_qc": pd.DataFrame(np.zeros((n, 1))),
        "qc_pc": np.zeros((n, 1)),
        "clusters": clusters,
        "list_clusters": ["B cells", "CD4 T cells", "NK cells"],
    }
    pd.to_pickle(meta, tmp_path / "pbmc_metadata.pickle")
    files = {name: str(tmp_path / name) for name in PBMC12K_LAYOUT}
    assemble_pbmc12k(files, tmp_path / "pbmc12k.h5ad")
    raw = read_h5ad(tmp_path / "pbmc12k.h5ad")
    assert raw.n_obs == n and raw.n_vars == 4  # genes limited to gene_info.csv, as scVI does
    assert set(raw.obs["batch"]) == {"0", "1"}
    spec = DatasetSpec(
        "pbmc12k",
        label_key="str_labels",
        batch_key="batch",
        gene_symbols="gene_symbols",
        gene_ids="gene_ids",
        duplicate_genes="make_unique",
        min_cells_per_type=0,
    )
    out, rep = preprocess(tmp_path / "pbmc12k.h5ad", spec)
    assert list(out.var_names) == ["CD3E", "CD4", "LYZ", "NKG7"]
    assert out.var["ensembl_id"].tolist() == [g for g, _ in GENES[:4]]
    assert out.obs["cell_type"].value_counts().to_dict() == {"B cells": 7, "CD4 T cells": 7, "NK cells": 6}


# Genes of the 10x GRCh38 reference (Ensembl 84) whose symbol GENCODE v44 maps to another id or to none:
# SOD2 and MATR3 now have other ids; the second MATR3 (made unique as MATR3-1) and the clone name RP11-34P13.7
# map to nothing.
PUBLISHED_GENES = [
    ("CD3E", "ENSG00000198851"),
    ("SOD2", "ENSG00000112096"),
    ("MATR3", "ENSG00000015479"),
    ("MATR3-1", "ENSG00000280987"),
    ("RP11-34P13.7", "ENSG00000238009"),
    ("LYZ", "ENSG00000090382"),
]


def test_published_member_keeps_scdiffs_ensembl_ids(tmp_path):
    """A file shaped like PBMC12K_processed.h5ad (scdiff/data/pbmc12k.py, _read: var re-indexed by gene_symbols,
    made unique, the 10x ids kept in var['ensg']; log1p(CP10k) X, counts in layers['counts']) read with the
    config's pbmc12k entry: var['ensembl_id'] is var['ensg'], not the GENCODE mapping of the symbols."""
    symbols, ensg = map(list, zip(*PUBLISHED_GENES))
    gencode = symbols_to_ensembl(symbols)
    assert gencode[1] not in ("", ensg[1]) and gencode[2] not in ("", ensg[2]) and gencode[3] == gencode[4] == ""
    a = make_counts_adata(n_cells=30, genes=symbols)
    a.layers["counts"] = a.X.copy()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray() / a.X.sum(1).A * 1e4), dtype=np.float32)
    a.var["ensg"] = ensg
    a.obs = a.obs.rename(columns={"cell_type": "str_labels"})
    a.write_h5ad(tmp_path / "PBMC12K_processed.h5ad")
    entry = yaml.safe_load((ROOT / "config/config.yaml").read_text())["datasets"]["pbmc12k"]
    assert entry["gene_ids"] == "ensg"
    out, rep = preprocess(tmp_path / "PBMC12K_processed.h5ad", DatasetSpec.from_config("pbmc12k", entry))
    assert rep.counts_from == "layers/counts" and list(out.var_names) == symbols
    assert out.var["ensembl_id"].tolist() == ensg and rep.ensembl_mapped_fraction == 1.0

"""Where each dataset's source h5ad comes from: remote files, data shipped inside packages, or a generator.

Remote datasets are fetched by :mod:`.download`; this module turns what was fetched (or what ships with an
installed package) into one source h5ad that :mod:`.preprocess` reads.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from .errors import InputError
from .io import atomic_path, write_h5ad
from .workflow import package_file


def celltypist_sample() -> ad.AnnData:
    """CellTypist's 559 unlabelled immune cells (raw counts, 32,786 gene symbols) as AnnData.

    Useful as an unlabelled corpus; ``var['ensembl_id']`` is filled from the GENCODE table.
    """
    from .genes import symbols_to_ensembl

    path = package_file("celltypist", "data/samples/sample_cell_by_gene.csv")
    df = pd.read_csv(path, index_col=0)
    adata = ad.AnnData(sp.csr_matrix(df.to_numpy(dtype=np.float32)),
                       obs=pd.DataFrame(index=df.index.astype(str)), var=pd.DataFrame(index=df.columns.astype(str)))
    adata.var["ensembl_id"] = symbols_to_ensembl(adata.var_names)
    adata.uns["source"] = "celltypist.samples (sample_cell_by_gene.csv)"
    return adata


def synthetic(
    n_cells: int = 2000,
    n_genes: int = 2000,
    n_cell_types: int = 6,
    n_batches: int = 3,
    mean_counts: float = 2000.0,
    markers_per_type: int = 30,
    marker_fold: float = 2.5,
    batch_effect: float = 0.3,
    seed: int = 0,
    chunk: int = 2000,
    gene_symbols=None,
    progress: bool = False,
) -> ad.AnnData:
    """Seeded synthetic counts: cell types with marker programs, multiplicative batch effects, Poisson noise.

    Memory grows with the number of non-zeros only: cells are generated in chunks straight into CSR.
    Gene names are real GENCODE symbols when celltypist is installed (so vocabulary matching is realistic),
    otherwise ``GENE00001``-style names.
    """
    rng = np.random.default_rng(seed)
    if gene_symbols is None:
        gene_symbols = _default_symbols(n_genes, rng)
    base = rng.gamma(0.3, 1.0, size=n_genes)  # skewed baseline expression
    programs = np.tile(base, (n_cell_types, 1))
    for t in range(n_cell_types):
        markers = rng.choice(n_genes, size=min(markers_per_type, n_genes), replace=False)
        programs[t, markers] *= rng.uniform(1.0, marker_fold, size=markers.size)
    programs /= programs.sum(axis=1, keepdims=True)
    batch_scale = np.exp(rng.normal(0, batch_effect, size=(n_batches, n_genes)))
    cell_type = rng.integers(0, n_cell_types, size=n_cells)
    batch = rng.integers(0, n_batches, size=n_cells)
    size = rng.lognormal(np.log(mean_counts), 0.35, size=n_cells)
    pieces = []
    for start in tqdm(range(0, n_cells, chunk), desc="synthetic cells", disable=not progress, unit="chunk"):
        stop = min(start + chunk, n_cells)
        rates = programs[cell_type[start:stop]] * batch_scale[batch[start:stop]]
        rates *= (size[start:stop] / rates.sum(axis=1))[:, None]
        pieces.append(sp.csr_matrix(rng.poisson(rates).astype(np.float32)))
    X = sp.vstack(pieces, format="csr")
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type_{t}" for t in cell_type]),
         "batch": pd.Categorical([f"batch_{b}" for b in batch])},
        index=[f"cell_{i:07d}" for i in range(n_cells)],
    )
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=pd.Index(gene_symbols, dtype=str)))
    adata.uns["source"] = f"synthetic(seed={seed})"
    return adata


def _default_symbols(n_genes: int, rng) -> list[str]:
    try:
        from .genes import gencode_symbol_to_id

        symbols = sorted(gencode_symbol_to_id())
    except ModuleNotFoundError:
        symbols = []
    if len(symbols) >= n_genes:
        return sorted(rng.choice(symbols, size=n_genes, replace=False).tolist())
    return [f"GENE{i:05d}" for i in range(n_genes)]


def extract_member(archive, member_name: str, dest) -> None:
    """Stream the archive member whose file name is ``member_name`` to ``dest`` (atomically)."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise InputError(archive, f"not a readable tar archive ({e})") from None
    with tar:
        member = next((m for m in tar if m.isfile() and Path(m.name).name == member_name), None)
        if member is None:
            raise InputError(archive, f"archive has no file named {member_name!r}")
        src = tar.extractfile(member)
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, length=1 << 20)


# scvi-tools reads the PBMC 4k + 8k files from these names inside its save_path.
PBMC12K_LAYOUT = {
    "gene_info.csv": "gene_info_pbmc.csv",
    "pbmc_metadata.pickle": "pbmc_metadata.pickle",
    "pbmc8k_filtered_gene_bc_matrices.tar.gz": "pbmc8k/filtered_gene_bc_matrices.tar.gz",
    "pbmc4k_filtered_gene_bc_matrices.tar.gz": "pbmc4k/filtered_gene_bc_matrices.tar.gz",
}


def assemble_pbmc12k(files: dict[str, str], dest) -> None:
    """Build PBMC12K exactly as scDiff does (``scvi.data.pbmc_dataset``) from the four downloaded files.

    ``files`` maps the downloaded file names (keys of :data:`PBMC12K_LAYOUT`) to their paths. scvi-tools
    finds them in place and downloads nothing.
    """
    import scvi  # the scvi env provides it

    missing = sorted(set(PBMC12K_LAYOUT) - set(files))
    if missing:
        raise InputError(dest, f"PBMC12K needs the files {missing}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, rel in PBMC12K_LAYOUT.items():
            target = Path(tmp) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(Path(files[name]).resolve(), target)
        adata = scvi.data.pbmc_dataset(save_path=tmp, remove_extracted_data=True)
    adata.var["gene_ids"] = adata.var_names.astype(str)
    adata.obs["batch"] = adata.obs["batch"].astype(str)
    for key in list(adata.obsm):  # QC tables are not needed downstream
        del adata.obsm[key]
    adata.uns = {"source": "scvi.data.pbmc_dataset (10x pbmc4k + pbmc8k, scVI-data metadata)"}
    write_h5ad(adata, dest)

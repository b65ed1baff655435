"""Where each dataset's source h5ad comes from: remote files, data shipped inside packages, or a generator.

Remote datasets are fetched by :mod:`.download`; this module turns what was fetched (or what ships with an
installed package) into one source h5ad that :mod:`.preprocess` reads.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from ...keys import BATCH, LABEL
from ...sentence_policy import SPATIAL_KEY
from ..errors import InputError
from ..io import atomic_path, write_h5ad
from .catalog import package_file, remote_files


def celltypist_sample() -> ad.AnnData:
    """CellTypist's 559 unlabelled immune cells (raw counts, 32,786 gene symbols) as AnnData.

    Useful as an unlabelled corpus; ``var['ensembl_id']`` is filled from the GENCODE table.
    """
    from ...genes import symbols_to_ensembl

    path = package_file("celltypist", "data/samples/sample_cell_by_gene.csv")
    df = pd.read_csv(path, index_col=0)
    adata = ad.AnnData(
        sp.csr_matrix(df.to_numpy(dtype=np.float32)),
        obs=pd.DataFrame(index=df.index.astype(str)),
        var=pd.DataFrame(index=df.columns.astype(str)),
    )
    adata.var["ensembl_id"] = symbols_to_ensembl(adata.var_names)
    adata.uns["source"] = "celltypist.samples (sample_cell_by_gene.csv)"
    return adata


class SyntheticCounts:
    """The project's one seeded synthetic count generator (the workflow's ``synthetic`` source and every benchmark).

    Cell types with marker programs, multiplicative batch effects, log-normal library sizes and Poisson noise. All
    per-cell draws are made up front and the counts are drawn chunk by chunk (:meth:`chunks`), so memory grows with
    one chunk only and a large dataset can be streamed to disk; the first N cells of a stream are the same for any
    ``n_cells`` >= N only in their types and batches, so nested datasets are prefixes of one stream. Draws happen in
    one fixed order from one generator: :func:`synthetic` (= this, stacked) is bit-identical to what it always was.
    """

    def __init__(
        self,
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
    ):
        rng = self.rng = np.random.default_rng(seed)
        if gene_symbols is None:
            gene_symbols = _default_symbols(n_genes, rng)
        self.gene_symbols, self.n_cells, self.n_genes, self.chunk, self.seed = (
            list(gene_symbols),
            n_cells,
            n_genes,
            chunk,
            seed,
        )
        base = rng.gamma(0.3, 1.0, size=n_genes)  # skewed baseline expression
        programs = np.tile(base, (n_cell_types, 1))
        for t in range(n_cell_types):
            markers = rng.choice(n_genes, size=min(markers_per_type, n_genes), replace=False)
            programs[t, markers] *= rng.uniform(1.0, marker_fold, size=markers.size)
        programs /= programs.sum(axis=1, keepdims=True)
        self.programs = programs
        self.batch_scale = np.exp(rng.normal(0, batch_effect, size=(n_batches, n_genes)))
        self.cell_type = rng.integers(0, n_cell_types, size=n_cells)
        self.batch = rng.integers(0, n_batches, size=n_cells)
        self.size = rng.lognormal(np.log(mean_counts), 0.35, size=n_cells)
        self._next = 0

    def chunks(self, progress: bool = False):
        """CSR float32 blocks of ``chunk`` cells, in order (one pass: the counts come from the shared generator)."""
        if self._next:
            raise RuntimeError("SyntheticCounts.chunks() draws from one generator: iterate it once")
        for start in tqdm(
            range(0, self.n_cells, self.chunk), desc="synthetic cells", disable=not progress, unit="chunk"
        ):
            stop = min(start + self.chunk, self.n_cells)
            self._next = stop
            rates = self.programs[self.cell_type[start:stop]] * self.batch_scale[self.batch[start:stop]]
            rates *= (self.size[start:stop] / rates.sum(axis=1))[:, None]
            yield sp.csr_matrix(self.rng.poisson(rates).astype(np.float32))

    def obs(self, n_cells: int | None = None) -> pd.DataFrame:
        n = self.n_cells if n_cells is None else n_cells
        return pd.DataFrame(
            {
                LABEL: pd.Categorical([f"type_{t}" for t in self.cell_type[:n]]),
                BATCH: pd.Categorical([f"batch_{b}" for b in self.batch[:n]]),
            },
            index=[f"cell_{i:07d}" for i in range(n)],
        )

    def var(self) -> pd.DataFrame:
        return pd.DataFrame(index=pd.Index(self.gene_symbols, dtype=str))

    def adata(self, progress: bool = False) -> ad.AnnData:
        X = sp.vstack(list(self.chunks(progress)), format="csr")
        adata = ad.AnnData(X, obs=self.obs(), var=self.var())
        adata.uns["source"] = f"synthetic(seed={self.seed})"
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
    spatial: bool = False,
) -> ad.AnnData:
    """Seeded synthetic counts: cell types with marker programs, multiplicative batch effects, Poisson noise
    (:class:`SyntheticCounts`, all cells in one AnnData); with ``spatial``, coordinates too
    (:func:`domain_coordinates`).

    Memory grows with the number of non-zeros only: cells are generated in chunks straight into CSR.
    Gene names are real GENCODE symbols of genes in the CellPLM vocabulary (so gene matching works as on real
    data), or ``GENE00001``-style names when more genes are asked for than the vocabulary has symbols.
    """
    adata = SyntheticCounts(
        n_cells=n_cells,
        n_genes=n_genes,
        n_cell_types=n_cell_types,
        n_batches=n_batches,
        mean_counts=mean_counts,
        markers_per_type=markers_per_type,
        marker_fold=marker_fold,
        batch_effect=batch_effect,
        seed=seed,
        chunk=chunk,
        gene_symbols=gene_symbols,
    ).adata(progress)
    if spatial:
        adata.obsm[SPATIAL_KEY] = domain_coordinates(adata.obs[LABEL], adata.obs[BATCH], seed)
    return adata


def domain_coordinates(cell_type, batch, seed: int, size: float = 1000.0, spread: float = 0.08) -> np.ndarray:
    """2-D coordinates (float32, µm) in which each batch is a tissue section where every cell type fills a domain of
    its own: a cell lies around its (batch, type) centre, drawn uniformly in a ``size`` square, with standard
    deviation ``spread * size``. Drawn from a generator of their own, so the counts of the same seed are unchanged."""
    rng = np.random.default_rng([seed, 1])
    types, batches = pd.factorize(pd.Series(cell_type).astype(str))[0], pd.factorize(pd.Series(batch).astype(str))[0]
    centres = rng.uniform(0, size, size=(batches.max() + 1, types.max() + 1, 2))
    xy = centres[batches, types] + rng.normal(0, spread * size, size=(len(types), 2))
    return xy.astype(np.float32)


def vocabulary_symbols(n_genes: int, rng) -> tuple[list[str], list[str]]:
    """``n_genes`` GENCODE symbols whose Ensembl ids are in the released CellPLM vocabulary (sorted), with their ids."""
    from ...genes import gencode_symbol_to_id
    from ...model.config import released_config

    vocab = released_config().gene_list
    in_vocab = set(vocab)
    pairs = sorted((s, g) for s, g in gencode_symbol_to_id().items() if g in in_vocab)
    seen, unique = set(), []
    for sym, gid in pairs:  # one symbol per id
        if gid not in seen:
            seen.add(gid)
            unique.append((sym, gid))
    if n_genes > len(unique):
        raise ValueError(f"n_genes={n_genes}: only {len(unique)} vocabulary genes have a symbol")
    pick = sorted(rng.choice(len(unique), size=n_genes, replace=False))
    return [unique[i][0] for i in pick], [unique[i][1] for i in pick]


def synthetic_spatial(
    n_tissues: int = 2,
    fovs_per_tissue: int = 3,
    cells_per_fov: int = 300,
    n_genes: int = 1000,
    n_cell_types: int = 5,
    domains_per_fov: int = 6,
    fov_size: float = 1000.0,
    mixing: float = 0.1,
    mean_counts: float = 1000.0,
    markers_per_type: int = 30,
    marker_fold: float = 3.0,
    seed: int = 0,
) -> ad.AnnData:
    """Seeded synthetic spatial tissues: cells with 2-D coordinates and spatially clustered cell types.

    Each field of view (FOV, ``obs['fov']``, the natural CellPLM sentence; also copied to ``obs['batch']``) is a
    ``fov_size`` square (µm) with ``domains_per_fov`` random domain centres, each assigned a cell type. A cell takes
    the type of its nearest centre (a Voronoi tessellation, so neighbours share types), except a ``mixing`` share
    of cells that take a random type. Coordinates are in ``obsm['spatial']`` (float32, µm). Counts are Poisson
    draws from per-type marker programs with a per-tissue scale, over GENCODE symbols whose Ensembl ids are in the
    released CellPLM vocabulary (``var['ensembl_id']``), so every gene reaches the model.
    """
    rng = np.random.default_rng(seed)
    symbols, ids = vocabulary_symbols(n_genes, rng)
    base = rng.gamma(0.3, 1.0, size=n_genes)
    programs = np.tile(base, (n_cell_types, 1))
    for t in range(n_cell_types):
        markers = rng.choice(n_genes, size=min(markers_per_type, n_genes), replace=False)
        programs[t, markers] *= rng.uniform(1.0, marker_fold, size=markers.size)
    programs /= programs.sum(axis=1, keepdims=True)
    tissue_scale = np.exp(rng.normal(0, 0.2, size=(n_tissues, n_genes)))
    coords, types, fovs, tissues, pieces = [], [], [], [], []
    for t in range(n_tissues):
        for f in range(fovs_per_tissue):
            xy = rng.uniform(0, fov_size, size=(cells_per_fov, 2))
            centres = rng.uniform(0, fov_size, size=(domains_per_fov, 2))
            centre_type = rng.integers(0, n_cell_types, size=domains_per_fov)
            nearest = np.argmin(((xy[:, None, :] - centres[None, :, :]) ** 2).sum(-1), axis=1)
            ct = centre_type[nearest]
            mixed = rng.random(cells_per_fov) < mixing
            ct[mixed] = rng.integers(0, n_cell_types, size=int(mixed.sum()))
            size = rng.lognormal(np.log(mean_counts), 0.35, size=cells_per_fov)
            rates = programs[ct] * tissue_scale[t]
            rates *= (size / rates.sum(axis=1))[:, None]
            pieces.append(sp.csr_matrix(rng.poisson(rates).astype(np.float32)))
            coords.append(xy)
            types.append(ct)
            fovs += [f"tissue{t}_fov{f}"] * cells_per_fov
            tissues += [f"tissue{t}"] * cells_per_fov
    types = np.concatenate(types)
    obs = pd.DataFrame(
        {
            LABEL: pd.Categorical([f"type_{t}" for t in types]),
            "fov": pd.Categorical(fovs),
            "tissue": pd.Categorical(tissues),
        },
        index=[f"spot_{i:07d}" for i in range(len(types))],
    )
    obs[BATCH] = obs["fov"]
    adata = ad.AnnData(
        sp.vstack(pieces, format="csr"),
        obs=obs,
        var=pd.DataFrame({"ensembl_id": ids}, index=pd.Index(symbols, dtype=str)),
    )
    adata.obsm["spatial"] = np.concatenate(coords).astype(np.float32)
    adata.uns["source"] = f"synthetic_spatial(seed={seed})"
    return adata


def _default_symbols(n_genes: int, rng) -> list[str]:
    """Symbols of genes in the CellPLM vocabulary (mostly protein-coding, as measured by scRNA-seq panels)."""
    try:
        return sorted(vocabulary_symbols(n_genes, rng)[0])
    except ValueError:
        return [f"GENE{i:05d}" for i in range(n_genes)]


def extract_members(archive, members, dest_dir) -> None:
    """Stream the archive members whose file names are ``members`` into ``dest_dir`` in one pass over the archive.

    A member is found by its file name in any folder (scDiff's archive has them under ``reproduce/``). The folder
    appears only when every member is out (written to a hidden staging folder, then renamed), so an interrupted
    extraction leaves nothing that looks complete.
    """
    dest_dir = Path(dest_dir)
    wanted = set(members)
    staging = dest_dir.with_name(f".{dest_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise InputError(archive, f"not a readable tar archive ({e})") from None
    with tar:
        try:
            for member in tar:  # one sequential pass: a .tar.gz cannot seek
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    with atomic_path(staging / name) as tmp, open(tmp, "wb") as out:
                        shutil.copyfileobj(tar.extractfile(member), out, length=1 << 20)
                    wanted.discard(name)
                    if not wanted:
                        break
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise InputError(archive, f"archive is truncated or corrupt ({type(e).__name__}: {e})") from None
    if wanted:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(archive, f"archive has no file named {', '.join(map(repr, sorted(wanted)))}")
    if dest_dir.exists():
        shutil.rmtree(dest_dir)
    os.replace(staging, dest_dir)


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


def corpus_item(name: str, train_files: list[str] | None = None, spec: dict | None = None) -> ad.AnnData:
    """One CellPLM pretraining corpus item: raw counts in CSR ``X``, the sentence key in ``obs['batch']``,
    ``var['ensembl_id']`` where known, ``obsm['spatial']`` for the synthetic_spatial item; no labels.

    ``celltypist_sample``: CellTypist's 559 cells (one sentence). ``synthetic_spatial``: :func:`synthetic_spatial`
    with ``spec`` (one sentence per field of view). ``train__<dataset>``: the training cells of a dataset, given
    its train.h5ad of every split variant: only cells in ALL of them are kept, so no cell that is a test cell of
    any evaluated split is pretrained on; cell-type labels are dropped.
    """
    from ..io import read_h5ad

    if name == "celltypist_sample":
        adata = celltypist_sample()
        adata.obs[BATCH] = "celltypist_sample"
    elif name == "synthetic_spatial":
        spec = {k: v for k, v in (spec or {}).items() if k != "enabled"}
        adata = synthetic_spatial(**spec)
    elif name.startswith("train__"):
        if not train_files:
            raise InputError(name, "a train__<dataset> corpus item needs the train files of its splits")
        adata = read_h5ad(train_files[0])
        keep = adata.obs_names
        for path in train_files[1:]:
            keep = keep.intersection(read_h5ad(path).obs_names, sort=False)
        adata = adata[adata.obs_names.isin(keep)].copy()
        adata.obsm = {}  # a dataset's coordinates (the demo's synthetic ones) serve the context track, not pretraining
        if adata.n_obs == 0:
            raise InputError(train_files[0], "no cell is a training cell in every split variant of this dataset")
        dataset = name.removeprefix("train__")
        batch = adata.obs[BATCH].astype(str).to_numpy() if BATCH in adata.obs else np.full(adata.n_obs, "all")
        adata.obs = pd.DataFrame({BATCH: [f"{dataset}/{b}" for b in batch]}, index=adata.obs_names)
    else:
        raise InputError(name, "unknown corpus item (celltypist_sample, synthetic_spatial or train__<dataset>)")
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.layers = {}
    adata.uns = {"source": str(adata.uns.get("source", name)), "corpus_item": name}
    adata.var = adata.var[[c for c in ("ensembl_id",) if c in adata.var.columns]].copy()
    adata.obs[BATCH] = adata.obs[BATCH].astype(str)
    keep_obs = [BATCH] + [c for c in ("fov", "tissue") if c in adata.obs.columns]
    adata.obs = adata.obs[keep_obs].copy()  # no labels in the corpus
    adata.obsm = {k: v for k, v in adata.obsm.items() if k == "spatial"}
    return adata


def source_record(source: dict, path, manifest=None) -> dict:
    """What a dataset's source h5ad is, for its row of the dataset table: the configured source, the downloads it
    came from as the manifest recorded them (URL, sha256, bytes, the version a service resolved, when), and the
    sha256 of the h5ad that preprocessing read (for an archive, the member)."""
    from ...checksum import sha256_file

    digest = sha256_file(path)
    files = []
    for f in remote_files(source):
        row = manifest.row(f["filename"]) if manifest is not None else None
        if row is None:  # put there by hand: for a single-file source, the file read is that download
            whole = source["kind"] in ("download", "cellxgene")
            row = {
                "sha256": digest if whole else "",
                "bytes": str(Path(path).stat().st_size) if whole else "",
                "version": "",
                "recorded": "not in the manifest (placed by hand?)",
            }
        files.append(
            {
                "filename": f["filename"],
                "url": f["url"],
                "pinned_sha256": f["sha256"] or "",
                **{k: row[k] for k in ("sha256", "bytes", "version", "recorded")},
            }
        )
    return {
        "kind": source["kind"],
        "member": source.get("member", ""),
        "files": files,
        "version": "; ".join(v for v in (f["version"] for f in files) if v),
        "sha256": digest,
        "path": str(path),
    }

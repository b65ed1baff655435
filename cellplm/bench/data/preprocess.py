"""One canonical h5ad per dataset.

Canonical layout: raw counts in ``X`` (CSR float32) and ``layers['counts']`` (the same matrix), unique gene
symbols as ``var_names`` plus ``var['ensembl_id']``, ``obs['cell_type']``, ``obs['batch']``, the stored
``obs['split']`` when the source had one, and ``obsm['spatial']`` when the source has coordinates (CellPLM's spatial
sentences, the tissue-context track). Filtering follows the published protocol: genes seen in no cell and
cells with no gene are removed, then cell types with ``min_cells_per_type`` cells or fewer are dropped.

At most two copies of the count matrix are in memory at any time: only the matrix holding the counts is read
from disk, and each filtering step replaces it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import h5py
import hdf5plugin  # noqa: F401 - registers HDF5's extra filters with h5py: scDiff's HLCA_zstd_sub.h5ad uses Zstd
import numpy as np
import pandas as pd

try:
    from anndata.io import read_elem
except ImportError:  # pragma: no cover
    from anndata.experimental import read_elem

from . import counts as counts_mod
from ..errors import InputError
from ...genes import ensembl_fraction, strip_version, symbols_to_ensembl
from ...keys import BATCH, BATCH_KEY, LABEL
from ...sentence_policy import SPATIAL_KEY
from ..io import open_h5ad


@dataclass
class DatasetSpec:
    """How to read one dataset (mirrors a ``datasets:`` entry of the config)."""

    name: str
    label_key: str = LABEL  # the source's columns; by default named as the canonical file names its own
    batch_key: str | None = BATCH
    counts: str | None = None  # "X", "raw", a layer name, or None for automatic detection
    gene_symbols: str | None = None  # var column with symbols; None: var_names
    gene_ids: str | None = None  # var column with Ensembl ids, "var_names", or None: map symbols with GENCODE
    duplicate_genes: str = "error"  # or "make_unique"
    min_cells_per_type: int = 10
    min_genes_per_cell: int = 1
    min_cells_per_gene: int = 1
    split_key: str | None = "split"  # stored split column to keep, if present

    @classmethod
    def from_config(cls, name: str, cfg: dict) -> "DatasetSpec":
        fields = cls.__dataclass_fields__
        return cls(name=name, **{k: v for k, v in cfg.items() if k in fields and k != "name"})


@dataclass
class PreprocessReport:
    dataset: str
    source: str
    counts_from: str
    n_cells_in: int
    n_genes_in: int
    n_cells: int = 0
    n_genes: int = 0
    n_cell_types: int = 0
    n_batches: int = 0
    dropped_unlabelled: int = 0
    dropped_empty_cells: int = 0
    dropped_empty_genes: int = 0
    dropped_rare_types: dict = field(default_factory=dict)
    ensembl_mapped_fraction: float = 0.0
    duplicate_gene_names: int = 0
    stored_split: bool = False
    total_counts: float = 0.0


def _read_frame(f: h5py.File, key: str) -> pd.DataFrame:
    df = read_elem(f[key])
    df.index = df.index.astype(str)
    return df


def _examples(values, n: int = 3) -> str:
    return ", ".join(repr(str(v)) for v in list(values)[:n])


def _is_legacy(f: h5py.File) -> bool:
    """h5ad files written by anndata < 0.7 store obs as a structured array, not a dataframe group."""
    return "obs" in f and isinstance(f["obs"], h5py.Dataset)


def preprocess(path, spec: DatasetSpec) -> tuple[ad.AnnData, PreprocessReport]:
    """Read ``path`` and return the canonical AnnData plus a report of what was done."""
    path = Path(path)
    with open_h5ad(path) as f:
        legacy = _is_legacy(f)
    if legacy:  # convert through anndata (reads the whole file; such files predate large atlases)
        with tempfile.TemporaryDirectory() as tmp:
            converted = Path(tmp) / path.name
            try:
                ad.read_h5ad(path).write_h5ad(converted)
            except Exception as e:
                raise InputError(path, f"legacy h5ad format could not be converted ({type(e).__name__}: {e})") from None
            out, report = preprocess(converted, spec)
        report.source = str(path)
        return out, report
    with open_h5ad(path) as f:
        try:
            obs = _read_frame(f, "obs")
        except Exception as e:
            raise InputError(path, f"cannot read obs ({type(e).__name__}: {e})") from None
        _check_obs(path, obs, spec)
        X, counts_from, var_location = counts_mod.locate_counts(path, f, obs, spec.counts)
        var = _read_frame(f, var_location)
        coords = read_elem(f[f"obsm/{SPATIAL_KEY}"]) if f"obsm/{SPATIAL_KEY}" in f else None
        if var_location == "raw/var":  # gene annotations often live in var only (e.g. CELLxGENE files)
            main_var = _read_frame(f, "var")
            if main_var.index.equals(var.index):
                var = var.join(main_var[main_var.columns.difference(var.columns)])
    if X.shape != (obs.shape[0], var.shape[0]):
        raise InputError(path, f"matrix shape {X.shape} does not match obs ({obs.shape[0]}) x var ({var.shape[0]})")
    report = PreprocessReport(spec.name, str(path), counts_from, X.shape[0], X.shape[1])

    symbols, ids = _gene_names(path, var, spec, var_location)
    dup = pd.Index(symbols).duplicated()
    report.duplicate_gene_names = int(dup.sum())
    if dup.any():
        if spec.duplicate_genes != "make_unique":
            where = f"var['{spec.gene_symbols}']" if spec.gene_symbols else f"{var_location} index"
            raise InputError(
                path,
                f"duplicate gene names in {where} ({dup.sum()} duplicates, e.g. "
                f"{_examples(pd.Index(symbols)[dup])}); set duplicate_genes: make_unique to keep them",
            )
        symbols = ad.utils.make_index_unique(pd.Index(symbols)).to_numpy()

    labels = obs[spec.label_key]
    labelled = labels.notna().to_numpy() & (labels.astype(str).str.strip() != "").to_numpy()
    report.dropped_unlabelled = int((~labelled).sum())

    # Published filtering order: genes in >= 1 cell, then cells with >= 1 gene, then rare cell types.
    gene_keep = np.asarray((X[labelled] > 0).sum(axis=0)).ravel() >= spec.min_cells_per_gene
    report.dropped_empty_genes = int((~gene_keep).sum())
    cell_keep = labelled & (np.diff(X.indptr) >= spec.min_genes_per_cell)
    if not gene_keep.all():
        cell_keep &= np.asarray((X[:, gene_keep] > 0).sum(axis=1)).ravel() >= spec.min_genes_per_cell
    report.dropped_empty_cells = int((labelled & ~cell_keep).sum())
    type_counts = labels[cell_keep].astype(str).value_counts()
    rare = type_counts[type_counts <= spec.min_cells_per_type]
    report.dropped_rare_types = {str(k): int(v) for k, v in rare.items()}
    cell_keep &= ~labels.astype(str).isin(rare.index).to_numpy()

    kept_types = labels[cell_keep].astype(str).unique()
    if len(kept_types) < 2:
        only = f"only {_examples(kept_types)}" if len(kept_types) else "none"
        raise InputError(
            path, f"single-class dataset: cell types left after filtering: {only}; annotation needs at least two"
        )

    X = X[cell_keep]  # second copy, the first is released on reassignment
    X = X[:, gene_keep]
    obs = obs.loc[cell_keep]
    new_obs = pd.DataFrame(index=obs.index.copy())
    new_obs[LABEL] = pd.Categorical(obs[spec.label_key].astype(str))
    batch = obs[spec.batch_key].astype(str) if spec.batch_key else pd.Series(spec.name, index=obs.index)
    new_obs[BATCH] = pd.Categorical(batch)
    if spec.split_key and spec.split_key in obs.columns:
        new_obs["split"] = obs[spec.split_key].astype(str).to_numpy()
        report.stored_split = True
    new_var = pd.DataFrame(index=pd.Index(symbols[gene_keep], dtype=str, name=None))
    new_var["ensembl_id"] = ids[gene_keep]
    report.ensembl_mapped_fraction = float(np.mean(new_var["ensembl_id"] != "")) if len(new_var) else 0.0

    out = ad.AnnData(X=X, obs=new_obs, var=new_var)
    if coords is not None:  # spatial coordinates, for CellPLM's spatial sentences (the tissue-context track)
        out.obsm[SPATIAL_KEY] = np.asarray(coords, dtype=np.float32)[cell_keep]
    out.layers["counts"] = out.X  # same object: no extra copy in memory
    report.n_cells, report.n_genes = out.shape
    report.n_cell_types = int(out.obs[LABEL].nunique())
    report.n_batches = int(out.obs[BATCH].nunique())
    report.total_counts = float(X.sum())
    out.uns["dataset_id"] = spec.name
    out.uns[BATCH_KEY] = spec.batch_key or ""  # which column obs['batch'] is ("" = none: one value, the dataset's name)
    out.uns["preprocessing"] = {k: v for k, v in report.__dict__.items() if k != "dropped_rare_types"}
    out.uns["preprocessing"]["dropped_rare_types"] = ", ".join(f"{k} ({v})" for k, v in rare.items()) or "none"
    return out, report


def _check_obs(path: Path, obs: pd.DataFrame, spec: DatasetSpec) -> None:
    cols = list(obs.columns)
    if spec.label_key not in obs.columns:
        raise InputError(path, f"label column '{spec.label_key}' not in obs (columns: {', '.join(cols) or 'none'})")
    if spec.batch_key and spec.batch_key not in obs.columns:
        raise InputError(path, f"batch column '{spec.batch_key}' not in obs (columns: {', '.join(cols) or 'none'})")
    dup = obs.index.duplicated()
    if dup.any():
        raise InputError(
            path, f"duplicate cell names in obs ({dup.sum()} duplicates, e.g. {_examples(obs.index[dup])})"
        )


def _gene_names(path: Path, var: pd.DataFrame, spec: DatasetSpec, var_location: str) -> tuple[np.ndarray, np.ndarray]:
    cols = ", ".join(var.columns) or "none"
    if spec.gene_symbols:
        if spec.gene_symbols not in var.columns:
            raise InputError(path, f"gene symbol column '{spec.gene_symbols}' not in {var_location} (columns: {cols})")
        symbols, where = var[spec.gene_symbols].astype(str).to_numpy(), f"{var_location}['{spec.gene_symbols}']"
    else:
        symbols, where = var.index.astype(str).to_numpy(), f"{var_location} index"
    if ensembl_fraction(symbols) > 0.5:
        raise InputError(
            path,
            f"{where} holds Ensembl ids (e.g. {_examples(symbols)}) where gene symbols are expected; "
            f"set gene_symbols to the column with symbols (columns: {cols}) and gene_ids to this one",
        )
    if spec.gene_ids:
        if spec.gene_ids == "var_names":
            ids, where = var.index.astype(str).to_numpy(), f"{var_location} index"
        elif spec.gene_ids in var.columns:
            ids, where = var[spec.gene_ids].astype(str).to_numpy(), f"{var_location}['{spec.gene_ids}']"
        else:
            raise InputError(path, f"Ensembl id column '{spec.gene_ids}' not in {var_location} (columns: {cols})")
        if ensembl_fraction(ids) < 0.5:
            raise InputError(path, f"{where} holds gene symbols (e.g. {_examples(ids)}) where Ensembl ids are expected")
        ids = strip_version(ids)
    else:
        ids = symbols_to_ensembl(symbols)
    return symbols, ids

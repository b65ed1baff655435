"""From AnnData to CellPLM sentences: gene matching to the vocabulary, count checks, grouping into tissues.

Genes are matched offline: Ensembl ids from a ``var`` column or ``var_names``, otherwise symbols mapped with the
GENCODE v44 table this package ships (CellTypist's; :mod:`cellplm.genes`). The share of genes and of counts that land
in the vocabulary is
measured; below a threshold the model would embed noise, so :func:`require_coverage` raises
:class:`NotApplicable` instead.

A sentence is the set of cells sharing ``obs[group_key]`` (a sample, or a field of view for spatial data), or
all cells when there is no such column. Rows are read one sentence (or ``max_cells`` chunk) at a time, so a
backed AnnData of any size is embedded with memory bounded by its largest sentence.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from . import genes as _genes
from .errors import InputError, NotApplicable
from .genes import ENSEMBL_RE, ensembl_fraction, strip_version, symbols_to_ensembl
from .keys import BATCH
from .model.sentence import Sentence
from .sentence_policy import SPATIAL_KEY, SentencePolicy

log = logging.getLogger(__name__)

ENSEMBL_COLUMNS = ("ensembl_id", "gene_ids", "gene_id", "ensembl", "feature_id")


@dataclass
class GeneMatch:
    vocab_index: np.ndarray  # per input column: row in the vocabulary, or -1
    id_source: str  # where the Ensembl ids came from
    n_genes: int
    n_matched: int
    gene_share: float  # matched genes / input genes
    count_share: float  # counts in matched genes / all counts (NaN if counts were not given)
    n_duplicates: int  # columns dropped because another column already holds their vocabulary gene

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("vocab_index")
        return d

    def describe(self) -> str:
        return (
            f"{self.n_matched}/{self.n_genes} genes ({self.gene_share:.1%}) in the vocabulary, "
            f"{self.count_share:.1%} of counts; ids from {self.id_source}"
        )


def ensembl_ids(var: pd.DataFrame, var_names, gene_ids: str | None = None) -> tuple[np.ndarray, str]:
    """Ensembl ids of the genes: from ``var[gene_ids]``, a known id column, ``var_names``, or symbol mapping."""
    if gene_ids is not None:
        if gene_ids == "var_names":
            return strip_version(var_names), "var_names"
        if gene_ids not in var.columns:
            raise KeyError(gene_ids)
        return strip_version(var[gene_ids].astype(str)), f"var['{gene_ids}']"
    for col in ENSEMBL_COLUMNS:
        if col in var.columns and ensembl_fraction(var[col].astype(str)) > 0.5:
            return strip_version(var[col].astype(str)), f"var['{col}']"
    names = np.asarray(var_names, dtype=object).astype(str)
    is_id = np.array([bool(ENSEMBL_RE.match(n)) for n in names], dtype=bool)
    ids = strip_version(names)
    if is_id.all():
        return ids, "var_names"
    ids[~is_id] = symbols_to_ensembl(names[~is_id])
    if is_id.any():
        return ids, f"var_names ({int(is_id.sum())} Ensembl ids; other names mapped as symbols with GENCODE v44)"
    return ids, "gene symbols mapped with GENCODE v44 (CellTypist's table)"


def match_genes(
    var: pd.DataFrame,
    var_names,
    vocabulary: list[str],
    gene_ids: str | None = None,
    gene_totals: np.ndarray | None = None,
) -> GeneMatch:
    ids, source = ensembl_ids(var, var_names, gene_ids)
    position = {g: i for i, g in enumerate(vocabulary)}
    index = np.array([position.get(g, -1) if ENSEMBL_RE.match(str(g) or "") else -1 for g in ids], dtype=np.int64)
    # A vocabulary gene claimed by two columns (e.g. two symbols of one id): the first column wins.
    seen, dup = set(), 0
    for j, v in enumerate(index):
        if v >= 0:
            if v in seen:
                index[j], dup = -1, dup + 1
            seen.add(v)
    n = len(index)
    matched = int((index >= 0).sum())
    count_share = _genes.count_share(gene_totals, index >= 0)
    return GeneMatch(index, source, n, matched, matched / n if n else 0.0, count_share, dup)


def require_coverage(match: GeneMatch, source, min_gene_share: float, min_count_share: float) -> None:
    """Raise :class:`~cellplm.errors.NotApplicable` when too little of the data lands in the vocabulary."""
    _genes.require_coverage(
        source,
        n_matched=match.n_matched,
        gene_share=match.gene_share,
        count_share=match.count_share,
        min_gene_share=min_gene_share,
        min_count_share=min_count_share,
        describe=match.describe(),
        none_matched=f"no genes in the CellPLM vocabulary ({match.n_genes} genes; ids from {match.id_source})",
    )


def check_counts(X, source, sample: int = 200_000) -> None:
    """Refuse data that are not raw counts (negative or non-integer values), with a one-line reason."""
    values = X.data if sp.issparse(X) else np.asarray(X).ravel()
    values = values[:sample] if values.size > sample else values
    if values.size == 0:
        return
    if (values < 0).any():
        raise InputError(source, "negative values where raw counts are required (is X scaled or log-normalised?)")
    frac = values != np.round(values)
    if frac.mean() > 0.01:
        example = values[frac][0]
        raise InputError(
            source,
            f"non-integer values (e.g. {example:.4g}) where raw counts are required; CellPLM "
            "applies log1p itself: give raw counts (X, layers['counts'] or .raw)",
        )


def counts_matrix(adata, layer: str | None = None):
    """The matrix holding raw counts: ``layer`` if given, else ``layers['counts']`` if present, else X."""
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(layer)
        return adata.layers[layer]
    if "counts" in adata.layers:
        return adata.layers["counts"]
    return adata.X


def sentence_obs(adata, group_key: str | None) -> pd.DataFrame:
    """The sentence column of ``obs`` (no column when absent: all cells then form one sentence)."""
    return adata.obs[[group_key]] if group_key in adata.obs else adata.obs[[]]


def groups(
    obs: pd.DataFrame, group_key: str | None, policy: SentencePolicy | str = "batch", coords: np.ndarray | None = None
) -> list[np.ndarray]:
    """Cell positions of each sentence under ``policy`` (:mod:`cellplm.sentence_policy`); a batch is a value of
    ``obs[group_key]`` (all cells when there is no such column), batches in order of first appearance."""
    batches = obs[group_key].to_numpy() if group_key is not None and group_key in obs.columns else np.zeros(len(obs))
    return SentencePolicy.parse(policy).groups(batches, coords)


def scaled_coords(coords: np.ndarray) -> np.ndarray:
    """Min-max scale a sentence's coordinates to [0, 1] per axis (the encoding expects that range)."""
    lo, hi = coords.min(0), coords.max(0)
    return (coords - lo) / np.where(hi > lo, hi - lo, 1.0)


def sentences(
    adata,
    vocab_index: np.ndarray,
    n_vocab: int,
    group_key: str | None = BATCH,
    max_cells: int | None = None,
    layer: str | None = None,
    spatial_key: str | None = None,
    cells: np.ndarray | None = None,
    policy: SentencePolicy | str = "batch",
) -> Iterator[tuple[np.ndarray, Sentence]]:
    """Yield (cell indices, sentence) for each sentence of ``policy`` (default: one per tissue, i.e. per value of
    ``obs[group_key]``), split into chunks of at most ``max_cells`` cells.

    ``vocab_index`` gives each column's row in the vocabulary (-1: dropped), e.g. ``GeneMatch.vocab_index``.
    ``cells`` restricts to a subset of cells (indices into adata). Works on backed AnnData: only one chunk's
    rows are in memory at a time. Coordinates come from ``obsm[spatial_key]`` and are scaled to [0, 1] per
    sentence; the spatial policy groups cells by ``obsm['spatial']`` (NotApplicable without it).
    """
    X = counts_matrix(adata, layer)
    obs = adata.obs if cells is None else adata.obs.iloc[cells]
    policy = SentencePolicy.parse(policy)
    coords = None
    if policy.kind == "spatial":
        if SPATIAL_KEY not in adata.obsm:
            raise NotApplicable(f"the {policy} sentence policy needs coordinates in obsm['{SPATIAL_KEY}'] (none here)")
        coords = np.asarray(adata.obsm[SPATIAL_KEY])
        coords = coords if cells is None else coords[cells]
    for group in groups(obs, group_key, policy, coords):
        group = group if cells is None else np.asarray(cells)[group]
        step = max_cells or len(group)
        for start in range(0, len(group), step):
            idx = np.sort(group[start : start + step])
            rows = X[idx]
            rows = sp.csr_matrix(rows) if not sp.issparse(rows) else rows.tocsr()
            coords = None
            if spatial_key is not None:
                coords = torch.as_tensor(
                    scaled_coords(np.asarray(adata.obsm[spatial_key][idx], dtype=np.float64)[:, :2]),
                    dtype=torch.float32,
                )
            yield idx, Sentence.from_csr(rows, vocab_index, n_vocab, coords=coords)


def gene_totals(adata, layer: str | None = None, chunk: int = 50_000, max_cells: int | None = None) -> np.ndarray:
    """Per-gene count totals, read in row chunks (works on backed AnnData).

    With ``max_cells`` and more cells than that, only ``max_cells`` rows are read, as up to 20 contiguous blocks
    spread evenly over the file: an estimate of the genes' share of counts that costs a fraction of a full pass.
    """
    X = counts_matrix(adata, layer)
    total = np.zeros(adata.n_vars, dtype=np.float64)
    if max_cells is None or adata.n_obs <= max_cells:
        blocks = [(start, min(start + chunk, adata.n_obs)) for start in range(0, adata.n_obs, chunk)]
    else:
        n_blocks = min(20, max_cells)
        size = max_cells // n_blocks
        starts = np.linspace(0, adata.n_obs - size, n_blocks).astype(int)
        blocks = [(int(s), int(s) + size) for s in starts]
    for start, stop in blocks:
        total += np.asarray(X[start:stop].sum(0)).ravel()
    return total

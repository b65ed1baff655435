"""The corpus: AnnData objects or h5ad files of raw counts, split into sentences matched to the vocabulary."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..data import GeneMatch, check_counts, counts_matrix, gene_totals, groups, match_genes, sentences
from ..errors import ConfigError, InputError
from ..model.sentence import Sentence
from .config import PretrainConfig

log = logging.getLogger(__name__)


@dataclass
class CorpusItem:
    """One corpus item: an AnnData or an h5ad path; keys left None take the PretrainConfig's."""

    name: str
    data: object  # AnnData, str or Path
    sentence_key: str | None = None
    spatial_key: str | None = None


@dataclass
class Item:
    name: str
    source: str  # what error messages name: the file path, or the item name
    adata: object
    match: GeneMatch
    gene_mask: torch.Tensor  # V bool
    spatial_key: str | None
    n_cells: int


@dataclass
class Ref:
    item: int
    label: str
    cells: np.ndarray  # rows of the item's AnnData (cells without vocabulary counts removed)
    batch_id: int


def as_items(corpus) -> list[CorpusItem]:
    if isinstance(corpus, (str, Path, CorpusItem)) or hasattr(corpus, "obs"):
        corpus = [corpus]
    items, seen = [], set()
    for i, entry in enumerate(corpus):
        if isinstance(entry, CorpusItem):
            item = entry
        elif isinstance(entry, tuple) and len(entry) == 2:
            item = CorpusItem(str(entry[0]), entry[1])
        elif isinstance(entry, (str, Path)):
            item = CorpusItem(Path(entry).name.removesuffix(".h5ad"), entry)
        elif hasattr(entry, "obs"):
            item = CorpusItem(
                str(entry.uns.get("name", f"corpus[{i}]")) if hasattr(entry, "uns") else f"corpus[{i}]", entry
            )
        else:
            raise ConfigError(f"corpus[{i}]: expected an AnnData, an h5ad path, a (name, data) pair or a CorpusItem")
        name, k = item.name, 2
        while name in seen:
            name, k = f"{item.name}#{k}", k + 1
        seen.add(name)
        items.append(dataclasses.replace(item, name=name))
    if not items:
        raise ConfigError("the corpus is empty")
    return items


def open_item(item: CorpusItem, backed: bool):
    from ..io import read_h5ad

    if isinstance(item.data, (str, Path)):
        path = Path(item.data)
        if backed:
            import anndata as ad

            if not path.exists():
                raise InputError(path, "file does not exist")
            try:
                return ad.read_h5ad(path, backed="r"), str(path)
            except Exception as e:  # noqa: BLE001 - h5py raises many types for damaged files
                raise InputError(
                    path, f"not a readable h5ad file: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None
        return read_h5ad(path), str(path)
    return item.data, item.name


def vocab_totals(X, in_vocab: np.ndarray, chunk: int = 50_000) -> np.ndarray:
    """Per-cell sum of the counts in vocabulary genes (row chunks; works on backed matrices)."""
    n = X.shape[0]
    out = np.zeros(n, dtype=np.float64)
    w = in_vocab.astype(np.float64)
    for start in range(0, n, chunk):
        block = X[start : start + chunk]
        block = block if sp.issparse(block) else np.asarray(block)
        out[start : start + chunk] = np.asarray(block @ w).ravel()
    return out


def load_corpus(corpus, cfg: PretrainConfig, vocabulary: list[str]) -> tuple[list[Item], list[Ref]]:
    n_vocab = len(vocabulary)
    items, refs = [], []
    for d, spec in enumerate(as_items(corpus)):
        adata, source = open_item(spec, cfg.backed)
        try:
            X = counts_matrix(adata, cfg.layer)
        except KeyError:
            raise InputError(source, f"no layer {cfg.layer!r} (layers: {', '.join(adata.layers) or 'none'})") from None
        head = X[: min(adata.n_obs, 20_000)] if cfg.backed else X
        check_counts(head, source)
        try:
            match = match_genes(
                adata.var, adata.var_names, vocabulary, gene_ids=cfg.gene_ids, gene_totals=gene_totals(adata, cfg.layer)
            )
        except KeyError as e:
            raise InputError(source, f"no var column {e} with gene ids") from None
        if match.n_matched == 0:
            raise InputError(
                source, f"no genes in the CellPLM vocabulary ({match.n_genes} genes; ids from {match.id_source})"
            )
        gene_mask = torch.zeros(n_vocab, dtype=torch.bool)
        gene_mask[torch.as_tensor(match.vocab_index[match.vocab_index >= 0])] = True
        spatial = spec.spatial_key or cfg.spatial_key
        if spatial is not None and spatial not in adata.obsm:
            log.info("%s: no obsm[%r]; its cells have no coordinates", spec.name, spatial)
            spatial = None
        totals = vocab_totals(X, match.vocab_index >= 0)
        key = spec.sentence_key or cfg.sentence_key
        if key is not None and key not in adata.obs.columns:
            log.info("%s: no obs column %r; the whole item is one sentence", spec.name, key)
        n_dropped = 0
        for group in groups(adata.obs, key):
            label = str(adata.obs[key].iloc[group[0]]) if len(group) and key in adata.obs.columns else "all"
            keep = np.sort(group[totals[group] > 0])
            n_dropped += len(group) - len(keep)
            if len(keep) == 0:
                what = "no cells" if len(group) == 0 else f"{len(group)} cells but no counts in vocabulary genes"
                raise InputError(source, f"corpus item {spec.name!r}: sentence {label!r} is empty ({what})")
            refs.append(Ref(item=d, label=f"{spec.name}/{label}", cells=keep, batch_id=len(refs)))
        if n_dropped:
            log.info("%s: %d cells without counts in vocabulary genes left out", spec.name, n_dropped)
        log.info("%s: %d cells, %s", spec.name, adata.n_obs, match.describe())
        items.append(Item(spec.name, source, adata, match, gene_mask, spatial, int(adata.n_obs)))
    return items, refs


def sentence(items: list[Item], ref: Ref, cells: np.ndarray, cfg: PretrainConfig) -> Sentence:
    item = items[ref.item]
    n_vocab = item.gene_mask.numel()
    ((_, s),) = sentences(
        item.adata,
        item.match.vocab_index,
        n_vocab,
        group_key=None,
        layer=cfg.layer,
        spatial_key=item.spatial_key,
        cells=cells,
    )
    n = s.n_cells
    return dataclasses.replace(
        s,
        batch=torch.full((n,), ref.batch_id, dtype=torch.int64),
        dataset=torch.full((n,), ref.item, dtype=torch.int64),
        gene_mask=item.gene_mask,
    )

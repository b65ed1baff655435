"""Zero-shot cell embeddings, scanpy style: ``embed(adata, checkpoint)`` fills ``adata.obsm['X_cellplm']``.

Each sentence (the cells of one ``obs[group_key]`` value) is read, moved to the device and embedded on its own,
so memory is bounded by the largest sentence (or ``max_cells``), not by the dataset: a backed AnnData of a
million cells never becomes a dense matrix. Embeddings are deterministic (most probable mixture component);
``sample_cluster=True`` reproduces upstream's stochastic Gumbel draw.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import InputError
from .data import check_counts, counts_matrix, gene_totals, match_genes, require_coverage, sentences
from .keys import BATCH, CELLPLM_EMBEDDING
from .model import CellPLM, load_model
from .runtime import Runtime
from .sentence_policy import SentencePolicy

log = logging.getLogger(__name__)

# The share of counts in the vocabulary is estimated on at most this many cells (spread over the input), so that
# a backed million-cell file is read once in full (while embedding), not twice.
COVERAGE_CELLS = 100_000


@dataclass
class EmbedResult:
    embedding: np.ndarray  # N x L float32
    cluster: np.ndarray  # N int, the mixture component of each cell
    info: dict = field(default_factory=dict)


def load_embedder(
    checkpoint, device: str = "auto", spatial_pe: bool | None = None, trusted_sha256=None
) -> tuple[CellPLM, dict]:
    """The embedder of a checkpoint and what loaded it; ``trusted_sha256``: see
    :func:`cellplm.model.checkpoint.read_checkpoint`."""
    model, report = load_model(checkpoint, task="embedder", spatial_pe=spatial_pe, trusted_sha256=trusted_sha256)
    return model, {"checkpoint": str(checkpoint), "load_report": report.summary()}


def embed_cells(
    adata,
    model: CellPLM,
    *,
    group_key: str | None = BATCH,
    policy: SentencePolicy | str = "batch",
    max_cells: int | None = None,
    layer: str | None = None,
    gene_ids: str | None = None,
    spatial_key: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    sample_cluster: bool = False,
    min_gene_share: float = 0.0,
    min_count_share: float = 0.0,
    progress: bool = True,
    source: str = "AnnData",
) -> EmbedResult:
    """Embed every cell of ``adata`` (in memory or backed) with ``model``; see :func:`embed`."""
    policy = SentencePolicy.parse(policy)
    if adata.n_obs == 0:
        raise InputError(source, "no cells to embed (empty sentence)")
    runtime = Runtime.resolve(device, precision)
    X = counts_matrix(adata, layer)
    check_counts(X[: min(adata.n_obs, 2000)], source)
    match = match_genes(
        adata.var,
        adata.var_names,
        model.config.gene_list,
        gene_ids=gene_ids,
        gene_totals=gene_totals(adata, layer, max_cells=COVERAGE_CELLS),
    )
    log.info("%s: %s", source, match.describe())
    require_coverage(match, source, min_gene_share, min_count_share)
    model = model.to(runtime.device).eval()
    out = np.zeros((adata.n_obs, model.config.post_latent_dim), dtype=np.float32)
    clusters = np.zeros(adata.n_obs, dtype=np.int64)
    n_sentences = 0
    t0 = time.perf_counter()
    with torch.inference_mode(), runtime.autocast():
        bar = tqdm(total=adata.n_obs, unit="cell", desc="embedding", disable=not progress)
        for idx, sentence in sentences(
            adata,
            match.vocab_index,
            model.config.n_genes,
            group_key=group_key,
            max_cells=max_cells,
            layer=layer,
            spatial_key=spatial_key,
            policy=policy,
        ):
            result = model.embed(sentence.to(runtime.device), sample_cluster=sample_cluster)
            out[idx] = result.z.float().cpu().numpy()
            clusters[idx] = result.cluster.cpu().numpy()
            bar.update(len(idx))
            n_sentences += 1
        bar.close()
    seconds = time.perf_counter() - t0
    info = {
        "genes": match.to_dict(),
        "count_share_from_cells": min(adata.n_obs, COVERAGE_CELLS),
        "device": runtime.device.type,
        "device_detail": runtime.describe(),
        "precision": runtime.precision,
        "n_sentences": n_sentences,
        "sentence_policy": {**policy.describe(), "mean_cells": adata.n_obs / n_sentences},
        "group_key": group_key,
        "max_cells": max_cells,
        "seconds": seconds,
        "cells_per_second": adata.n_obs / seconds if seconds > 0 else None,
        "cluster_choice": "Gumbel-softmax sample (upstream, stochastic)"
        if sample_cluster
        else "most probable (deterministic)",
    }
    return EmbedResult(out, clusters, info)


def embed(adata, checkpoint: str | Path | CellPLM, *, key_added: str = CELLPLM_EMBEDDING, copy: bool = False, **kwargs):
    """Zero-shot CellPLM embeddings of raw counts.

    Parameters
    ----------
    adata
        Cells x genes raw counts (``X``, or ``layer``); Ensembl ids or gene symbols (mapped offline).
    checkpoint
        Checkpoint prefix (``<prefix>.config.json`` + ``<prefix>.best.ckpt``) or a loaded :class:`CellPLM`.
    key_added
        ``obsm`` key of the embedding; the mixture component goes to ``obs['cellplm_cluster']`` and the
        provenance (checkpoint, gene coverage, device, precision) to ``uns['cellplm']``.
    **kwargs
        See :func:`embed_cells`: ``group_key`` (the batch column, default ``'batch'``), ``policy`` (which cells share
        a sentence, :mod:`cellplm.sentence_policy`: ``'batch'``, the default and upstream's, ``'single'``,
        ``'random:K'``, ``'spatial:K'``, ``'mixed:K'``; seeded with ``SentencePolicy.parse(text, seed)``),
        ``max_cells`` (split larger sentences), ``device``, ``precision`` (``'auto'``, ``'fp32'``, ``'bf16'``),
        ``sample_cluster``, ``min_gene_share`` / ``min_count_share`` (raise :class:`NotApplicable` below these),
        ``progress``.
    """
    adata = adata.copy() if copy else adata
    if isinstance(checkpoint, CellPLM):
        model, provenance = checkpoint, {"checkpoint": "in-memory model"}
    else:
        model, provenance = load_embedder(checkpoint, spatial_pe=kwargs.pop("spatial_pe", None))
    result = embed_cells(adata, model, **kwargs)
    adata.obsm[key_added] = result.embedding
    adata.obs["cellplm_cluster"] = result.cluster
    adata.uns["cellplm"] = {**provenance, **h5ad_safe(result.info)}
    return adata if copy else None


def h5ad_safe(info: dict) -> dict:
    """uns values h5ad can store (no None)."""
    return {k: (h5ad_safe(v) if isinstance(v, dict) else ("" if v is None else v)) for k, v in info.items()}

"""Zero-shot scGPT cell embeddings (the speed benchmark's), as ``scgpt.tasks.embed_data`` computes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import NotApplicable
from .genes import counts_of, gene_symbols, match_vocabulary, require_coverage
from .model import (
    autocast,
    build_model,
    device_detail,
    load_weights,
    read_model_dir,
    resolve_device,
    shape_of,
    vocab_from_genes,
)
from .tokenizer import PAD_TOKEN, PAD_VALUE, bin_values, token_stats, tokenize
from .upstream import torch


_EMBEDDER: dict = {}  # the last model built by embed_cells, reused while its key is the same


def _embedder(model_dir, shape_name: str, genes: tuple, device: torch.device, seed: int, n_bins: int):
    key = (str(model_dir) if model_dir else None, shape_name, hash(genes), str(device), seed, n_bins)
    if _EMBEDDER.get("key") != key:
        _EMBEDDER.clear()
        if model_dir:
            args, vocab = read_model_dir(model_dir)
            shape = {k: args[k] for k in ("embsize", "nheads", "d_hid", "nlayers")}
            model = build_model(shape, vocab, 1, 0.0, n_bins, int(args.get("pad_value", PAD_VALUE)))
            load_weights(model, Path(model_dir) / "best_model.pt")
            pad_value = int(args.get("pad_value", PAD_VALUE))
        else:
            vocab = vocab_from_genes([g for g in pd.unique(np.asarray(genes, dtype=object)) if g])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model(shape_of(shape_name), vocab, 1, 0.0, n_bins)
            pad_value = PAD_VALUE
        _EMBEDDER.update(key=key, model=model.to(device).eval(), vocab=vocab, pad_value=pad_value)
    return _EMBEDDER["model"], _EMBEDDER["vocab"], _EMBEDDER["pad_value"]


def embed_cells(
    adata,
    model_dir=None,
    shape: str = "whole_human",
    batch_size: int = 64,
    device="auto",
    amp: bool = True,
    max_seq_len: int = 1200,
    n_bins: int = 51,
    seed: int = 0,
    min_gene_share: float = 0.3,
    min_count_share: float = 0.5,
    return_info: bool = False,
):
    """Zero-shot scGPT cell embeddings, ``(n_cells, d_model)`` float32, L2-normalised as ``embed_data`` returns them.

    The ``<cls>`` output of the transformer for each cell's expressed genes (at most ``max_seq_len`` tokens
    including ``<cls>``; longer cells keep a seeded random subset of genes, as scGPT samples them), values binned
    as in fine-tuning. ``model_dir``: a whole-human-layout directory; without it, random weights of ``shape``
    (seeded) over a vocabulary of ``adata``'s genes. fp16 autocast on a GPU when ``amp``. Deterministic: the model
    runs in eval mode and the binning tie-breaks and gene sampling use ``seed``. The model is built once and reused
    by later calls with the same arguments, so repeated calls time the embedding, not the loading. With
    ``return_info``: (embeddings, what a run record wants: gene coverage, device, amp, tokens).
    """
    dev = resolve_device(device)
    counts = counts_of(adata, "embedding input")
    symbols, _ = gene_symbols(adata)
    model, vocab, pad_value = _embedder(model_dir, shape, tuple(symbols), dev, seed, n_bins)
    keep, coverage = match_vocabulary(symbols, counts, vocab)
    if model_dir:
        require_coverage(coverage, "embedding input", min_gene_share, min_count_share)
    elif not keep.any():
        raise NotApplicable("embedding input: no named genes")
    gene_ids = np.array(vocab([str(s) for s in symbols[keep]]), dtype=int)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        binned = bin_values(counts[:, np.flatnonzero(keep)], n_bins)
        batches = tokenize(binned, gene_ids, vocab, batch_size, max_seq_len, False, pad_value)
    finally:
        np.random.set_state(state)
    out = []
    with torch.no_grad():
        for batch in batches:
            genes = batch["genes"].to(dev).long()
            with autocast(dev, amp):
                h = model._encode(genes, batch["values"].to(dev), src_key_padding_mask=genes.eq(vocab[PAD_TOKEN]))
            out.append(h[:, 0, :].float().cpu().numpy())
    emb = np.concatenate(out) if out else np.zeros((0, model.d_model), dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = (emb / np.where(norms > 0, norms, 1)).astype(np.float32)
    if not return_info:
        return emb
    return emb, {
        "genes": coverage,
        "device": dev.type,
        "device_detail": device_detail(dev),
        "amp": bool(amp and dev.type == "cuda"),
        "tokens": {**token_stats(binned, max_seq_len), "n_bins": n_bins},
    }

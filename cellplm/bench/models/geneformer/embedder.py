"""Zero-shot Geneformer cell embeddings, computed as Geneformer's EmbExtractor does by default (the zero-shot
track's and the speed comparison's).

Geneformer's ``geneformer/emb_extractor.py`` (github.com/ctheodoris/Geneformer; read at commit e534f69 of a fork):
``EmbExtractor.__init__`` defaults to ``emb_mode="cls"`` (switched to ``"cell"`` for V1 models, which have no
``<cls>`` token) and ``emb_layer=-1`` ("-1: 2nd to last layer", "0: last layer"), and ``extract_embs`` takes
``layer_to_quant = quant_layers(model) + emb_layer`` (``quant_layers``: the number of encoder layers) as the index
into the model's ``hidden_states`` (embeddings output first, then one entry per layer). ``get_embs`` then takes
``hidden_states[layer][:, 0, :]`` in ``"cls"`` mode and, in ``"cell"`` mode, the mean of the non-padding
embeddings with ``<cls>`` and ``<eos>`` excluded.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...errors import InputError
from .files import find_model_files
from .tokenizer import anndata_ensembl_ids, make_tokenizer, pad_batch


@functools.lru_cache(maxsize=1)
def _pretrained_encoder(model_dir: str, weights: str, device: str):
    """The pretrained BertModel of a model directory (cached: repeated calls, e.g. speed timings, load it once)."""
    import torch
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, info = BertModel.from_pretrained(
        model_dir, add_pooling_layer=False, output_loading_info=True, dtype=torch.float32
    )
    missing = [k for k in info["missing_keys"] if k.startswith(("embeddings", "encoder"))]
    if missing or info["mismatched_keys"]:
        bad = missing or [str(k) for k in info["mismatched_keys"]]
        raise InputError(
            weights,
            f"the weights do not fit the BERT encoder of config.json: {len(bad)} encoder "
            f"tensors missing or of another shape (e.g. {bad[0]})",
        )
    return model.to(device).eval()


EMB_MODES = ("auto", "cls", "cell")


def embed_cells(
    adata,
    model_dir,
    device: str = "auto",
    batch_size: int = 32,
    max_input_size: int = 2048,
    special_tokens="auto",
    token_dictionary=None,
    gene_median_dictionary=None,
    gene_ids=None,
    emb_mode: str = "auto",
    emb_layer: int = -1,
    min_gene_share: float = 0.0,
    min_count_share: float = 0.0,
    return_info: bool = False,
):
    """Zero-shot Geneformer cell embeddings (n_cells x hidden_size), float32.

    As Geneformer's embedding extractor does by default (see the module docstring): ``emb_mode`` ``"cls"`` is the
    ``<cls>`` token's hidden state, ``"cell"`` the mean over a cell's gene tokens (padding and ``<cls>``/``<eos>``
    excluded), ``"auto"`` is ``"cls"`` when the cells are tokenised with ``<cls>`` (V2 dictionaries) and ``"cell"``
    otherwise (V1). ``emb_layer`` counts from the last layer as EmbExtractor's does: -1 the 2nd-to-last layer
    (``hidden_states[-2]``, the default), 0 the last. A cell without any dictionary gene gets zeros; below
    ``min_gene_share`` of the genes or ``min_count_share`` of the counts in the dictionary the input is
    :class:`~cellplm.bench.errors.NotApplicable`. With ``return_info``: (embeddings, what a run record wants: mode,
    layer, gene coverage, tokenisation, device).
    """
    import torch

    from ....runtime import resolve_device

    if emb_mode not in EMB_MODES:
        raise ValueError(f"emb_mode must be one of {', '.join(EMB_MODES)}, got {emb_mode!r}")
    if emb_layer > 0:
        raise ValueError(f"emb_layer counts back from the last layer (0 last, -1 2nd to last), got {emb_layer}")
    files = find_model_files(model_dir, token_dictionary, gene_median_dictionary)
    tokenizer, model_info = make_tokenizer(files, max_input_size, special_tokens)
    if emb_mode == "auto":
        emb_mode = "cls" if tokenizer.cls_token is not None else "cell"
    elif emb_mode == "cls" and tokenizer.cls_token is None:
        raise ValueError(
            "emb_mode cls: the cells are tokenised without <cls> (a V1 token dictionary, or "
            "special_tokens false); use emb_mode cell"
        )
    ids, id_source = anndata_ensembl_ids(adata, gene_ids)
    mapping = tokenizer.map_genes(ids, id_source, counts=adata.X)
    mapping.coverage.require("embedding input", min_gene_share, min_count_share)
    sequences = tokenizer.tokenize(adata.X, mapping)
    dev = resolve_device(device)
    model = _pretrained_encoder(str(Path(model_dir).resolve()), str(files.weights), str(dev))
    layer = emb_layer - 1  # hidden_states[n_layers + emb_layer] of n_layers + 1 entries
    special = [t for t in (tokenizer.pad_token, tokenizer.cls_token, tokenizer.eos_token) if t is not None]
    out = np.zeros((len(sequences), model.config.hidden_size), dtype=np.float32)
    cells = [i for i in np.argsort([-len(s) for s in sequences], kind="stable") if len(sequences[i])]
    with torch.no_grad():
        for start in range(0, len(cells), batch_size):
            batch = cells[start : start + batch_size]
            input_ids, mask = pad_batch([sequences[i] for i in batch], tokenizer.pad_token)
            input_ids, mask = input_ids.to(dev), mask.to(dev)
            hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            if emb_mode == "cls":
                emb = hidden[:, 0, :]  # <cls> is every sequence's first token
            else:
                genes = (mask.bool() & ~torch.isin(input_ids, torch.as_tensor(special, device=dev))).unsqueeze(-1)
                emb = (hidden * genes).sum(1) / genes.sum(1).clamp(min=1)
            out[batch] = emb.float().cpu().numpy()
    if not return_info:
        return out
    return out, {
        "emb_mode": emb_mode,
        "emb_layer": emb_layer,
        "hidden_states_index": layer,
        "genes": asdict(mapping.coverage),
        "tokenisation": tokenizer.settings(),
        "model": model_info,
        "cells_without_tokens": int(len(sequences) - len(cells)),
        "truncated_cells": tokenizer.n_truncated,
        "device": dev.type,
    }

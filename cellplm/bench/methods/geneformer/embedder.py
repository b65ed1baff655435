"""Zero-shot Geneformer cell embeddings: the mean of the penultimate layer's gene states (the speed comparison's)."""

from __future__ import annotations

import functools
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
    model, info = BertModel.from_pretrained(model_dir, add_pooling_layer=False, output_loading_info=True,
                                            dtype=torch.float32)
    missing = [k for k in info["missing_keys"] if k.startswith(("embeddings", "encoder"))]
    if missing or info["mismatched_keys"]:
        bad = missing or [str(k) for k in info["mismatched_keys"]]
        raise InputError(weights, f"the weights do not fit the BERT encoder of config.json: {len(bad)} encoder "
                                  f"tensors missing or of another shape (e.g. {bad[0]})")
    return model.to(device).eval()


def embed_cells(adata, model_dir, device: str = "auto", batch_size: int = 32, max_input_size: int = 2048,
                special_tokens="auto", token_dictionary=None, gene_median_dictionary=None, gene_ids=None,
                layer: int = -2) -> np.ndarray:
    """Zero-shot Geneformer cell embeddings (n_cells x hidden_size), float32.

    As Geneformer's embedding extractor does by default: the mean over a cell's gene tokens of the hidden states
    of ``layer`` (-2: the penultimate layer), padding and ``<cls>``/``<eos>`` excluded. A cell without any
    dictionary gene gets zeros.
    """
    import torch

    from ....runtime import resolve_device

    files = find_model_files(model_dir, token_dictionary, gene_median_dictionary)
    tokenizer, _ = make_tokenizer(files, max_input_size, special_tokens)
    ids, id_source = anndata_ensembl_ids(adata, gene_ids)
    sequences = tokenizer.tokenize(adata.X, tokenizer.map_genes(ids, id_source))
    dev = resolve_device(device)
    model = _pretrained_encoder(str(Path(model_dir).resolve()), str(files.weights), str(dev))
    special = [t for t in (tokenizer.pad_token, tokenizer.cls_token, tokenizer.eos_token) if t is not None]
    out = np.zeros((len(sequences), model.config.hidden_size), dtype=np.float32)
    cells = [i for i in np.argsort([-len(s) for s in sequences], kind="stable") if len(sequences[i])]
    with torch.no_grad():
        for start in range(0, len(cells), batch_size):
            batch = cells[start:start + batch_size]
            input_ids, mask = pad_batch([sequences[i] for i in batch], tokenizer.pad_token)
            input_ids, mask = input_ids.to(dev), mask.to(dev)
            hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            genes = (mask.bool() & ~torch.isin(input_ids, torch.as_tensor(special, device=dev))).unsqueeze(-1)
            mean = (hidden * genes).sum(1) / genes.sum(1).clamp(min=1)
            out[batch] = mean.float().cpu().numpy()
    return out

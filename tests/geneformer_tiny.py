"""A tiny Geneformer-style model directory for tests: a 2-layer BERT saved with save_pretrained + the two pickles."""

from __future__ import annotations

import pickle
from pathlib import Path


def write_tiny_geneformer(
    folder, genes, medians=None, special_tokens=False, max_position_embeddings=2048, seed=0, suffix=""
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (random BertForMaskedLM), ``token_dictionary{suffix}.pkl``
    (``<pad>``=0, ``<mask>``=1, [``<cls>``=2, ``<eos>``=3], then the genes in order) and
    ``gene_median_dictionary{suffix}.pkl`` (``medians``, default 1.0 each)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if special_tokens else [])
    tokens = {name: i for i, name in enumerate(specials + list(genes))}
    medians = [1.0] * len(genes) if medians is None else list(medians)
    with open(folder / f"token_dictionary{suffix}.pkl", "wb") as fh:
        pickle.dump(tokens, fh)
    with open(folder / f"gene_median_dictionary{suffix}.pkl", "wb") as fh:
        pickle.dump(dict(zip(genes, medians)), fh)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokens),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=0,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    return folder


def write_tiny_geneformer_for_symbols(folder, symbols, **kw) -> Path:
    """A tiny model directory whose dictionary holds the GENCODE v44 Ensembl ids of ``symbols``."""
    from cellplm.genes import symbols_to_ensembl

    return write_tiny_geneformer(folder, [g for g in symbols_to_ensembl(symbols) if g], **kw)

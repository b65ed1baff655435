"""The authors' package, scgpt 0.2.4, imported in one place, with torchtext's deprecation notice and scgpt's
"flash_attn is not installed" silenced. It needs torchtext, hence torch 2.3: outside ``.venv-scgpt`` (or the
scgpt conda env) this import fails, and the method registry makes the method's rows not applicable."""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch
    import torchtext

    torchtext.disable_torchtext_deprecation_warning()
    import scgpt
    from scgpt.model import TransformerModel
    from scgpt.model import model as scgpt_model_module
    from scgpt.preprocess import Preprocessor
    from scgpt.tokenizer import random_mask_value, tokenize_and_pad_batch
    from scgpt.tokenizer.gene_tokenizer import GeneVocab
    from scgpt.utils import load_pretrained

__all__ = [
    "torch",
    "scgpt",
    "scgpt_model_module",
    "TransformerModel",
    "Preprocessor",
    "random_mask_value",
    "tokenize_and_pad_batch",
    "GeneVocab",
    "load_pretrained",
]

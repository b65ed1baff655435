"""Our PyTorch implementation of CellPLM (Wen et al., ICLR 2024), one module per concept.

- :mod:`.config`: the model config (upstream ``config.json`` format) and named shapes
- :mod:`.sentence`: a tissue's cells as CSR rows over the gene vocabulary
- :mod:`.embedder`: counts to cell tokens, optional 2-D spatial encoding
- :mod:`.flowformer`: the linear-attention encoder over cells
- :mod:`.latent`: Gaussian-mixture VAE latent (pretraining, zero-shot) and linear latent (fine-tuning)
- :mod:`.decoder`: negative-binomial decoder and reconstruction loss
- :mod:`.masking`: cell dropping, cell and entry masking
- :mod:`.cellplm`: the model and its task heads
- :mod:`.checkpoint`: upstream-format checkpoints with a full key report

The names below are imported on first use, so that :mod:`.config` (shapes, the released config) can be read
without importing torch (the pretraining options, parsed by Snakemake, do).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "CellPLM": ".cellplm",
    "LoadReport": ".checkpoint",
    "load_model": ".checkpoint",
    "read_checkpoint": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "CellPLMConfig": ".config",
    "config_for_shape": ".config",
    "released_config": ".config",
    "Sentence": ".sentence",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

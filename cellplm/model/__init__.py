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
"""

from .cellplm import CellPLM
from .checkpoint import LoadReport, load_model, read_checkpoint, save_checkpoint
from .config import CellPLMConfig, config_for_shape, released_config
from .sentence import Sentence

__all__ = ["CellPLM", "CellPLMConfig", "LoadReport", "Sentence", "config_for_shape", "load_model", "read_checkpoint",
           "released_config", "save_checkpoint"]

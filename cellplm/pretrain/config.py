"""The pretraining settings (standard library only: the command-line options read their defaults here)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..keys import BATCH
from ..runtime import PRECISIONS

# PretrainConfig fields that may differ when resuming (they do not change the trajectory of the steps taken).
RESUME_FREE = {"epochs", "checkpoint_every", "max_steps", "device", "backed"}


@dataclass
class PretrainConfig:
    epochs: int = 10  # passes over the training sentences
    lr: float = 2e-4  # peak learning rate (released config: 2e-4)
    weight_decay: float = 1e-8  # AdamW weight decay (released config: 1e-8)
    warmup_steps: int = 1000  # linear warm-up over this many optimiser steps
    schedule: str = "constant"  # after warm-up: "constant" or "cosine" (to min_lr_ratio · lr at the last step)
    min_lr_ratio: float = 0.0  # floor of the cosine schedule, as a fraction of lr
    clip: float = 1.0  # max global gradient norm; 0 disables clipping
    seed: int = 0  # root of every random draw (init, split, order, subsampling, masking, dropout)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"; under torchrun CUDA ranks use LOCAL_RANK
    precision: str = "auto"  # "auto", "fp32" or "bf16" (autocast for encoder and decoder; losses in fp32)
    sentence_key: str | None = BATCH  # obs column defining sentences; a missing column = one sentence per item
    spatial_key: str | None = None  # obsm key of cell coordinates (items without it have no coordinates)
    layer: str | None = None  # layer with raw counts (default: layers['counts'] if present, else X)
    gene_ids: str | None = None  # var column with Ensembl ids (default: detected, see data.ensembl_ids)
    max_cells_per_sentence: int = 2000  # larger sentences are subsampled afresh at each use (upstream: 2000)
    val_sentences: int = 10  # whole sentences held out for the validation loss (released config: val_num=10)
    checkpoint_every: int = 1000  # write <out>/last every this many steps (and at every epoch end)
    max_steps: int | None = None  # stop after this many global steps (as if interrupted; resume continues)
    backed: bool = False  # read h5ad files in backed mode (memory bounded by a sentence; slower)

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule {self.schedule!r}: choose constant or cosine")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        for name in ("epochs", "max_cells_per_sentence", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.warmup_steps < 0 or self.val_sentences < 0 or self.clip < 0 or self.lr <= 0:
            raise ConfigError("warmup_steps, val_sentences and clip must be >= 0 and lr > 0")

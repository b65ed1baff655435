"""The pretraining objective (masked cell modelling loss, as a module for DDP) and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..model.cellplm import CellPLM
from ..model.sentence import Sentence
from ..runtime import Runtime
from .config import PretrainConfig


class Objective(nn.Module):
    """The pretraining loss as a module for DDP (the model keeps latent, decoder and losses in fp32 under autocast)."""

    def __init__(self, model: CellPLM, runtime: Runtime):
        super().__init__()
        self.model = model
        self.runtime = runtime

    def forward(self, sentence: Sentence, generator: torch.Generator):
        with self.runtime.autocast():
            out = self.model.pretrain_step(sentence, generator)
        return out.loss, out.latent_loss, out.reconstruction_loss


def lr_lambda(cfg: PretrainConfig, total_steps: int) -> Callable[[int], float]:
    warm, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def factor(k: int) -> float:  # k: number of updates already taken
        if k < warm:
            return (k + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - warm)
        progress = min(1.0, (k - warm) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor

"""scDiff's annotation: the diffusion classifier (Li et al. 2023, "Your diffusion model is secretly a zero-shot
classifier") as ``scdiff/modules/classifier.py::DiffusionClassifier`` runs it under the annotation config.

For each candidate condition (``query_mode: seen``: every (batch, cell type) pair of the training cells), each test
cell is noised at a few time steps and denoised by the model with that condition and no context (the context
encoder sees zeros, ``inference_mask: all``); the candidate with the lowest mean squared reconstruction error over
genes and time steps is the cell's prediction. With one round (``n_samples_list: [5]``, ``to_keep_list: [1]``) the
time steps are ``IterativeUniformTimeStepSampler``'s grid: 5 of 1,000 steps, ``100, 300, 500, 700, 900``. As
upstream, each (candidate, time step) draws its own noise.
"""

from __future__ import annotations

import numpy as np
import torch


def uniform_time_steps(timesteps: int, n_samples: int, seed: int = 42) -> list[int]:
    """The time steps of ``IterativeUniformTimeStepSampler(timesteps, n_samples)(n_samples)``: the centres of
    ``n_samples`` equal intervals of ``[0, timesteps)``, (a seeded sorted subset when the grid is longer)."""
    interval = timesteps // n_samples
    grid = list(range(interval // 2, timesteps, interval))
    if len(grid) > n_samples:
        grid = sorted(np.random.default_rng(seed).choice(grid, size=n_samples, replace=False).tolist())
    return grid


@torch.no_grad()
def classify(model, diffusion, x: torch.Tensor, candidates: torch.Tensor, time_steps: list[int]) -> torch.Tensor:
    """Index into ``candidates`` (n_candidates, 2: cell-type code, batch code) of each cell of ``x`` (cells, genes):
    the condition under which ``model`` reconstructs the cell best (``DiffusionClassifier.eval_error``)."""
    errors = torch.zeros(len(x), len(candidates), device=x.device)
    empty = torch.zeros_like(x)  # no context: the decoder alone
    for j, (cell_type, batch) in enumerate(candidates.tolist()):
        codes = [torch.full((len(x),), c, device=x.device, dtype=torch.long) for c in (cell_type, batch)]
        for t in time_steps:
            t_ = torch.tensor([t], device=x.device)
            pred = model(empty, diffusion.q_sample(x, t_), t_, *codes)
            errors[:, j] += ((x - pred) ** 2).mean(dim=1)
    return (errors / len(time_steps)).argmin(dim=1)

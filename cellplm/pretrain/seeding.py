"""Randomness and resume state: every random draw is seeded from (seed, stream, epoch, step, rank).

No RNG state is carried between steps, so a run resumed from its last checkpoint (which stores only the step)
retraces the uninterrupted run bit for bit on the CPU.
"""

from __future__ import annotations

import numpy as np

# Random streams: one seed per (seed, stream, epoch, step, rank).
ORDER, SUBSAMPLE, MASK, TORCH, VAL_SPLIT = range(5)
VALIDATION_EPOCH = 1 << 30  # the epoch key of the validation draws (apart from every training epoch)


def seed(*key: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0] >> 1)


def rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def subsample(cells: np.ndarray, max_cells: int, rng: np.random.Generator) -> np.ndarray:
    if len(cells) <= max_cells:
        return cells
    return np.sort(rng.choice(cells, size=max_cells, replace=False))

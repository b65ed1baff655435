"""Sentence policies: which cells CellPLM reads together.

CellPLM reads a cell in the context of the other cells of its sentence (Flowformer attention runs across them), so
the company a cell keeps can change its embedding and its predicted type. A policy says how the cells are grouped:

    batch       one sentence per value of ``obs[group_key]`` (a sample or tissue): upstream's, and the default
    random:K    random sentences of K cells within each batch (seeded)
    single      every cell alone (K = 1): no cell sees another (``random:1`` is the same policy)
    spatial:K   spatially compact sentences of K cells within each batch (``obsm['spatial']``): the tissue is cut
                by recursive bisection along its wider axis (a k-d tree whose leaves hold K cells)
    mixed:K     random sentences of K cells drawn across batches (seeded)

A sentence lists positions of cells (rows of the AnnData), sorted; every cell is in exactly one sentence. The last
sentence of a batch (or, for ``mixed``, of the data) may hold fewer than K cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

KINDS = ("batch", "random", "single", "spatial", "mixed")
SIZED = ("random", "spatial", "mixed")  # the kinds written kind:K
SPATIAL_KEY = "spatial"  # obsm key of the coordinates the spatial policy reads


@dataclass(frozen=True)
class SentencePolicy:
    kind: str = "batch"
    k: int | None = None  # cells per sentence (sized kinds; 1 for single)
    seed: int = 0  # of the random and mixed draws

    @classmethod
    def parse(cls, text: "str | SentencePolicy", seed: int = 0) -> "SentencePolicy":
        """``"batch"``, ``"single"``, ``"random:16"``, ``"spatial:16"``, ``"mixed:256"``; ValueError otherwise."""
        if isinstance(text, SentencePolicy):
            return text
        kind, _, size = str(text).strip().partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown sentence policy {text!r} (known: batch, single, random:K, spatial:K, mixed:K)")
        if kind in SIZED:
            if not size.isdigit() or int(size) < 1:
                raise ValueError(f"sentence policy {text!r}: write it {kind}:K, K a positive integer")
            if kind == "random" and int(size) == 1:
                return cls("single", 1, seed)
            return cls(kind, int(size), seed)
        if size:
            raise ValueError(f"sentence policy {text!r}: {kind} takes no size")
        return cls(kind, 1 if kind == "single" else None, seed)

    def __str__(self) -> str:
        return f"{self.kind}:{self.k}" if self.kind in SIZED else self.kind

    @property
    def slug(self) -> str:
        """A name for files and ids: ``batch``, ``single``, ``random16``, ``spatial16``, ``mixed256``."""
        return f"{self.kind}{self.k}" if self.kind in SIZED else self.kind

    @property
    def seeded(self) -> bool:
        return self.kind in ("random", "mixed")

    def describe(self) -> dict:
        """What a run record says of the policy."""
        return {"policy": str(self), "kind": self.kind, "k": self.k, "seed": self.seed if self.seeded else None}

    def groups(self, batches, coords: np.ndarray | None = None) -> list[np.ndarray]:
        """The sentences of cells whose batch (one value per cell) and, for ``spatial``, coordinates (cells x 2 or
        more) are given: sorted position arrays, every cell in exactly one."""
        n = len(batches)
        by_batch = _batches(batches)
        if self.kind == "batch":
            return by_batch
        if self.kind == "single":
            return [np.array([i]) for i in range(n)]
        if self.kind == "mixed":
            return _chunks(np.random.default_rng(self.seed).permutation(n), self.k)
        if self.kind == "random":
            rng = np.random.default_rng(self.seed)
            return [s for cells in by_batch for s in _chunks(rng.permutation(cells), self.k)]
        if coords is None:
            raise ValueError("the spatial sentence policy needs coordinates (obsm['spatial'])")
        coords = np.asarray(coords, dtype=np.float64)[:, :2]
        return [np.sort(s) for cells in by_batch for s in _bisect(cells, coords, self.k)]


def _batches(batches) -> list[np.ndarray]:
    """Positions of each batch's cells, in order of first appearance."""
    codes, _ = pd.factorize(pd.Series(batches).astype(str), sort=False)
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


def _chunks(cells: np.ndarray, k: int) -> list[np.ndarray]:
    return [np.sort(cells[i : i + k]) for i in range(0, len(cells), k)]


def _bisect(cells: np.ndarray, coords: np.ndarray, k: int) -> list[np.ndarray]:
    """Cut ``cells`` into spatially compact groups of ``k`` (one smaller group holds the remainder): split along the
    wider axis of their bounding box, the first part holding a multiple of ``k`` cells, until a part fits ``k``."""
    out, todo = [], [cells]
    while todo:
        part = todo.pop()
        if len(part) <= k:
            out.append(part)
            continue
        xy = coords[part]
        axis = int(np.argmax(xy.max(0) - xy.min(0)))
        order = part[np.argsort(xy[:, axis], kind="stable")]
        cut = k * max(1, round(len(part) / k / 2))  # a multiple of k near the middle
        todo += [order[cut:], order[:cut]]
    return out

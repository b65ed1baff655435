"""A sentence: the cells of one tissue (a sample or a field of view), each cell one token.

Counts are held as CSR rows whose column indices are already *vocabulary* indices, so the embedder needs no
per-call gene gathering and a cell is only as large as its non-zero entries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class Sentence:
    indptr: torch.Tensor  # N+1, int64
    indices: torch.Tensor  # nnz, int64 vocabulary index of each entry
    values: torch.Tensor  # nnz, float32 raw counts
    n_vocab: int  # V, the width of the dense view
    coords: torch.Tensor | None = None  # N x 2 in [0, 1], or None (no spatial information)
    batch: torch.Tensor | None = None  # N, int64 decoder batch-covariate ids
    dataset: torch.Tensor | None = None  # N, int64 decoder dataset-covariate ids
    gene_mask: torch.Tensor | None = None  # V bool: genes measured in this sentence's dataset (None: all)
    entry_keep: torch.Tensor | None = None  # nnz float, 0 where an entry is masked (set by masking)

    @property
    def n_cells(self) -> int:
        return self.indptr.numel() - 1

    @property
    def device(self) -> torch.device:
        return self.values.device

    @classmethod
    def from_csr(cls, counts: sp.csr_matrix, vocab_index: np.ndarray, n_vocab: int, **kw) -> "Sentence":
        """From a cells x genes CSR matrix and, per column, its vocabulary index (columns with -1 are dropped)."""
        counts = sp.csr_matrix(counts)
        vocab_index = np.asarray(vocab_index, dtype=np.int64)
        col_vocab = vocab_index[counts.indices]
        keep = col_vocab >= 0
        if keep.all():
            indptr, indices, values = counts.indptr, col_vocab, counts.data
        else:
            row = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))[keep]
            indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=counts.shape[0]))])
            indices, values = col_vocab[keep], counts.data[keep]
        return cls(
            indptr=torch.as_tensor(np.asarray(indptr, dtype=np.int64)),
            indices=torch.as_tensor(np.asarray(indices, dtype=np.int64)),
            values=torch.as_tensor(np.asarray(values, dtype=np.float32)),
            n_vocab=n_vocab,
            **kw,
        )

    def to(self, device) -> "Sentence":
        def move(t):
            return t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t

        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def dense(self) -> torch.Tensor:
        """N x V dense counts (pretraining targets)."""
        out = torch.zeros(self.n_cells, self.n_vocab, dtype=self.values.dtype, device=self.device)
        return out.index_put_((self.row_ids(), self.indices), self.values, accumulate=True)

    def row_ids(self) -> torch.Tensor:
        """Cell index of every non-zero entry (nnz)."""
        return torch.repeat_interleave(torch.arange(self.n_cells, device=self.device), torch.diff(self.indptr))

    def select(self, cells: torch.Tensor) -> "Sentence":
        """The sub-sentence of the given cells (in that order)."""
        starts, ends = self.indptr[cells], self.indptr[cells + 1]
        lengths = ends - starts
        indptr = torch.zeros(cells.numel() + 1, dtype=torch.int64, device=self.device)
        indptr[1:] = torch.cumsum(lengths, 0)
        # positions of the kept entries in the old arrays
        offsets = torch.repeat_interleave(starts - indptr[:-1], lengths)
        pos = torch.arange(int(indptr[-1]), device=self.device) + offsets

        def rows(t):
            return None if t is None else t[cells]

        return dataclasses.replace(
            self,
            indptr=indptr,
            indices=self.indices[pos],
            values=self.values[pos],
            coords=rows(self.coords),
            batch=rows(self.batch),
            dataset=rows(self.dataset),
            entry_keep=None if self.entry_keep is None else self.entry_keep[pos],
        )

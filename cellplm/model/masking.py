"""Masked cell modelling: drop cells from a sentence, pick cells to mask, mask gene entries in them.

1. Cell dropping: keep min(max_cells, ⌊N · (1 - drop_node_rate)⌋) random cells.
2. Cell masking: ⌊mask_node_rate · n⌋ of the kept cells are chosen.
3. Entry masking: every gene entry of a chosen cell (zeros included) is masked with p = mask_feature_rate.
Masked non-zero counts are hidden from the embedder; the loss is computed on the masked cells.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .sentence import Sentence


@dataclass
class Mask:
    cells: torch.Tensor  # indices of the masked cells within the (dropped) sentence
    entries: torch.Tensor | None  # N x V bool, True where an entry is masked; None when not needed (fine-tuning)


def drop_cells(
    sentence: Sentence, rate: float, max_cells: int, generator: torch.Generator | None = None
) -> tuple[Sentence, torch.Tensor]:
    """A random subset of the cells, kept in their original order; returns it with the kept indices."""
    n = sentence.n_cells
    keep_n = min(max_cells, int(n * (1.0 - rate)))
    if keep_n >= n:
        return sentence, torch.arange(n, device=sentence.device)
    keep = torch.randperm(n, generator=generator, device="cpu")[:keep_n].sort().values.to(sentence.device)
    return sentence.select(keep), keep


def mask_sentence(
    sentence: Sentence,
    node_rate: float,
    feature_rate: float,
    dense_mask: bool,
    generator: torch.Generator | None = None,
) -> tuple[Sentence, Mask]:
    """Mask ⌊node_rate·N⌋ cells and, in them, each entry with probability ``feature_rate``.

    With ``dense_mask`` the full N x V entry mask is drawn (pretraining needs it for the loss on masked zeros);
    otherwise only the non-zero entries are drawn, which is all the embedder needs (fine-tuning augmentation).
    """
    n = sentence.n_cells
    cells = torch.randperm(n, generator=generator, device="cpu")[: int(node_rate * n)].sort().values
    rows = sentence.row_ids().cpu()
    if dense_mask:
        entries = torch.zeros(n, sentence.n_vocab, dtype=torch.bool)
        entries[cells] = torch.rand(len(cells), sentence.n_vocab, generator=generator) < feature_rate
        hidden = entries[rows, sentence.indices.cpu()]
        cells = torch.nonzero(entries.any(1)).flatten()  # the loss counts a cell as masked if any entry is
    else:
        entries = None
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[cells] = True
        hidden = chosen[rows] & (torch.rand(rows.numel(), generator=generator) < feature_rate)
    keep = (~hidden).to(sentence.values.dtype).to(sentence.device)
    mask = Mask(cells=cells.to(sentence.device), entries=None if entries is None else entries.to(sentence.device))
    return dataclasses.replace(sentence, entry_keep=keep), mask


def fixed_mask(sentence: Sentence, entries: torch.Tensor) -> tuple[Sentence, Mask]:
    """Apply a given N x V entry mask (True = masked); the masked cells are those with any masked entry."""
    entries = entries.to(torch.bool).to(sentence.device)
    hidden = entries[sentence.row_ids(), sentence.indices]
    cells = torch.nonzero(entries.any(1)).flatten()
    return dataclasses.replace(sentence, entry_keep=(~hidden).to(sentence.values.dtype)), Mask(
        cells=cells, entries=entries
    )

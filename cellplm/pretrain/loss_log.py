"""``loss.tsv``: one row per training step (averaged over ranks) and one per epoch for the validation loss."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io import atomic_path

LOSS_LOG = "loss.tsv"
LOG_COLUMNS = ("step", "epoch", "split", "loss", "latent_loss", "reconstruction_loss", "lr", "n_cells", "seconds")


class LossLog:
    """``loss.tsv``, appended row by row (rank 0); a resumed run truncates it to the rows its checkpoint saw."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled, self.rows = path, enabled, 0

    def start(self, keep_rows: int | None):
        if not self.enabled:
            return
        lines = [] if keep_rows is None or not self.path.exists() else self.path.read_text().splitlines()[1:]
        if keep_rows is not None and len(lines) < keep_rows:
            raise InputError(self.path, f"holds {len(lines)} rows but the checkpoint expects {keep_rows}")
        lines = lines[:keep_rows] if keep_rows is not None else []
        with atomic_path(self.path) as tmp:
            tmp.write_text("\n".join(["\t".join(LOG_COLUMNS), *lines]) + "\n")
        self.rows = len(lines)

    def add(self, **row):
        if not self.enabled:
            return
        fmt = {k: (repr(float(v)) if isinstance(v, float) else str(v)) for k, v in row.items()}
        with open(self.path, "a") as fh:
            fh.write("\t".join(fmt[c] for c in LOG_COLUMNS) + "\n")
        self.rows += 1

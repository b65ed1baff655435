"""Atomic writes and checked reads of the workflow's tables and text, built on :mod:`cellplm.io`.

Every file the workflow produces is written to a temporary name in the destination folder and renamed
into place only when complete, so an interrupted job never leaves a file that looks finished.
"""

from __future__ import annotations

import h5py
import pandas as pd

from ..io import atomic_path, open_h5ad, read_h5ad, write_h5ad, write_json

__all__ = ["atomic_path", "h5ad_n_obs", "open_h5ad", "read_h5ad", "write_h5ad", "write_json", "write_text", "write_tsv"]


def write_tsv(df: pd.DataFrame, path, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=index, na_rep="NA")


def write_text(text: str, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def h5ad_n_obs(path) -> int:
    """The number of cells of an h5ad file, read from its obs index alone."""
    with open_h5ad(path) as f:
        obs = f["obs"]
        if isinstance(obs, h5py.Dataset):  # anndata < 0.7: a structured array
            return int(obs.shape[0])
        return int(obs[obs.attrs["_index"]].shape[0])

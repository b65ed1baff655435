"""Reading what the embedding methods wrote: one embedding.h5ad (``obsm['X_emb']``) and run.json per dataset and
method, for the jobs that use them (zero-shot kNN, scib-metrics scores, UMAPs)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..keys import EMBEDDING
from .errors import InputError
from .io import read_h5ad


def read_embedding(path, record_path) -> tuple[np.ndarray | None, pd.Index, dict]:
    """(embedding, cell ids, run record) of one embedding file; the embedding is None unless its status is ok."""
    with open(record_path) as f:
        record = json.load(f)
    adata = read_h5ad(path)
    if record.get("status") != "ok":
        return None, adata.obs_names, record
    if EMBEDDING not in adata.obsm:
        raise InputError(path, f"no obsm['{EMBEDDING}'] although its record says ok")
    emb = np.asarray(adata.obsm[EMBEDDING], dtype=np.float32)
    if emb.shape[0] != adata.n_obs:
        raise InputError(path, f"obsm['{EMBEDDING}'] has {emb.shape[0]} rows for {adata.n_obs} cells")
    return emb, adata.obs_names, record


def read_embeddings(ids, paths, record_paths) -> tuple[dict, dict, pd.Index]:
    """The embeddings of one dataset: ({id: array} of those that ran, {id: (status, reason)} of the others, cell
    ids). Every file must hold the same cells in the same order (they embed the same split)."""
    arrays, unavailable, cells = {}, {}, None
    for name, path, record_path in zip(ids, paths, record_paths):
        emb, obs_names, record = read_embedding(path, record_path)
        if cells is None:
            cells = obs_names
        elif not obs_names.equals(cells):
            raise InputError(path, "holds other cells than the dataset's other embeddings")
        if emb is None:
            unavailable[name] = (record.get("status", "failed"), record.get("reason", ""))
        else:
            arrays[name] = emb
    return arrays, unavailable, cells if cells is not None else pd.Index([])

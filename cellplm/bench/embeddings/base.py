"""The embedding contract and the harness that embeds the cells of one split and records the run.

An embedding method is an :class:`Embedder`: ``embed(cells)`` returns one vector per cell, ``(n_cells, d)``. The
cells are the split's train cells then its test cells, raw counts in ``X``, the genes in ``var``, and ``obs``
holding only ``batch``: the harness removes the labels (``cell_type``) and ``is_validation`` before the method sees
the cells, so a zero-shot embedding never sees a label. Only a control that declares ``needs_labels = True`` (the
jittered cell types) gets ``obs['cell_type']`` of every cell: the train file's, then the split's solution file's.

:func:`run` seeds, times ``embed``, checks what it returned and always writes two files (atomically):
``embedding.h5ad`` (obs: cell ids, ``batch``, ``set``; ``obsm['X_emb']`` float32 when the run is ok; uns: ids,
status, reason) and ``run.json`` (the :class:`EmbeddingRecord`). A method that raises
:class:`~cellplm.bench.errors.NotApplicable`, or whose packages are missing here, is recorded as
``not_applicable``; any other exception as ``failed`` (or re-raised with ``on_error="raise"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...keys import BATCH, BATCH_KEY, EMBEDDING, LABEL
from ...memory import reset_peak_rss
from ...sentence_policy import SPATIAL_KEY
from ..errors import InputError
from ..harness import Record, finish, instantiate, outcome, versions
from ..io import read_h5ad, write_h5ad, write_json
from ..registry import Parameterised
from . import REGISTRY


class Embedder(Parameterised):
    """Base class of the embedding methods. Subclasses implement :meth:`embed`; what describes them (label,
    implementation, default params) is the ``embedding.yaml`` beside their module (:class:`Parameterised`)."""

    registry = REGISTRY
    needs_labels: bool = False  # controls only: cells.obs also has the cell type (from the split's solution file)

    def embed(self, cells: ad.AnnData) -> np.ndarray:
        """One vector per cell, ``(cells.n_obs, d)``; ``cells.obs`` has only ``batch`` (and ``cell_type`` for an
        Embedder that needs the labels)."""
        raise NotImplementedError


@dataclass
class EmbeddingIds:
    dataset: str
    split: str
    embedding: str
    seed: int
    param_set: str = "default"


@dataclass
class EmbeddingRecord(Record):
    embed_s: float | None = None
    cells_per_s: float | None = None
    n_cells: int = 0
    n_dims: int | None = None


def split_cells(train_path, test_path, solution_path=None) -> tuple[ad.AnnData, np.ndarray]:
    """The cells an embedding method sees (train cells then test cells, in file order; raw counts, the train file's
    ``var``, ``obs['batch']`` as strings and nothing else; ``obsm['spatial']`` where both files have coordinates;
    ``uns['batch_key']``, the dataset column obs['batch'] is, where the split files say it) and which set each cell
    is from ("train"/"test"). With ``solution_path``, ``obs['cell_type']`` too: the train file's labels, then the
    solution file's of the test cells."""
    train, test = read_h5ad(train_path, layers=False), read_h5ad(test_path, layers=False)
    for path, part in ((train_path, train), (test_path, test)):
        if BATCH not in part.obs:
            raise InputError(path, f"no obs['{BATCH}'] (every cell of a split has a batch)")
    if not train.var_names.equals(test.var_names):
        raise InputError(test_path, f"not the genes of {train_path}: the two files of a split share their genes")
    obs = pd.DataFrame(
        {BATCH: np.concatenate([train.obs[BATCH].astype(str), test.obs[BATCH].astype(str)])},
        index=train.obs_names.append(test.obs_names),
    )
    if not obs.index.is_unique:
        raise InputError(test_path, f"cell ids also in {train_path}: a cell is in one set of a split")
    if solution_path is not None:
        obs[LABEL] = split_labels(train, test, solution_path)
    X = sp.vstack([sp.csr_matrix(train.X), sp.csr_matrix(test.X)], format="csr")  # (n_train + n_test, n_genes)
    sets = np.repeat(["train", "test"], [train.n_obs, test.n_obs])
    uns = {BATCH_KEY: str(train.uns[BATCH_KEY])} if BATCH_KEY in train.uns else {}
    cells = ad.AnnData(X, obs=obs, var=train.var.copy(), uns=uns)
    if all(SPATIAL_KEY in part.obsm for part in (train, test)):  # coordinates, for CellPLM's spatial sentences
        cells.obsm[SPATIAL_KEY] = np.concatenate([np.asarray(part.obsm[SPATIAL_KEY]) for part in (train, test)])
    return cells, sets


def split_labels(train: ad.AnnData, test: ad.AnnData, solution_path) -> np.ndarray:
    """The cell type of every cell of a split, train cells then test cells, as strings (the solution file holds the
    test cells' labels)."""
    solution = read_h5ad(solution_path, layers=False).obs
    missing = test.obs_names.difference(solution.index)
    if len(missing):
        raise InputError(solution_path, f"no label for {len(missing)} test cells (e.g. {missing[0]}): another split's?")
    return np.concatenate([train.obs[LABEL].astype(str), solution[LABEL].reindex(test.obs_names).astype(str)])


def checked(z, n_cells: int) -> np.ndarray:
    """``z`` as a float32 ``(n_cells, d)`` array, d >= 1; RuntimeError for another shape or non-finite values."""
    z = np.asarray(z)
    if z.ndim != 2 or z.shape[0] != n_cells or z.shape[1] < 1:
        raise RuntimeError(f"embed returned an array of shape {z.shape} for {n_cells} cells (want ({n_cells}, d))")
    z = z.astype(np.float32, copy=False)
    if not np.isfinite(z).all():
        raise RuntimeError(f"embed returned non-finite values for {int((~np.isfinite(z)).any(axis=1).sum())} cells")
    return z


def run(
    embedding,
    ids: EmbeddingIds,
    train_path,
    test_path,
    embedding_path,
    record_path,
    params: dict | None = None,
    solution_path=None,
    on_error: str = "record",
    log=print,
) -> EmbeddingRecord:
    """Embed the cells of one split with one method; always write ``embedding_path`` and ``record_path``.

    ``embedding`` is an Embedder class or an embedding id (its folder); a method that this interpreter cannot import
    is recorded as ``not_applicable`` with what is missing. Unknown params make the run ``failed``.
    ``solution_path`` (the split's solution file) is read only for an Embedder with ``needs_labels``.
    """
    reset_peak_rss()  # this run's peak, also when a process runs several (a batch job)
    params = dict(params or {})
    embedder_cls, meta, unavailable = REGISTRY.resolve(embedding, Embedder)
    record = EmbeddingRecord(
        ids=ids, params=params, implementation=meta.get("implementation", ""), versions=versions(embedder_cls.packages)
    )
    cells, sets = split_cells(train_path, test_path, solution_path if embedder_cls.needs_labels else None)
    record.n_cells = cells.n_obs
    out = ad.AnnData(obs=pd.DataFrame({BATCH: cells.obs[BATCH].to_numpy(), "set": sets}, index=cells.obs_names))
    model = None
    with outcome(record, ids.embedding, on_error, log):
        model = instantiate(embedder_cls, unavailable, ids.seed, params)
        model.check_params()
        t0 = time.perf_counter()
        z = model.embed(cells)
        record.embed_s = time.perf_counter() - t0
        out.obsm[EMBEDDING] = checked(z, cells.n_obs)
        record.n_dims = int(out.obsm[EMBEDDING].shape[1])
        record.cells_per_s = cells.n_obs / record.embed_s if record.embed_s > 0 else None
        record.device, record.n_genes_used, record.extra = model.device, model.n_genes_used, model.extra
        log(
            f"{ids.embedding} on {ids.dataset}/{ids.split} seed {ids.seed}: {cells.n_obs} cells x {record.n_dims} "
            f"dims in {record.embed_s:.2f}s, {record.n_genes_used} genes, device {record.device}"
        )
    finish(record, model)

    out.uns.update(
        {
            "dataset_id": ids.dataset,
            "split_id": ids.split,
            "embedding_id": ids.embedding,
            "seed": ids.seed,
            "status": record.status,
            "reason": record.reason,
        }
    )
    write_h5ad(out, embedding_path)
    write_json(record.to_dict(), record_path)
    return record

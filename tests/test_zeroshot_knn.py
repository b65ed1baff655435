"""The zero-shot annotation rows: a kNN on an embedding file's train cells, run by the methods' harness."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellplm.bench.io import read_h5ad
from cellplm.bench.methods.base import RunIds, run
from cellplm.bench.methods.zeroshot import EmbeddingKNN
from cellplm.keys import EMBEDDING
from conftest import make_counts_adata, write_split_files

META = {"label": "Toy embedding + kNN", "implementation": "kNN on a toy embedding"}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    a = make_counts_adata(n_cells=120, n_types=3, batches=2)
    a.uns["dataset_id"] = "toy"
    return a, write_split_files(a, folder)


def _embedding(folder, adata, status="ok", reason="", emb=None, drop=0):
    """An embedding file and record as the embedding harness writes them (train and test cells, one row each)."""
    cells = adata[drop:]
    out = ad.AnnData(obs=pd.DataFrame({"batch": cells.obs["batch"].astype(str).to_numpy()}, index=cells.obs_names))
    if status == "ok":
        out.obsm[EMBEDDING] = (
            emb[drop:]
            if emb is not None
            else np.eye(3, dtype=np.float32)[pd.Categorical(cells.obs["cell_type"]).codes]
            + 0.01 * np.random.default_rng(0).normal(size=(cells.n_obs, 3)).astype(np.float32)
        )
    out.write_h5ad(folder / "embedding.h5ad")
    record = {
        "embedding": "toy",
        "status": status,
        "reason": reason,
        "device": "cpu",
        "embed_s": 0.5,
        "n_genes_used": 12,
        "extra": {"checkpoint": "random initialisation", "checkpoint_kind": "random initialisation", "shape": "tiny"},
    }
    (folder / "run.json").write_text(json.dumps(record))
    return {"embedding": str(folder / "embedding.h5ad"), "record": str(folder / "run.json"), "k": 5}


def _run(split_files, tmp_path, params):
    return run(
        EmbeddingKNN.of("toy_zeroshot", META),
        RunIds("toy", "published", "toy_zeroshot", 0),
        split_files["train"],
        split_files["test"],
        tmp_path / "prediction.h5ad",
        tmp_path / "run.json.out",
        params=params,
        log=lambda *a: None,
    )


def test_knn_on_the_embedding_predicts_the_test_cells(split, tmp_path):
    adata, files = split
    record = _run(files, tmp_path, _embedding(tmp_path, adata))
    assert record.status == "ok", record.reason
    pred = read_h5ad(tmp_path / "prediction.h5ad")
    truth = read_h5ad(files["solution"]).obs["cell_type"].astype(str)
    assert pred.obs_names.equals(truth.index)
    assert (pred.obs["label_pred"].astype(str) == truth).all()  # the embedding separates the types
    rec = json.loads((tmp_path / "run.json.out").read_text())
    assert (
        rec["implementation"] == META["implementation"] and rec["extra"]["checkpoint_kind"] == "random initialisation"
    )
    assert rec["extra"]["embedding"] == "toy" and rec["n_genes_used"] == 12


def test_a_random_embedding_predicts_about_chance(split, tmp_path):
    adata, files = split
    noise = np.random.default_rng(1).normal(size=(adata.n_obs, 3)).astype(np.float32)
    _run(files, tmp_path, _embedding(tmp_path, adata, emb=noise))
    pred = read_h5ad(tmp_path / "prediction.h5ad").obs["label_pred"].astype(str)
    truth = read_h5ad(files["solution"]).obs["cell_type"].astype(str)
    assert (pred == truth).mean() < 0.8  # the kNN reads the embedding, not the labels


@pytest.mark.parametrize("status", ["not_applicable", "failed"])
def test_an_embedding_that_did_not_run_gives_a_row_with_its_reason(split, tmp_path, status):
    adata, files = split
    record = _run(files, tmp_path, _embedding(tmp_path, adata, status=status, reason="no model directory"))
    assert record.status == status and "no model directory" in record.reason
    assert read_h5ad(tmp_path / "prediction.h5ad").obs["label_pred"].isna().all()


def test_cells_missing_from_the_embedding_fail_the_row_by_name(split, tmp_path):
    adata, files = split
    record = _run(files, tmp_path, _embedding(tmp_path, adata, drop=5))
    assert record.status == "failed" and "cells of the split are not embedded" in record.reason

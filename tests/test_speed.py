"""The embedding-speed job: input draw, one row per model (ok, failed, not applicable), speed-ups over scGPT."""

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellplm.bench import speed
from cellplm.model import config_for_shape


@pytest.fixture(scope="module")
def cells_path(tmp_path_factory):
    genes = config_for_shape("tiny").gene_list[:300]
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(0.5, size=(120, 300)).astype(np.float32))
    path = tmp_path_factory.mktemp("speed") / "cells.h5ad"
    ad.AnnData(X, var=pd.DataFrame(index=genes)).write_h5ad(path)
    return path


def test_speed_input_is_a_seeded_draw_of_cells_and_hvgs(cells_path):
    adata = ad.read_h5ad(cells_path)
    a = speed.speed_input(adata, 50, 100, seed=3)
    b = speed.speed_input(adata, 50, 100, seed=3)
    c = speed.speed_input(adata, 50, 100, seed=4)
    assert a.shape == (50, 100)
    assert list(a.obs_names) == list(b.obs_names) and list(a.obs_names) != list(c.obs_names)
    assert speed.speed_input(adata, 10_000, None).shape == adata.shape  # capped at the dataset; all genes


def test_models_run_in_their_own_interpreters_and_failures_are_rows(cells_path):
    models = {
        "cellplm": {"python": sys.executable, "options": {"shape": "tiny", "precision": "fp32"}},
        "scgpt": {"python": "/nonexistent/bin/python", "options": {}},
        "geneformer": {"python": None, "options": {}, "reason": "method 'geneformer' is not in the method registry"},
    }
    table = speed.run_models(models, cells_path, device="cpu", repeats=2, threads=1, log=lambda *_: None)
    rows = table.set_index("method")
    assert list(table.columns[: len(speed.COLUMNS)]) == speed.COLUMNS
    ok = rows.loc["cellplm"]
    assert ok["status"] == "ok" and ok["value"] > 0 and ok["n_cells"] == 120 and ok["n_genes"] == 300
    assert (
        ok["weights"] == "random weights, tiny shape" and ok["precision"] == "fp32" and ok["device"].startswith("CPU")
    )
    assert rows.loc["scgpt", "status"] == "failed" and "nonexistent" in rows.loc["scgpt", "reason"]
    assert rows.loc["geneformer", "status"] == "not_applicable" and "registry" in rows.loc["geneformer", "reason"]
    assert table["speedup_vs_scgpt"].isna().all()  # no scGPT measurement, no ratio
    assert (table["measure"] == "embedding_throughput").all()


def test_measure_command_line(cells_path):
    out = subprocess.run(
        [sys.executable, "-m", "cellplm.bench.speed", "measure", "--model", "geneformer", "--cells", str(cells_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["status"] == "not_applicable" and "model directory" in row["reason"]
    assert subprocess.run([sys.executable, "-m", "cellplm.bench.speed", "--help"], capture_output=True).returncode == 0
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellplm.bench.speed",
            "measure",
            "--model",
            "cellplm",
            "--cells",
            str(cells_path),
            "--options",
            "{nope",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--options" in bad.stderr


def test_speedups_are_relative_to_scgpt():
    emb = speed.embedding_table(
        [
            {"method": "cellplm", "status": "ok", "value": 3000.0, "n_cells": 100},
            {"method": "scgpt", "status": "ok", "value": 1.5, "n_cells": 100},
            {"method": "geneformer", "status": "failed", "value": 9.0, "reason": "x"},
        ]
    ).set_index("method")
    assert emb.loc["cellplm", "speedup_vs_scgpt"] == pytest.approx(2000.0)
    assert emb.loc["scgpt", "speedup_vs_scgpt"] == pytest.approx(1.0)
    assert np.isnan(emb.loc["geneformer", "value"])  # a failed row carries no number

    runs = pd.DataFrame(
        {
            "dataset": ["d", "d", "e"],
            "split": ["s", "s", "s"],
            "method": ["scgpt", "cellplm_finetune", "knn"],
            "fit_s": [100.0, 4.0, 1.0],
            "predict_s": [10.0, 1.0, 0.5],
            "n_train": [9, 9, 9],
            "n_test": [3, 3, 3],
            "job_wall_s": [1, 1, 1],
            "device": ["cpu"] * 3,
        }
    )
    table = speed.speed_table(emb.reset_index(), runs)
    fit = table[table["measure"] == "fit_wall"].set_index("method")
    assert fit.loc["cellplm_finetune", "speedup_vs_scgpt"] == pytest.approx(25.0)
    assert np.isnan(fit.loc["knn", "speedup_vs_scgpt"])  # no scGPT run on that dataset
    pred = table[table["measure"] == "predict_wall"].set_index("method")
    assert pred.loc["cellplm_finetune", "speedup_vs_scgpt"] == pytest.approx(10.0)
    assert set(table["measure"]) == {"embedding_throughput", "fit_wall", "predict_wall"}


def test_speed_models_follow_the_config():
    from cellplm.bench.checkpoint_plan import CheckpointPlan
    from cellplm.bench.workflow import speed_models

    config = {
        "methods": {"cellplm_finetune": {}, "scgpt": {"params": {"model_dir": "/models/scgpt_human"}}},
        "speed": {
            "models": {
                "cellplm": {"method": "cellplm_finetune", "weights": "checkpoint"},
                "scgpt": {"method": "scgpt", "weights": "checkpoint", "batch_size": 8},
                "geneformer": {"method": "geneformer", "weights": "checkpoint"},
            }
        },
    }
    models = speed_models(config, CheckpointPlan("path", prefix="results/cellplm/checkpoints/x/model"))
    assert models["cellplm"]["options"]["checkpoint"] == "results/cellplm/checkpoints/x/model"
    assert models["scgpt"]["options"] == {"weights": "checkpoint", "batch_size": 8, "model_dir": "/models/scgpt_human"}
    assert models["geneformer"]["reason"] and not models["scgpt"]["reason"]

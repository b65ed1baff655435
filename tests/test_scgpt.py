"""The scGPT method (scgpt 0.2.4, the authors' package) in its own environment, .venv-scgpt.

Everything scGPT runs there, through subprocess: the method script as the workflow calls it, and
tests/scgpt_helper.py (tiny model directories in the released layout, embedding checks). `make test` builds the
environment first (tools/scgpt_env.sh); without it these tests are skipped.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cellplm.bench.report.aggregate import checkpoint_label
from cellplm.bench.io import read_h5ad, write_h5ad
from cellplm.bench.workflow import method_python
from conftest import ROOT, make_counts_adata, write_split_files

PYTHON = ROOT / ".venv-scgpt" / "bin" / "python"
RUNNER = ["-m", "cellplm.bench.methods", "scgpt"]
HELPER = ROOT / "tests" / "scgpt_helper.py"
needs_env = pytest.mark.skipif(not PYTHON.exists(), reason=".venv-scgpt is missing: build it with `make scgpt-env`")
TINY = {"shape": "tiny", "epochs": 2, "max_seq_len": 64, "n_hvg": None, "device": "cpu"}


def scgpt_env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONSAFEPATH="1", PYTHONWARNINGS="ignore")


def helper(*args):
    out = subprocess.run(
        [str(PYTHON), str(HELPER), *map(str, args)], capture_output=True, text=True, env=scgpt_env(), timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_method(files, out, params, on_error="record", python=PYTHON):
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(python),
        *RUNNER,
        "--train",
        files["train"],
        "--test",
        files["test"],
        "--prediction",
        out / "prediction.h5ad",
        "--record",
        out / "run.json",
        "--dataset",
        "toy",
        "--params",
        json.dumps(params),
        "--on-error",
        on_error,
    ]
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=scgpt_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "run.json").read_text()), read_h5ad(out / "prediction.h5ad"), proc.stdout


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    a = make_counts_adata(n_cells=150, n_types=3, batches=2)
    a.uns["dataset_id"] = "toy"
    return write_split_files(a, tmp_path_factory.mktemp("scgpt_split"))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scgpt_models")
    facts = helper("model-dirs", root)
    assert facts["a"]["n_wqkv"] == 4 and facts["broken"]["n_wqkv"] == 0  # 2 layers x (weight, bias), as released
    return {name: root / name for name in facts}


@needs_env
def test_random_initialisation_runs_the_script(files, tmp_path):
    params = dict(TINY, lr=3e-3, epochs=4)
    rec, pred, stdout = run_method(files, tmp_path, params)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["implementation"].startswith("scgpt 0.2.4") and rec["versions"]["scgpt"] == "0.2.4"
    assert rec["versions"]["torch"].startswith("2.3")
    extra = rec["extra"]
    assert extra["checkpoint"] == "random initialisation (shape tiny: 2 layers, d_model 32, 2 heads)"
    assert extra["checkpoint_kind"] == "random initialisation" and "load" not in extra
    assert checkpoint_label(extra, rec["params"]) == "random initialisation (tiny shape)"  # the tables' column
    assert rec["n_genes_used"] == 12 and extra["genes"]["gene_share"] == 1.0 and extra["genes"]["n_selected"] == 12
    assert extra["validation"].startswith("obs['is_validation']")
    assert [h["epoch"] for h in extra["history"]] == [1, 2, 3, 4] and 1 <= extra["best_epoch"] <= 4
    lrs = [h["lr"] for h in extra["history"]]
    assert np.allclose(lrs, [3e-3 * 0.9**i for i in range(4)])  # StepLR, gamma = schedule_ratio per epoch
    assert extra["amp"] is False and rec["device"] == "cpu"
    test = read_h5ad(files["test"])
    assert pred.obs_names.equals(test.obs_names) and pred.obs["label_pred"].notna().all()
    truth = read_h5ad(files["solution"]).obs["cell_type"].astype(str).to_numpy()
    accuracy = np.mean(pred.obs["label_pred"].astype(str).to_numpy() == truth)
    assert accuracy > 0.6, accuracy  # three separable toy types: it learns
    assert "scGPT epoch 4" in stdout


@needs_env
def test_pretrained_model_directory_is_loaded(files, model_dirs, tmp_path):
    rec, pred, stdout = run_method(files, tmp_path, dict(TINY, model_dir=str(model_dirs["a"]), epochs=1, n_hvg=8))
    assert rec["status"] == "ok", rec["reason"]
    extra = rec["extra"]
    assert extra["checkpoint"] == str(model_dirs["a"]) and extra["checkpoint_kind"] == "pretrained"
    assert checkpoint_label(extra, rec["params"]) == f"pretrained ({model_dirs['a']})"
    load = extra["load"]
    # every tensor loads but the classifier's output layer (1 class in pretraining, 3 cell types here)
    assert load["new"] == ["cls_decoder.out_layer.weight", "cls_decoder.out_layer.bias"]
    assert load["n_loaded"] == load["n_model_keys"] - 2 and load["n_renamed_Wqkv"] == 4
    assert load["mismatched"] == load["new"] and all(k.startswith("mvc_decoder.") for k in load["unused"])
    assert extra["model"]["embsize"] == 32 and extra["genes"]["vocabulary_size"] == 19
    assert extra["genes"]["n_in_vocabulary"] == 12 and "loaded" in stdout
    # 12 genes are too few for seurat_v3's loess: the recorded fallback (seurat_v3 itself: test_embed_cells)
    assert rec["n_genes_used"] == extra["genes"]["n_selected"] == 8
    assert extra["genes"]["hvg"].startswith("seurat (scanpy) on log1p(CP10k) training counts, because seurat_v3 failed")


@needs_env
def test_checkpoint_missing_attention_weights_is_refused(files, model_dirs, tmp_path):
    rec, _, _ = run_method(files, tmp_path, dict(TINY, model_dir=str(model_dirs["broken"])))
    assert rec["status"] == "failed"
    assert "best_model.pt" in rec["reason"] and "would stay random" in rec["reason"]


@needs_env
def test_incomplete_model_directory_names_the_missing_file(files, model_dirs, tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "args.json").write_text((model_dirs["a"] / "args.json").read_text())
    rec, _, _ = run_method(files, tmp_path / "out", dict(TINY, model_dir=str(folder)))
    assert rec["status"] == "failed" and "vocab.json: missing" in rec["reason"]


@needs_env
def test_no_genes_in_vocabulary_is_not_applicable(model_dirs, tmp_path):
    a = make_counts_adata(n_cells=60, genes=[f"NOTAGENE{i}" for i in range(12)])
    paths = write_split_files(a, tmp_path / "split")
    rec, pred, _ = run_method(paths, tmp_path / "out", dict(TINY, model_dir=str(model_dirs["a"])))
    assert rec["status"] == "not_applicable"
    assert "none of its 12 genes is in the scGPT vocabulary" in rec["reason"]
    assert rec["extra"]["genes"]["gene_share"] == 0.0 and pred.obs["label_pred"].isna().all()


@needs_env
def test_embed_cells(model_dirs, tmp_path):
    path = tmp_path / "cells.h5ad"
    write_h5ad(make_counts_adata(n_cells=30), path)
    facts = helper("embed-checks", model_dirs["a"], model_dirs["b"], path)
    assert facts["random_shape"] == [30, 32] and facts["pretrained_shape"] == [30, 32]
    assert facts["random_unit_norm"] and facts["random_deterministic"] and facts["random_cells_differ"]
    assert facts["random_batch_size_invariant"]  # padding to each batch's longest cell changes nothing
    assert facts["pretrained_matches_checkpoint"] and facts["pretrained_differs_from_other_weights"]
    assert facts["ensembl_mapped"] and facts["ensembl_embedding_equal"]
    assert facts["unknown_parameter_refused"]
    assert facts["hvg_selected"] == 100 and facts["hvg_flavor"].startswith("seurat_v3 (scanpy) on the training counts")


def test_without_scgpt_the_run_is_a_not_applicable_row(files, tmp_path):
    """The interpreter of the main .venv has no scgpt: the row says what is missing and which environment to build."""
    rec, pred, _ = run_method(files, tmp_path, TINY, python=sys.executable)
    assert rec["status"] == "not_applicable" and "cannot import package" in rec["reason"]
    assert "make scgpt-env" in rec["reason"]
    assert pred.obs["label_pred"].isna().all()


def test_method_python_resolves_against_the_workflow_root(tmp_path, capsys, monkeypatch):
    (tmp_path / ".venv-x" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-x" / "bin" / "python").touch()
    assert method_python(None, tmp_path) == "python" and method_python("python3", tmp_path) == "python3"
    assert method_python(".venv-x/bin/python", tmp_path) == str(tmp_path / ".venv-x/bin/python")
    assert method_python(str(tmp_path / ".venv-x/bin/python"), "/elsewhere") == str(tmp_path / ".venv-x/bin/python")
    assert method_python(".venv-missing/bin/python", tmp_path) == "python"
    assert "not found" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # the usual case, snakemake run in the workflow folder: the jobs' params do not
    assert method_python(".venv-x/bin/python", tmp_path) == ".venv-x/bin/python"  # change when the folder moves


@needs_env
def test_conda_post_deploy_script_installs_the_pinned_scgpt():
    """snakemake --use-conda runs envs/scgpt.post-deploy.sh inside the new env; here inside .venv-scgpt, where the
    pinned scgpt is already installed (pip then has nothing to do) and the import check must pass."""
    script = ROOT / "workflow" / "envs" / "scgpt.post-deploy.sh"
    pin = next(w for w in (ROOT / "tools" / "scgpt_env.sh").read_text().split() if w.startswith("SCGPT="))
    assert pin.split("=", 1)[1] in script.read_text()  # the conda env and the venv install the same scgpt
    env = dict(scgpt_env(), PATH=f"{PYTHON.parent}{os.pathsep}{os.environ['PATH']}", PIP_NO_INDEX="1")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "already satisfied" in proc.stdout

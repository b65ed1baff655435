"""The cellplm_upstream method: the authors' CellTypeAnnotationPipeline (cellplm 0.1.0.post2) in its own environment,
.venv-upstream, run through the method runner as the workflow runs it (a subprocess with PYTHONPATH = this checkout).

On small data with a tiny checkpoint: the contract (a prediction for every test cell, labels from the training classes
only), the record (authors' code, fp32, the one patch, the class-set and sentence notes, the protocol), determinism on
CPU, the checkpoint loader's semantics (a file holding Python objects only with a trusted sha256), and the rows that
say why they did not run (no .venv-upstream package, no checkpoint).
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cellplm.bench.io import read_h5ad
from cellplm.bench.methods import metadata
from cellplm.checksum import sha256_file
from conftest import ROOT, make_counts_adata, write_split_files

PYTHON = ROOT / ".venv-upstream" / "bin" / "python"
needs_env = pytest.mark.skipif(
    not PYTHON.exists(), reason=".venv-upstream is missing: build it with `make upstream-env`"
)
QUICK = {"epochs": 3, "es": 3, "device": "cpu"}


def run_method(files, out, params, python=PYTHON, seed=0, pythonpath=()):
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(python),
        "-m",
        "cellplm.bench.methods",
        "cellplm_upstream",
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
        "--seed",
        str(seed),
        "--params",
        json.dumps(params),
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(ROOT)]),
        PYTHONSAFEPATH="1",
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    env.pop("CELLPLM_TRUSTED_SHA256", None)
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "run.json").read_text()), read_h5ad(out / "prediction.h5ad"), proc.stdout


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    a = make_counts_adata(n_cells=150, n_types=3, batches=2)
    a.uns.update(dataset_id="toy", batch_key="donor")  # as preprocessing records the dataset's batch column
    return write_split_files(a, tmp_path_factory.mktemp("upstream_split"))


def with_args(tiny_checkpoint, folder):
    """The tiny checkpoint plus the training arguments as an argparse.Namespace, as checkpoints often hold: a file
    that weights-only unpickling refuses."""
    prefix = folder / "with_args"
    (folder / "with_args.config.json").write_text(open(f"{tiny_checkpoint}.config.json").read())
    blob = torch.load(f"{tiny_checkpoint}.best.ckpt", weights_only=True)
    blob["args"] = argparse.Namespace(lr=2e-4, epochs=200)
    torch.save(blob, f"{prefix}.best.ckpt")
    return prefix


def test_method_folder_says_what_it_is():
    meta = metadata("cellplm_upstream")
    assert meta["implementation"].startswith("authors' code (cellplm 0.1.0.post2)")
    assert meta["label"] == "CellPLM (fine-tuned, authors' code)" and meta["published_as"] == "CellPLM"
    assert meta["cellplm_checkpoint"] is True and meta["python"] == ".venv-upstream/bin/python"
    assert (ROOT / meta["env"]).is_file() and "cell_type_annotation.ipynb" in meta["implementation"]
    # upstream's pipeline config is the default; the demo runs the same protocol as cellplm_finetune's test_params
    assert {k: meta["params"][k] for k in ("epochs", "es", "lr", "wd", "hvg", "patience")} == {
        "epochs": 2000,
        "es": 200,
        "lr": 0.005,
        "wd": 1e-7,
        "hvg": 3000,
        "patience": 25,
    }
    ours = metadata("cellplm_finetune")["test_params"]
    mine = meta["test_params"]
    assert (mine["epochs"], mine["es"]) == (ours["max_epochs"], ours["patience"]) == (40, 40)
    assert ours["warmup_epochs"] == 30  # upstream's hard-coded warm-up


@needs_env
def test_authors_pipeline_predicts_every_test_cell_from_the_training_classes(files, tiny_checkpoint, tmp_path):
    params = {
        "checkpoint": str(tiny_checkpoint),
        "checkpoint_kind": "pretrained here",
        "epochs": 32,
        "es": 40,
        "device": "cpu",
    }
    rec, pred, stdout = run_method(files, tmp_path, params)
    assert rec["status"] == "ok", rec["reason"]
    test, truth = read_h5ad(files["test"]), read_h5ad(files["solution"]).obs["cell_type"].astype(str)
    assert pred.obs_names.equals(test.obs_names) and pred.obs["label_pred"].notna().all()
    training = set(read_h5ad(files["train"]).obs["cell_type"].astype(str))
    assert set(pred.obs["label_pred"].astype(str)) <= training == {"type0", "type1", "type2"}
    accuracy = np.mean(pred.obs["label_pred"].astype(str).to_numpy() == truth.to_numpy())
    assert accuracy > 0.6  # three separable types, 32 epochs
    assert rec["implementation"].startswith("authors' code (cellplm 0.1.0.post2)")
    assert rec["versions"]["cellplm"] == "0.1.0.post2" and rec["device"] == "cpu" and rec["n_test"] == test.n_obs
    extra = rec["extra"]
    assert extra["precision"] == "fp32" and extra["device_detail"].endswith(", fp32")
    assert len(extra["patches"]) == 1 and extra["patches"][0].startswith("CellPLM.pipeline.load_pretrain: torch.load")
    assert extra["class_set"].startswith(
        "training labels (3 classes): test labels are hidden by the benchmark's contract"
    )
    assert "output unit never trained positively" in extra["class_set"]
    assert "placeholder label 'type0'" in extra["class_set"]
    assert extra["sentences"] == "one per obs['batch'] value (= dataset column 'donor'; 2 sentences)"
    assert extra["gene_ids"].startswith("var_names = Ensembl ids")
    assert "ensembl_auto_conversion=False" in extra["gene_ids"]
    assert extra["protocol"] == {
        "max_epochs": 32,
        "patience": 40,
        "warmup_epochs": 30,
        "lr": 0.005,
        "weight_decay": 1e-7,
        "n_hvg": 3000,
        "plateau_patience": 25,
    }
    assert extra["checkpoint_kind"] == "pretrained here" and extra["loaded_with"] == "weights_only"
    # every trunk tensor came from the checkpoint; only the annotation task's new latent layer and head are fresh, and
    # only the pretraining decoder and mixture latent of the file are left unused
    n_tensors = len(torch.load(f"{tiny_checkpoint}.best.ckpt", weights_only=True)["model_state_dict"])
    weights = extra["weights"]
    assert weights["fresh_modules"] == ["head.mlp", "latent.layers"] and weights["loaded"] > 0
    assert weights["loaded"] + weights["unused"] == n_tensors
    assert {m.split(".")[0] for m in weights["unused_modules"]} <= {"decoder", "latent"}
    assert extra["genes"]["n_matched"] == extra["genes"]["n_selected"] == rec["n_genes_used"] == 12
    # upstream's two lines per epoch went to the log (stdout), and were read back
    assert stdout.count("Valid f1:") == extra["epochs_run"] == 32 and not extra["stopped_early"]
    assert 0 <= extra["best_epoch"] < 32 and 0 < extra["best_valid_macro_f1"] <= 1
    assert "Valid f1" not in json.dumps(rec)


@needs_env
def test_a_seeded_run_is_deterministic_on_cpu(files, tiny_checkpoint, tmp_path):
    params = {**QUICK, "checkpoint": str(tiny_checkpoint)}
    first, second, other = (
        run_method(files, tmp_path / name, params, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))
    )
    assert first[0]["status"] == second[0]["status"] == "ok", first[0]["reason"]
    assert first[1].obs["label_pred"].tolist() == second[1].obs["label_pred"].tolist()
    same = [(r["extra"]["best_epoch"], r["extra"]["best_valid_macro_f1"]) for r, _, _ in (first, second)]
    assert same[0] == same[1]
    logs = [
        [line for line in out.splitlines() if line.startswith(("Epoch", "Train ACC"))]
        for _, _, out in (first, second, other)
    ]
    assert logs[0] == logs[1] and len(logs[0]) == 2 * 3  # the same losses and scores, epoch by epoch
    assert logs[2] != logs[0]  # another seed draws other numbers


@needs_env
def test_the_patched_loader_reads_a_trusted_file_and_refuses_an_untrusted_one(files, tiny_checkpoint, tmp_path):
    """torch 2.13's torch.load is weights-only by default: upstream's bare call cannot read a checkpoint that holds
    an argparse.Namespace at all. Through the patch it is refused unless its sha256 is trusted, then read."""
    prefix = with_args(tiny_checkpoint, tmp_path)
    digest = sha256_file(f"{prefix}.best.ckpt")
    rec, pred, _ = run_method(files, tmp_path / "untrusted", {**QUICK, "checkpoint": str(prefix)})
    assert rec["status"] == "failed" and pred.obs["label_pred"].isna().all()
    assert "refused: its pickle calls the Python object argparse.Namespace" in rec["reason"]
    assert f"add its sha256 {digest}" in rec["reason"]
    trusted = {**QUICK, "checkpoint": str(prefix), "trusted_sha256": [digest]}
    rec, pred, _ = run_method(files, tmp_path / "trusted", trusted)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["extra"]["loaded_with"] == f"full unpickle (trusted sha256 {digest})"
    assert rec["extra"]["weights"]["fresh_modules"] == ["head.mlp", "latent.layers"]


@needs_env
def test_no_checkpoint_is_a_not_applicable_row(files, tmp_path):
    rec, pred, _ = run_method(files, tmp_path, {**QUICK, "checkpoint": ""})
    assert rec["status"] == "not_applicable" and pred.obs["label_pred"].isna().all()
    assert rec["reason"] == (
        "the authors' pipeline fine-tunes a pretrained checkpoint and none is configured "
        "(cellplm.checkpoint.source: none)"
    )


def test_a_missing_package_is_a_not_applicable_row_naming_it(files, tiny_checkpoint, tmp_path):
    """In the project's .venv (no CellPLM package) and in a .venv-upstream without scikit-misc (shadowed here by a
    package that fails to import, as a missing one does), the row says which package is missing and how to get it."""
    params = {**QUICK, "checkpoint": str(tiny_checkpoint)}
    rec, pred, _ = run_method(files, tmp_path / "venv", params, python=sys.executable)
    assert rec["status"] == "not_applicable" and pred.obs["label_pred"].isna().all()
    assert "cannot import package 'CellPLM', which method cellplm_upstream needs" in rec["reason"]
    assert "make upstream-env" in rec["reason"]
    if not PYTHON.exists():
        return
    shadow = tmp_path / "shadow" / "skmisc"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'skmisc'\", name='skmisc')\n")
    rec, _, _ = run_method(files, tmp_path / "no_skmisc", params, pythonpath=[shadow.parent])
    assert rec["status"] == "not_applicable" and "cannot import package 'skmisc'" in rec["reason"]


@needs_env
def test_a_split_holding_out_whole_batches_is_a_not_applicable_row(tiny_checkpoint, tmp_path):
    """The authors' fit scores every sentence's training cells and crashes on a sentence without any (torchmetrics
    on an empty tensor): a batch hold-out split is a row that says so, not a crash."""
    from cellplm.bench.data.split import SplitSpec, make_split
    from cellplm.bench.io import write_h5ad

    a = make_counts_adata(n_cells=150, n_types=3, batches=2)  # every type in both batches
    parts = make_split(
        a,
        SplitSpec("batch_holdout", strategy="batch_holdout", seed=0, test_fraction=0.2),
        {"train": 0.8, "valid": 0.1, "test": 0.1},
    )
    files = {}
    for name, part in parts.items():
        files[name] = tmp_path / f"{name}.h5ad"
        write_h5ad(part, files[name])
    held = sorted(set(parts["test"].obs["batch"].astype(str)))
    rec, pred, _ = run_method(files, tmp_path / "out", {**QUICK, "checkpoint": str(tiny_checkpoint)})
    assert rec["status"] == "not_applicable" and pred.obs["label_pred"].isna().all()
    assert rec["reason"] == (
        f"the authors' fit scores the training cells of every sentence and fails on one without "
        f"any: {len(held)} of 2 sentences (obs['batch'] {', '.join(map(repr, held))}) hold no "
        "training cell (a split that holds out whole batches)"
    )

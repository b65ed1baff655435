"""Every method through the harness on small data: contract files, run records, failures as rows."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cellplm.bench.errors import NotApplicable
from cellplm.bench.io import read_h5ad
from cellplm.bench.methods import MethodUnavailable, method_ids, registry
from cellplm.bench.methods.base import Annotator, RunIds, run
from conftest import ROOT, make_counts_adata, write_split_files

QUICK = {
    "scanvi": {"scvi_epochs": 2, "scanvi_epochs": 1, "n_latent": 4},
    "celltypist": {"max_iter": 20},
    "cellplm_finetune": {"shape": "tiny", "max_epochs": 5, "warmup_epochs": 2, "progress": False},
    "scdiff": {"embed_dim": 16, "depth": 1, "num_heads": 2, "dim_head": 8, "batch_size": 64, "max_epochs": 2},
}


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    a = make_counts_adata(n_cells=120, n_types=3, batches=2)
    a.uns["dataset_id"] = "toy"
    return write_split_files(a, folder)


def _run(cls, method, split_files, tmp_path, params=None):
    return run(
        cls,
        RunIds("toy", "published", method, 0),
        split_files["train"],
        split_files["test"],
        tmp_path / "prediction.h5ad",
        tmp_path / "run.json",
        params=params,
        solution_path=split_files["solution"],
        log=lambda *a: None,
    )


def test_every_method_folder_is_in_the_registry():
    folders = sorted(p.parent.name for p in (ROOT / "cellplm/bench/methods").glob("*/method.yaml"))
    assert folders == method_ids() == sorted(registry()) and len(folders) == 14


@pytest.mark.parametrize("method", method_ids())
def test_method_contract(method, split_files, tmp_path):
    cls = registry()[method]
    if isinstance(cls, MethodUnavailable):  # not importable here (scGPT, the authors' CellPLM need their own envs): a
        # visible row, not a gap
        record = _run(method, method, split_files, tmp_path)
        assert record.status == "not_applicable" and "cannot import package" in record.reason
        assert read_h5ad(tmp_path / "prediction.h5ad").uns["status"] == "not_applicable"
        return
    params = dict(QUICK.get(method, {}))
    if method == "geneformer":  # a tiny BERT + dictionaries over the toy genes (tests/geneformer_tiny.py)
        from conftest import SYMBOLS
        from geneformer_tiny import write_tiny_geneformer_for_symbols

        params.update(
            model_dir=str(write_tiny_geneformer_for_symbols(tmp_path / "gf", SYMBOLS)), epochs=2, warmup_steps=2
        )
    record = _run(cls, method, split_files, tmp_path, params)
    assert record.status == "ok", record.reason
    pred = read_h5ad(tmp_path / "prediction.h5ad")
    test = read_h5ad(split_files["test"])
    assert pred.obs_names.equals(test.obs_names) and pred.obs["label_pred"].notna().all()
    assert pred.uns["method_id"] == method and pred.uns["status"] == "ok"
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["fit_s"] >= 0 and rec["predict_s"] >= 0 and rec["peak_rss_mb"] > 0 and rec["device"] == "cpu"
    assert rec["versions"]["python"] and rec["n_test"] == test.n_obs and rec["implementation"]
    truth = read_h5ad(split_files["solution"]).obs["cell_type"].astype(str)
    accuracy = np.mean(pred.obs["label_pred"].astype(str).to_numpy() == truth.to_numpy())
    if method == "true_labels":
        assert accuracy == 1.0
    if method in ("logistic_regression", "knn_pca", "celltypist"):
        assert accuracy > 0.6  # the three toy types are separable
    if method.startswith("cellplm"):
        assert rec["extra"]["checkpoint_kind"] == "random initialisation"
        assert rec["extra"]["genes"]["n_matched"] == rec["n_genes_used"] == 12
        # which column made the sentences (the toy split files do not name the dataset's), and the class set
        assert rec["extra"]["sentences"] == (
            "one per obs['batch'] value (dataset column not recorded in the split files; 2 sentences)"
        )
        assert rec["extra"]["class_set"].startswith("training labels (3 classes)")
        assert rec["extra"]["precision"] == "fp32"  # the method's default (method.yaml), upstream's arithmetic
    if method == "cellplm_finetune":  # the tissue-context track: the same model's labels under other policies
        context = rec["extra"]["context_predictions"]
        assert set(context) == {"single", "random16", "test_only"} and context["random16"]["seed"] == 0
        assert {k: c["with_training_cells"] for k, c in context.items()} == {
            "single": False,
            "random16": True,
            "test_only": False,
        }
        for name in context:
            assert pred.obs[f"label_pred_{name}"].isin(set(truth)).all()


class Broken(Annotator):
    def fit(self, train, solution=None, unlabelled=None):
        raise RuntimeError("out of memory")


class NotForThis(Annotator):
    def fit(self, train, solution=None, unlabelled=None):
        raise NotApplicable("only 3% of genes in the vocabulary")


@pytest.mark.parametrize(
    "cls, status, reason",
    [
        (Broken, "failed", "RuntimeError: out of memory"),
        (NotForThis, "not_applicable", "only 3% of genes in the vocabulary"),
    ],
)
def test_failures_are_rows(cls, status, reason, split_files, tmp_path):
    record = _run(cls, "x", split_files, tmp_path)
    assert (record.status, record.reason) == (status, reason)
    pred = read_h5ad(tmp_path / "prediction.h5ad")
    assert pred.uns["status"] == status and pred.obs["label_pred"].isna().all()
    assert json.loads((tmp_path / "run.json").read_text())["status"] == status


def test_methods_never_get_the_solution(split_files, tmp_path):
    seen = {}

    class Spy(Annotator):
        transductive = True

        def fit(self, train, solution=None, unlabelled=None):
            seen.update(solution=solution, unlabelled=unlabelled)
            self.n = unlabelled.n_obs
            return self

        def predict(self, test):
            return np.array(["type0"] * test.n_obs)

    _run(Spy, "spy", split_files, tmp_path)
    assert seen["solution"] is None and "cell_type" not in seen["unlabelled"].obs


def test_method_runner_cli(split_files, tmp_path):
    runner = [sys.executable, "-m", "cellplm.bench.methods", "celltypist"]
    env = {"PYTHONPATH": str(ROOT), "PYTHONSAFEPATH": "1", "PATH": "/usr/bin:/bin"}
    help_text = subprocess.run([*runner, "--help"], capture_output=True, text=True, env=env, check=True)
    assert "--prediction" in help_text.stdout and "CellTypist" in help_text.stdout
    out = subprocess.run(
        [
            *runner,
            "--train",
            split_files["train"],
            "--test",
            split_files["test"],
            "--prediction",
            tmp_path / "p.h5ad",
            "--record",
            tmp_path / "r.json",
            "--params",
            '{"max_iter": 10}',
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["params"] == {"max_iter": 10} and record["method"] == "celltypist"
    assert record["implementation"] == registry()["celltypist"].metadata()["implementation"]
    bad = subprocess.run(
        [
            *runner,
            "--train",
            tmp_path / "nope.h5ad",
            "--test",
            split_files["test"],
            "--prediction",
            tmp_path / "p2.h5ad",
            "--record",
            tmp_path / "r2.json",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1 and bad.stderr.strip().endswith("nope.h5ad: file does not exist")
    assert not (tmp_path / "p2.h5ad").exists()


def test_a_batch_job_gives_each_run_what_its_own_job_gives(split_files, tmp_path):
    """`python -m cellplm.bench.methods batch` (the workflow's batch jobs) runs several methods and seeds in one
    process: every run's prediction and record (but its timings and memory) equal those of its own command, each run
    only the controls read the solution, and a bad --runs is one line."""
    env = {"PYTHONPATH": str(ROOT), "PYTHONSAFEPATH": "1", "PATH": "/usr/bin:/bin"}
    runner = [sys.executable, "-m", "cellplm.bench.methods"]
    split = ["--train", split_files["train"], "--test", split_files["test"], "--dataset", "toy"]
    runs = [
        {
            "method": m,
            "seed": seed,
            "params": params,
            "prediction": str(tmp_path / f"batch_{m}_{seed}.h5ad"),
            "record": str(tmp_path / f"batch_{m}_{seed}.json"),
        }
        for m, params in [
            ("random_labels", {}),
            ("true_labels", {}),
            ("knn_pca", {"k": 5}),
            ("actinn", {"num_epochs": 3}),
        ]
        for seed in (0, 1)
    ]
    out = subprocess.run(
        [*runner, "batch", *split, "--solution", split_files["solution"], "--runs", json.dumps(runs)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    volatile = {"fit_s", "predict_s", "peak_rss_mb", "peak_gpu_mb", "finished"}
    for r in runs:
        own = tmp_path / f"own_{r['method']}_{r['seed']}"
        solution = ["--solution", split_files["solution"]] if r["method"] == "true_labels" else []
        single = subprocess.run(
            [
                *runner,
                r["method"],
                *split,
                *solution,
                "--seed",
                str(r["seed"]),
                "--params",
                json.dumps(r["params"]),
                "--prediction",
                f"{own}.h5ad",
                "--record",
                f"{own}.json",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        assert single.returncode == 0, single.stderr
        batch_pred, own_pred = read_h5ad(r["prediction"]), read_h5ad(f"{own}.h5ad")
        assert batch_pred.obs["label_pred"].tolist() == own_pred.obs["label_pred"].tolist(), r["method"]
        batch_rec, own_rec = (json.loads(open(p).read()) for p in (r["record"], f"{own}.json"))
        assert batch_rec["status"] == "ok" and batch_rec["seed"] == r["seed"]
        assert {k: v for k, v in batch_rec.items() if k not in volatile} == {
            k: v for k, v in own_rec.items() if k not in volatile
        }
    true = read_h5ad(runs[2]["prediction"]).obs["label_pred"]
    assert (
        true == read_h5ad(split_files["solution"]).obs.loc[true.index, "cell_type"]
    ).all()  # the solution reached it
    bad = subprocess.run(
        [*runner, "batch", *split, "--runs", '{"method": "x"}'], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "ERROR: --runs: not a JSON list of runs (not a list of objects)"
    )


def test_each_run_of_a_process_records_its_own_peak_memory():
    """The harness resets the peak before each run (a batch job runs several): what one run allocated and freed is
    not the next run's peak."""
    from cellplm.memory import peak_rss_mb, reset_peak_rss

    big = np.ones(50_000_000)  # 400 MB
    during = peak_rss_mb()
    del big
    reset_peak_rss()
    assert peak_rss_mb() < during - 300

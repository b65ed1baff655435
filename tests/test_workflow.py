"""The Snakemake workflow itself: lint, offline dry run of the full config, config errors, bad input, demo."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cellplm.bench import workflow as wf
from cellplm.bench.io import read_h5ad
from conftest import ROOT, make_counts_adata, workflow_config

COPY = ["Snakefile", "rules", "workflow", "config", "profiles", "cellplm"]


def copy_workflow(dest):
    """A copy of the workflow in ``dest``, so runs never touch the checkout's results/."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    for venv in (".venv-scgpt", ".venv-upstream"):  # the scGPT and authors' CellPLM interpreters: links, not copies
        if (ROOT / venv).exists():
            (dest / venv).symlink_to((ROOT / venv).resolve())
    return dest


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path)


def snakemake(workdir, *args, timeout=2400, extra_env=None):
    env = dict(os.environ, PYTHONPATH=str(workdir))
    # Any attempt to reach the network would go to a closed local port (or to the emulated internet of extra_env).
    env.update(
        {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": "", **(extra_env or {})}
    )
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def job_counts(stdout: str) -> dict:
    block = stdout.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def test_lint_is_clean(workdir):
    for extra in ([], ["--configfile", "config/demo.yaml"]):
        out = snakemake(workdir, "--lint", *extra)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Congratulations" in out.stdout + out.stderr


def test_full_config_dry_run_is_offline(workdir):
    out = snakemake(workdir, "-n")
    assert out.returncode == 0, out.stderr
    jobs = job_counts(out.stdout)
    # the scDiff archive once (six members, one extraction); the CellPLM release, linked and checked; two models
    assert jobs["download"] == 1 and jobs["extract_archive"] == 1 and jobs["preprocess"] == 6
    assert jobs["cellplm_download"] == 1 and jobs["cellplm_link_checkpoint"] == 1 and jobs["fetch_model"] == 2
    methods = yaml.safe_load((ROOT / "config/config.yaml").read_text())["run"]["methods"]
    batched = {m for m in methods if wf.method_registry(None)[m].get("batch")}  # light methods: one job per split
    assert batched >= {"majority_class", "logistic_regression", "knn_pca", "actinn", "celltypist"}
    assert jobs.get("run_method", 0) + jobs["run_method_gpu"] == 6 * (len(methods) - len(batched)) * 3  # a job a seed
    # without --use-conda one batch job per interpreter and thread count: the light methods of .venv, one thread
    # (classic) and SingleCellNet's two (classic_t2); with --use-conda also one per conda env
    groups = wf.method_batches(workflow_config(), by_env=False)
    assert groups == {
        "classic": [
            "majority_class",
            "random_labels",
            "true_labels",
            "logistic_regression",
            "knn_pca",
            "actinn",
            "celltypist",
        ],
        "classic_t2": ["singlecellnet"],
    }
    assert {rule: n for rule, n in jobs.items() if rule.startswith("run_batch_")} == {
        f"run_batch_{g}": 6 for g in groups
    }  # one per dataset, all its methods and seeds
    assert set(wf.method_batches(workflow_config(), by_env=True)) == {"classic", "classic_t2", "actinn", "celltypist"}
    assert "WARNING" not in out.stderr  # no manual step is missing
    for dataset in ("pbmc12k", "pancreas", "hlca", "immune", "brain", "liver"):
        assert f"results/data/{dataset}/dataset.h5ad" in out.stdout
        # the authors' pipeline beside ours on every dataset, with the same checkpoint, on a GPU
        for method in ("cellplm_finetune", "cellplm_upstream"):
            assert f"results/runs/{dataset}/published/{method}/seed2/run.json" in out.stdout
    gpu_jobs = re.findall(r"^rule run_method_gpu:\n(.*?)(?=\n\n|\n\[|\Z)", out.stdout, re.M | re.S)
    upstream = [job for job in gpu_jobs if "method=cellplm_upstream," in job]
    assert len(upstream) == 6 * 3
    # scDiff on every dataset and seed, on the GPU rule
    assert len([job for job in gpu_jobs if "method=scdiff," in job]) == 6 * 3
    assert all("results/cellplm/checkpoints/released__20230926_85M/model.best.ckpt" in job for job in upstream)
    assert "results/tables/fidelity.tsv" in out.stdout
    # the tissue-context track on every dataset: CellPLM under each sentence policy, on the GPU rule, released weights
    policies = yaml.safe_load((ROOT / "config/config.yaml").read_text())["zeroshot"]["sentence_policies"]
    context = re.findall(r"^rule embed_gpu:\n(.*?)(?=\n\n|\n\[|\Z)", out.stdout, re.M | re.S)
    context = [job for job in context if "embedding=cellplm_" in job]
    assert len(context) == 6 * len(policies) == 36
    assert all("results/cellplm/checkpoints/released__20230926_85M/model.best.ckpt" in job for job in context)
    assert jobs["context_stability"] == 1 and "results/plots/context/curve.png" in out.stdout
    for path in (
        "resources/downloads/scdiff_reproducibility.tar.gz",
        "resources/extracted/scdiff_reproducibility.tar.gz",
        "resources/downloads/cellplm/20230926_85M.best.ckpt",
        "resources/models/scgpt_whole_human",
        "resources/models/geneformer_v1_10m",
        "results/cellplm/checkpoints/released__20230926_85M/model.best.ckpt",
    ):
        assert path in out.stdout
    assert not (workdir / "resources").exists()  # nothing was downloaded
    # the datasets rebuilt from their original sources: PBMC12K's four files, figshare, two CELLxGENE datasets
    origin = _config(
        workdir,
        "origin.yaml",
        "run: {datasets: [pbmc12k_origin, pancreas_origin, brain_origin, liver_origin], methods: [true_labels]}\n",
    )
    out = snakemake(workdir, "-n", "--configfile", origin)
    assert out.returncode == 0, out.stderr[-2000:]
    assert job_counts(out.stdout)["download"] == 4 + 1 + 2 and "extract_archive" not in job_counts(out.stdout)
    assert "resources/downloads/cellxgene_c05e6940-729c-47bd-a2a6-6ce3730c4919.h5ad" in out.stdout


def _config(workdir, name, text):
    (workdir / "config" / name).write_text(text)
    return f"config/{name}"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "run: {datasets: [pbmc68k], methods: [no_such_method]}\n"
            "datasets: {pbmc68k: {source: {kind: builtin, name: pbmc68k_reduced}}}\n",
            "unknown method 'no_such_method' in run.methods",
        ),
        ("run: {datasets: [nowhere], methods: [true_labels]}\n", "unknown dataset 'nowhere' in run.datasets"),
        (
            "run: {datasets: [pbmc68k], methods: [cellplm_zeroshot]}\n"
            "datasets: {pbmc68k: {source: {kind: builtin, name: pbmc68k_reduced}}}\n",
            "run.methods: cellplm_zeroshot is the zero-shot row of embedding 'cellplm'; list that in run.embeddings",
        ),
        (
            "run: {datasets: [pbmc68k], methods: [true_labels], embeddings: [umap]}\n"
            "datasets: {pbmc68k: {source: {kind: builtin, name: pbmc68k_reduced}}}\n",
            "unknown embedding 'umap' in run.embeddings",
        ),
        ("run: {datasets: [pbmc12k], methods: [true_labels], sedes: [1]}\n", "sedes"),
    ],
)
def test_config_errors_name_the_problem(workdir, text, message):
    out = snakemake(workdir, "-n", "--configfile", _config(workdir, "bad.yaml", text))
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


CELLPLM_RUN = (
    "run: {datasets: [pbmc68k], methods: [cellplm_finetune], embeddings: [cellplm]}\n"
    "datasets: {pbmc68k: {source: {kind: builtin, name: pbmc68k_reduced}}}\n"
)


@pytest.mark.parametrize(
    "section, message",
    [
        (
            "cellplm: {checkpoint: {source: url}}",
            "cellplm.checkpoint.source is 'url' but cellplm.checkpoint.weights_url is not set",
        ),
        (
            "cellplm: {checkpoint: {source: dropbox}}",
            "'dropbox' is not one of ['release', 'path', 'url', 'pretrain', 'none']",
        ),
        (
            "cellplm: {checkpoint: {source: release, release: 20240101_85M}}",
            "'20240101_85M' is not one of ['20230926_85M', '20231027_85M']",
        ),
        (
            "cellplm: {checkpoint: {source: url, weights_url: 'https://example.org/m.best.ckpt', sha256: abc}}",
            "'abc' does not match",
        ),
        (
            "cellplm: {checkpoint: {source: url, weights_url: 'ftp://example.org/m.best.ckpt'}}",
            "cellplm.checkpoint.weights_url must be an http(s) URL",
        ),
        (
            "cellplm: {checkpoint: {source: pretrain, sha256: '" + "a" * 64 + "'}}",
            "cellplm.checkpoint.sha256 is only used with source 'url'",
        ),
        (
            "cellplm: "
            "{checkpoint: {source: pretrain}, pretrain: {corpus: {celltypist_sample: false, train_cells: false,"
            " synthetic_spatial: {enabled: false}}}}",
            "cellplm.pretrain.corpus: every corpus item is off",
        ),
        ("cellplm: {checkpoint: {source: pretrain}, pretrain: {shape: huge}}", "'huge' is not one of"),
        ("cellplm: {checkpoint: {source: path, checkpoint_dir: x}}", "checkpoint_dir"),
    ],
)
def test_bad_cellplm_section_is_rejected(workdir, section, message):
    out = snakemake(workdir, "-n", "--configfile", _config(workdir, "bad.yaml", CELLPLM_RUN + section + "\n"))
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


def test_checkpoint_url_and_none_dry_runs(workdir):
    url = "cellplm: {checkpoint: {source: url, weights_url: 'https://example.org/ckpt/20230926_85M.best.ckpt'}}\n"
    out = snakemake(workdir, "-n", "--configfile", _config(workdir, "url.yaml", CELLPLM_RUN + url))
    assert out.returncode == 0, out.stderr
    jobs = job_counts(out.stdout)
    assert jobs["cellplm_download"] == 1 and jobs["cellplm_link_checkpoint"] == 1 and "cellplm_pretrain" not in jobs
    assert "resources/downloads/cellplm/20230926_85M.best.ckpt" in out.stdout
    assert "results/cellplm/checkpoints/released__20230926_85M/model.best.ckpt" in out.stdout
    # the other release: its config comes from the authors' folder too, both files pinned (cellplm.releases.sha256)
    later = "cellplm: {checkpoint: {source: release, release: 20231027_85M}}\n"
    out = snakemake(workdir, "-n", "--configfile", _config(workdir, "later.yaml", CELLPLM_RUN + later))
    assert out.returncode == 0, out.stderr
    assert job_counts(out.stdout)["cellplm_download"] == 2
    for name in ("20231027_85M.best.ckpt", "20231027_85M.config.json"):
        assert f"resources/downloads/cellplm/{name}" in out.stdout
    assert "results/cellplm/checkpoints/released__20231027_85M/model.config.json" in out.stdout
    none = "cellplm: {checkpoint: {source: none}}\n"
    out = snakemake(workdir, "-n", "--configfile", _config(workdir, "none.yaml", CELLPLM_RUN + none))
    assert out.returncode == 0, out.stderr
    assert not any(rule.startswith("cellplm_") for rule in job_counts(out.stdout))


def test_checkpoint_provenance_labels():
    from cellplm.bench.report.aggregate import checkpoint_label

    assert checkpoint_label({}, {"k": 5}) == ""
    # a Geneformer or scGPT run that loaded nothing: its params' default checkpoint_kind is not a checkpoint
    assert checkpoint_label({}, {"model_dir": None, "checkpoint_kind": "pretrained"}) == ""
    assert (
        checkpoint_label(
            {"checkpoint": "random initialisation", "checkpoint_kind": "random initialisation", "shape": "tiny"},
            {"checkpoint": ""},
        )
        == "random initialisation (tiny shape)"
    )
    here = {
        "checkpoint": "results/cellplm/pretrained/tiny_e4_seed0_ab/model",
        "checkpoint_kind": "pretrained here",
        "pretraining": {"shape": "tiny", "hyperparameters": {"epochs": 6}},
    }
    assert checkpoint_label(here, {}) == "pretrained here (tiny, 6 epochs)"
    released = {"checkpoint": "results/cellplm/checkpoints/released__20230926_85M/model", "checkpoint_kind": "released"}
    assert checkpoint_label(released, {}) == "released (20230926_85M)"
    missing = {"checkpoint": "resources/cellplm/20230926_85M", "checkpoint_kind": "released"}
    assert checkpoint_label({}, missing) == "released (20230926_85M)"


def test_bad_input_stops_with_one_line_and_no_output(workdir):
    a = make_counts_adata()
    a.write_h5ad(workdir / "mine.h5ad")
    cfg = _config(
        workdir,
        "mine.yaml",
        (
            "run: {datasets: [mine], methods: [true_labels], min_free_gb: 0}\n"  # about bad input, not free space
            "datasets:\n  mine:\n    source: {kind: local, path: mine.h5ad}\n    label_key: celltype\n"
        ),
    )
    out = snakemake(workdir, "results/data/mine/dataset.h5ad", "--cores", "1", "--configfile", cfg)
    assert out.returncode != 0
    assert "ERROR: mine.h5ad: label column 'celltype' not in obs (columns: cell_type, batch)" in out.stderr
    assert not (workdir / "results/data/mine").exists() or not any((workdir / "results/data/mine").iterdir())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of the whole offline demo (`make demo`'s snakemake command), shared by the tests below."""
    workdir = copy_workflow(tmp_path_factory.mktemp("demo"))
    out = snakemake(workdir, "--cores", "2", "--configfile", "config/demo.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_demo_end_to_end(demo):
    workdir = demo
    tables = workdir / "results" / "tables"
    summary = pd.read_csv(tables / "summary.tsv", sep="\t")
    bal = summary[summary["metric"] == "balanced_accuracy"].set_index(["dataset", "split", "method"])["mean"]
    assert (bal.xs("true_labels", level="method") == 1.0).all()
    n_types = {"pbmc68k": 9, "synthetic": 6}
    for (dataset, split), value in bal.xs("random_labels", level="method").items():
        assert abs(value - 1 / n_types[dataset]) < 0.15  # about chance
    assert bal[("pbmc68k", "published", "logistic_regression")] > 0.5
    runs = pd.read_csv(tables / "runs.tsv", sep="\t", keep_default_na=False)
    demo_run = workflow_config("config/demo.yaml")["run"]  # with the sentence-policy rows of cellplm
    n_methods = len(demo_run["methods"]) + len(demo_run["embeddings"])  # every embedding adds its zero-shot row
    geneformer = runs["method"].isin(["geneformer", "geneformer_zeroshot"])  # no model_dir: not_applicable rows
    assert geneformer.sum() == 2 * 3 * 2 and (runs.loc[geneformer, "status"] == "not_applicable").all()
    assert (
        runs.loc[runs["method"] == "geneformer", "reason"]
        .str.startswith("no Geneformer model directory configured")
        .all()
    )
    assert runs.loc[runs["method"] == "geneformer_zeroshot", "reason"].str.contains("not applicable").all()
    # the authors' pipeline cannot fine-tune on a batch hold-out (a sentence without training cells): a row that says so
    held_out = (runs["method"] == "cellplm_upstream") & (runs["split"] == "batch_holdout")
    assert held_out.sum() == 2 and (runs.loc[held_out, "status"] == "not_applicable").all()
    assert runs.loc[held_out, "reason"].str.contains("hold no training cell").all()
    # pbmc68k has no coordinates: CellPLM's spatial sentences, and so their zero-shot row, do not apply there
    flat = (runs["method"] == "cellplm_spatial16_zeroshot") & (runs["dataset"] == "pbmc68k")
    assert flat.sum() == 2 and (runs.loc[flat, "status"] == "not_applicable").all()
    ok = runs[~geneformer & ~held_out & ~flat]
    assert len(runs) == (1 + 2) * n_methods * 2 and (ok["status"] == "ok").all(), ok[ok["status"] != "ok"]
    # CellPLM rows: pretrained here (tiny shape, demo epochs), provenance in every table
    cellplm = runs[runs["method"].isin(["cellplm_finetune", "cellplm_upstream", "cellplm_zeroshot"])]
    assert len(cellplm) == 3 * 2 * 3
    assert (cellplm["checkpoint"] == "pretrained here (tiny, 4 epochs)").all()
    finetuned = cellplm[(cellplm["method"] != "cellplm_zeroshot") & ~held_out.loc[cellplm.index]]
    assert (finetuned["precision"] == "fp32").all()  # ours' default, the authors' only arithmetic
    sentences = finetuned.set_index(["dataset", "split"])["sentences"]
    assert (
        sentences.loc["pbmc68k"] == "one per obs['batch'] value (the dataset has no batch column: one value for all "
        "cells; 1 sentence)"
    ).all()
    assert (
        sentences.loc[("synthetic", "published")] == "one per obs['batch'] value (= dataset column 'batch'; 3 "
        "sentences)"
    ).all()
    policy_rows = runs["method"].isin([f"{e}_zeroshot" for e in POLICY_ROWS])  # CellPLM under other sentences
    assert (runs.loc[policy_rows & ~flat, "checkpoint"] == "pretrained here (tiny, 4 epochs)").all()
    others = runs.loc[~runs.index.isin(cellplm.index) & ~policy_rows]
    assert not others["checkpoint"].str.contains("pretrained here").any()
    assert others.loc[others["method"] == "scgpt", "checkpoint"].str.startswith("random initialisation").all()
    for name in ("scores", "summary"):
        table = pd.read_csv(tables / f"{name}.tsv", sep="\t", keep_default_na=False)
        rows = table[table["method"].str.startswith("cellplm_")]
        policies = {f"{e}_zeroshot" for e in POLICY_ROWS}
        assert set(rows["method"]) == {"cellplm_finetune", "cellplm_upstream", "cellplm_zeroshot", *policies}
        ran = rows[~((rows["method"] == "cellplm_spatial16_zeroshot") & (rows["dataset"] == "pbmc68k"))]
        assert (ran["checkpoint"] == "pretrained here (tiny, 4 epochs)").all()
    comparison = pd.read_csv(tables / "comparison.tsv", sep="\t", keep_default_na=False)
    assert (
        comparison.loc[comparison["method"] == "cellplm_finetune", "checkpoint"] == "pretrained here (tiny, 4 epochs)"
    ).all()
    # the demo exercises the comparison: pbmc68k is shown beside the published PBMC12K column, every published row
    # with our number of its reading, and no difference, because it is not that data
    # (the published CellPLM row meets both of our CellPLM fine-tuning rows: ours and the authors' code)
    assert len(comparison) == 9 and set(comparison["published_dataset"]) == {"PBMC12K"}
    assert set(comparison["dataset"]) == {"pbmc68k"} and (comparison["difference"] == "NA").all()
    ran = comparison[comparison["method"] != "(not run here)"]
    assert (
        len(ran) == 9
        and ran["not_comparable_reason"]
        .str.startswith("not the published dataset (differs: cells 692 vs published 11,990")
        .all()
    )
    cellplm_rows = comparison[comparison["published_method"] == "CellPLM"]
    assert sorted(cellplm_rows["method"]) == ["cellplm_finetune", "cellplm_upstream"]
    assert (
        cellplm_rows["sentences"]
        .str.endswith("; assumed: how the authors grouped this dataset into sentences is not published")
        .all()
    )
    ours = comparison[comparison["method"] != "cellplm_upstream"].set_index("published_method")
    assert (
        ours.loc["CellPLM", "reading"] == "tm_macro_accuracy"
        and ours.loc["scANVI", "reading"] == "tm_macro_accuracy_swapped"
    )
    assert (
        "checkpoint pretrained here (tiny, 4 epochs), not the authors' release"
        in ours.loc["CellPLM", "not_comparable_reason"]
    )
    # every published method has a row of ours, scDiff's too: scored under scDiff's own reading, test parameters said
    assert ours.loc["scDiff", "method"] == "scdiff" and ours.loc["scDiff", "reading"] == "tm_macro_accuracy_swapped"
    assert "quick test parameters" in ours.loc["scDiff", "not_comparable_reason"]
    datasets = pd.read_csv(tables / "datasets.tsv", sep="\t", keep_default_na=False).set_index("dataset")
    assert datasets.loc["pbmc68k", "data"] == "not the published data: pbmc68k_reduced"
    assert str(datasets.loc["pbmc68k", "comparable"]) == "False" and datasets.loc["synthetic", "published_as"] == ""
    pretrained = list((workdir / "results" / "cellplm" / "pretrained").glob("tiny_e4_seed0_*/loss.tsv"))
    assert len(pretrained) == 1 and len(pd.read_csv(pretrained[0], sep="\t")) > 4
    assert (workdir / "results" / "plots" / "cellplm_pretraining_loss.png").stat().st_size > 5000
    corpus = sorted(p.name for p in (workdir / "results" / "cellplm" / "corpus").glob("*.h5ad"))
    assert corpus == [
        "celltypist_sample.h5ad",
        "synthetic_spatial.h5ad",
        "train__pbmc68k.h5ad",
        "train__synthetic.h5ad",
    ]
    assert {"fit_s", "predict_s", "peak_rss_mb", "device", "versions"} <= set(runs.columns)
    speed = pd.read_csv(tables / "speed.tsv", sep="\t")
    fit = speed[speed["measure"] == "fit_wall"]
    zero = fit["method"].str.endswith("_zeroshot")  # one kNN job per split for every zero-shot row: no job of its own
    assert (fit.loc[~zero, "job_wall_s"] > 0).all() and fit.loc[zero, "job_wall_s"].isna().all()
    assert (fit.loc[zero, "value"] >= 0).all()
    emb = speed[speed["measure"] == "embedding_throughput"].set_index("method")
    assert emb.loc["cellplm", "status"] == "ok" and emb.loc["cellplm", "value"] > 0
    assert emb.loc["geneformer", "status"] == "not_applicable"
    md = (tables / "benchmark.md").read_text()
    assert "## Zero-shot embedding speed" in md
    assert "NOT the published protocol" in md and "Balanced accuracy (macro recall, classes in the truth)" in md
    assert "## Checkpoints" in md and "## Ours beside the published table, reading for reading" in md
    assert "- CellPLM (fine-tuned) (`cellplm_finetune`): pretrained here (tiny, 4 epochs) (6 ok runs)." in md
    assert "| CellPLM (fine-tuned, authors' code) [pretrained here (tiny, 4 epochs), fp32] |" in md
    _check_fidelity(tables, md)
    for png in [
        "score_heatmap",
        "published_comparison",
        "speed",
        "confusion/pbmc68k__published",
        "zeroshot_scib",
        "umap/pbmc68k",
        "umap/synthetic",
    ]:
        assert (workdir / "results" / "plots" / f"{png}.png").stat().st_size > 5000
    _check_zeroshot_track(tables, md)
    _check_context_track(tables, workdir / "results" / "plots", md)
    report = snakemake(workdir, "--configfile", "config/demo.yaml", "--report", "results/report.html")
    assert report.returncode == 0, report.stderr[-2000:]
    assert (workdir / "results" / "report.html").stat().st_size > 100_000
    again = snakemake(workdir, "-n", "--configfile", "config/demo.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr


MARGIN = 0.2  # macro-F1 above the majority-class control that every learning row of the demo reaches


@pytest.mark.slow
def test_demo_rows_beat_the_majority_class(demo):
    """Every learning row of the demo (all methods but the controls, the zero-shot kNN rows included) scores macro-F1
    at least MARGIN above the majority class, on every dataset, split and seed; exempt are rows that do not apply
    (no model offline, the authors' pipeline on a batch hold-out) and rows whose configured note says why they cannot
    learn here, and those notes are on their rows in every table."""
    from cellplm.bench.methods import zeroshot_row_id
    from cellplm.bench.metrics import METRICS

    tables = demo / "results" / "tables"
    scores = pd.read_csv(tables / "scores.tsv", sep="\t", keep_default_na=False)
    f1 = scores[scores["metric"] == "macro_f1"].assign(value=lambda t: pd.to_numeric(t["value"], errors="coerce"))
    keys = ["dataset", "split", "seed"]
    majority = f1[f1["method"] == "majority_class"].set_index(keys)["value"]
    assert len(majority) == 3 * 2 and (majority < 0.1).all()
    demo_config = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    notes = {
        **{m: s["note"] for m, s in demo_config["methods"].items() if s.get("note")},
        **{zeroshot_row_id(e): s["note"] for e, s in demo_config["embeddings"].items() if s.get("note")},
    }
    assert list(notes) == ["scgpt_zeroshot"]  # the one row that cannot learn here by design: untrained weights
    control_embeddings = [e for e in demo_config["run"]["embeddings"] if wf.embedding_registry(None)[e].get("control")]
    assert control_embeddings == ["random_embedding", "celltype_jittered", "pca_per_batch"]
    controls = {m for m, spec in wf.method_registry(None).items() if spec.get("control")}
    assert controls == {"majority_class", "random_labels", "true_labels"}
    controls |= {zeroshot_row_id(e) for e in control_embeddings}  # a control embedding's row is a control row
    learning = f1[~f1["method"].isin(controls)]
    assert (learning["note"] == learning["method"].map(notes).fillna("")).all()  # each row carries its method's note
    checked = learning[(learning["status"] != "not_applicable") & (learning["note"] == "")]
    above = checked["value"].to_numpy() - majority.loc[pd.MultiIndex.from_frame(checked[keys])].to_numpy()
    offenders = checked.assign(margin=above)[~(above >= MARGIN)]  # a failed run (NaN) is an offender too
    assert offenders.empty, f"rows less than {MARGIN} macro-F1 above the majority class:\n" + offenders[
        keys + ["method", "status", "value", "margin"]
    ].to_string(index=False)
    run = workflow_config("config/demo.yaml")["run"]  # with the sentence-policy rows of cellplm
    n_learning = len(run["methods"]) + len(run["embeddings"]) - len(controls)
    # Geneformer and its zero-shot row (no model offline); upstream on batch_holdout; spatial sentences on pbmc68k
    not_applicable = 3 * 2 * 2 + 2 + 2
    assert len(checked) == 3 * 2 * (n_learning - len(notes)) - not_applicable
    summary = pd.read_csv(tables / "summary.tsv", sep="\t", keep_default_na=False)
    assert (summary["note"] == summary["method"].map(notes).fillna("")).all()
    md = (tables / "benchmark.md").read_text()
    row = f"| scGPT (zero-shot embedding + kNN) [random initialisation (tiny shape)] — {notes['scgpt_zeroshot']} |"
    assert md.count(row) == 2 * len(METRICS)  # its row of every metric table, both splits


def _check_fidelity(tables, md):
    """Ours minus the authors' code on every dataset split and metric, like for like (the same demo protocol)."""
    fidelity = pd.read_csv(tables / "fidelity.tsv", sep="\t", keep_default_na=False)
    assert len(fidelity) == 3 * 6 and set(fidelity["metric"]) == {
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "macro_precision",
        "tm_macro_accuracy",
        "tm_macro_accuracy_swapped",
    }
    ran = fidelity[fidelity["split"] == "published"]
    assert (ran["n_paired"] == 2).all() and (ran["like_for_like"].astype(str) == "True").all()
    assert (
        ran["settings"]
        .str.startswith(
            "like for like: checkpoint pretrained here (tiny, 4 epochs), precision fp32, "
            "max_epochs 40, patience 40, warmup_epochs 30"
        )
        .all()
    )
    diff = ran["ours_mean"].astype(float) - ran["authors_mean"].astype(float)
    assert (diff - ran["difference_of_means"].astype(float)).abs().max() < 1e-9
    held = fidelity[fidelity["split"] == "batch_holdout"]
    assert (held["authors_status"] == "not_applicable").all() and (held["n_paired"] == 0).all()
    assert "## Fidelity: ours vs the authors' code" in md and "### synthetic, split `batch_holdout`" in md


POLICY_ROWS = ["cellplm_single", "cellplm_random16", "cellplm_mixed64", "cellplm_spatial16"]  # demo.yaml's policies


def _check_context_track(tables, plots, md):
    """The demo's tissue-context track: the curve (every policy row with its provenance, spatial only where there are
    coordinates), the fine-tuned stability table and the three figures."""
    curve = pd.read_csv(tables / "context_curve.tsv", sep="\t", keep_default_na=False)
    assert set(curve["embedding"]) == {"cellplm", *POLICY_ROWS}
    runs = curve.drop_duplicates(["dataset", "embedding"]).set_index(["dataset", "embedding"])
    assert runs.loc[("synthetic", "cellplm"), "policy"] == "batch"
    assert float(runs.loc[("synthetic", "cellplm"), "cells_per_sentence"]) == 500  # 1,500 cells in 3 batches
    assert float(runs.loc[("synthetic", "cellplm_single"), "cells_per_sentence"]) == 1
    assert float(runs.loc[("synthetic", "cellplm_random16"), "seed"]) == 0  # the run's first seed
    assert runs.loc[("synthetic", "cellplm_spatial16"), "status"] == "ok"  # the synthetic sections have coordinates
    assert runs.loc[("pbmc68k", "cellplm_spatial16"), "status"] == "not_applicable"
    ok = curve[curve["status"] == "ok"]
    assert set(ok["metric"]) == {"bio_conservation", "batch_correction", "total", "knn_macro_f1"}
    assert (
        ok["value"].astype(float).between(0, 1).all() and (ok["checkpoint"] == "pretrained here (tiny, 4 epochs)").all()
    )
    assert (ok["embed_s"].astype(float) > 0).all() and set(ok["precision"]) <= {"fp32", "bf16"}
    stability = pd.read_csv(tables / "context_stability.tsv", sep="\t", keep_default_na=False)
    assert set(stability["method"]) == {"cellplm_finetune"}
    assert set(stability["policy"]) == {"as trained", "single", "random:16", "test_only"}
    assert len(stability) == 3 * 2 * 4 and (stability["status"] == "ok").all()  # 3 splits x 2 seeds x 4 policies
    changed = stability["changed"].astype(float)
    assert changed.between(0, 1).all() and (changed[stability["policy"] == "as trained"] == 0).all()
    assert "## Tissue context" in md and "show the machinery, not the answer" in md
    assert "| **batch** | 500 |" in md and "- spatial:16: not_applicable" in md
    assert "| synthetic | batch_holdout | CellPLM (fine-tuned) | single |" in md
    assert "- CellPLM (fine-tuned): checkpoint pretrained here (tiny, 4 epochs), precision fp32; 6 runs;" in md
    assert md.index("### Cost of context") > md.index("## Zero-shot embedding speed")  # in the speed section
    assert "| synthetic | spatial:16 | 16 |" in md
    for name in ("curve", "stability", "cost"):
        assert (plots / "context" / f"{name}.png").stat().st_size > 10_000


def _check_zeroshot_track(tables, md):
    """The demo's zero-shot track: every embedding scored with its provenance, the controls after the embeddings,
    zero-shot rows beside the methods."""
    from cellplm.bench.report.zeroshot import CONTROL_CHECKPOINT, NO_CHECKPOINT

    controls = ["random_embedding", "celltype_jittered", "pca_per_batch"]
    embeddings = ["cellplm", *POLICY_ROWS, "scgpt", "geneformer", "pca", "scvi", *controls]
    zs = pd.read_csv(tables / "zeroshot.tsv", sep="\t", keep_default_na=False)
    assert set(zs["dataset"]) == {"pbmc68k", "synthetic"}
    assert set(zs["embedding"]) == set(embeddings)
    for _, sub in zs.groupby("dataset"):  # the controls last, marked
        marked = sub.loc[sub["control"].astype(str) == "True", "embedding"]
        assert list(dict.fromkeys(sub["embedding"]))[-3:] == controls and set(marked) == set(controls)
    checkpoint = zs.drop_duplicates("embedding").set_index("embedding")["checkpoint"]
    assert (checkpoint[controls] == CONTROL_CHECKPOINT).all()
    assert checkpoint["cellplm"] == "pretrained here (tiny, 4 epochs)"
    assert checkpoint["scgpt"] == "random initialisation (tiny shape)"
    assert checkpoint["pca"] == checkpoint["scvi"] == NO_CHECKPOINT
    gf = zs[zs["embedding"] == "geneformer"]
    assert (gf["status"] == "not_applicable").all() and gf["reason"].str.contains("model director").all()
    spatial = zs[(zs["embedding"] == "cellplm_spatial16") & (zs["dataset"] == "pbmc68k")]  # no coordinates there
    assert (spatial["status"] == "not_applicable").all() and spatial["reason"].str.contains("obsm").all()
    ran = zs[(zs["embedding"] != "geneformer") & ~zs.index.isin(spatial.index)]
    assert set(ran.loc[ran["dataset"] == "synthetic", "status"]) == {"ok"}  # three batches: every metric
    one = ran[ran["dataset"] == "pbmc68k"]  # one batch: bio conservation only, the batch columns say why
    assert (one.loc[one["metric_type"] == "bio", "status"] == "ok").all()
    assert (one.loc[one["metric_type"] == "batch", "status"] == "not_applicable").all()
    assert one.loc[one["metric_type"] == "batch", "reason"].str.contains("one batch").all()
    assert (
        set(zs["cells"]) == {"all 692 cells", "all 1,500 cells"}
        and zs["metric_set"].str.startswith("scib-metrics 0.5").all()
    )
    assert (ran.loc[ran["status"] == "ok", "value"].astype(float).between(-1, 1)).all()
    cost = pd.read_csv(tables / "embedding_speed.tsv", sep="\t").set_index(["dataset", "embedding"])
    assert (cost.loc[cost["status"] == "ok", "cells_per_s"] > 0).all() and len(cost) == 2 * len(embeddings)
    scores = pd.read_csv(tables / "scores.tsv", sep="\t", keep_default_na=False)
    zero = scores[scores["method"].str.endswith("_zeroshot")]
    assert set(zero["method"]) == {f"{e}_zeroshot" for e in embeddings}
    assert set(zip(zero["dataset"], zero["split"])) == {
        ("pbmc68k", "published"),
        ("synthetic", "published"),
        ("synthetic", "batch_holdout"),
    }
    assert "## Zero-shot embeddings" in md and "### Embedding cost" in md
    assert "CellPLM (zero-shot embedding + kNN)" in md and "scVI (zero-shot embedding + kNN)" in md
    assert "| *Random embedding (control)* | none (a control) |" in md and "bounds of each score, not methods" in md


# Columns that measure the run rather than its result (time, memory, host, date) differ between identical runs.
VOLATILE = re.compile(
    r"(^|_)(s|seconds|wall|wall_s|time|rss|rss_mb|mb|date|host|started|finished|versions)$|peak|throughput"
)


def stable(value):
    """``value`` without its volatile entries, JSON objects (run-record extras) included."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [stable(v) for v in value]
    if isinstance(value, str) and value.startswith("{"):
        return json.dumps(stable(json.loads(value)), sort_keys=True)
    return value


def result_tables(workdir) -> dict[str, pd.DataFrame]:
    tables = {}
    for path in sorted((workdir / "results" / "tables").glob("*.tsv")):
        if path.name == "speed.tsv":  # timings only
            continue
        df = pd.read_csv(path, sep="\t", keep_default_na=False)
        tables[path.name] = df.drop(columns=[c for c in df.columns if VOLATILE.search(c)]).map(stable)
    return tables


def predictions(workdir) -> dict[str, list]:
    runs = workdir / "results" / "runs"
    return {
        str(p.relative_to(runs)): read_h5ad(p).obs["label_pred"].astype(str).tolist()
        for p in sorted(runs.rglob("prediction.h5ad"))
    }


def processes(needle: str) -> list[int]:
    """PIDs with ``needle`` as one of their arguments (the python running a script, not the shell around it), or,
    for a method's id, the batch job that runs it (``python -m cellplm.bench.methods batch --runs [...]``)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0") if proc.name.isdigit() else []
            if needle in args or ("batch" in args and any(f'"method":"{needle}"' in a.replace(" ", "") for a in args)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def wait_for_process(needle: str, exclude=(), timeout=900) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = [p for p in processes(needle) if p not in exclude]
        if pids:
            return pids[0]
        time.sleep(0.2)
    raise AssertionError(f"no process running {needle} after {timeout} s")


def planned_jobs(workdir) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job `snakemake -n` would run for the demo."""
    out = snakemake(workdir, "-n", "--configfile", "config/demo.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n(.*?)(?=\n\n|\n\[|\Z)", out.stdout, re.M | re.S):
        wild = re.search(r"^\s+wildcards: (.*)$", m.group(2), re.M)
        jobs.append((m.group(1), dict(kv.split("=", 1) for kv in wild.group(1).split(", ")) if wild else {}))
    return jobs


@pytest.mark.slow
def test_only_jobs_whose_code_changed_rerun(demo):
    """After a completed demo, an edit to the plotting code reruns only plot jobs, and an edit to one method's code
    only the jobs that run it (its batch job, in the demo) and what is downstream of them (each rule's params carry the
    hash of its own code).
    The demo's own folder is used (a copy elsewhere would change the interpreter paths in the params); every edit is
    undone."""
    assert planned_jobs(demo) == []
    for path, expected in [
        ("cellplm/bench/report/plots.py", {"plots", "confusion_plot", "cellplm_loss_plot", "umap", "all"}),
        (
            "cellplm/bench/methods/knn_pca/method.py",
            {"run_batch_classic", "score", "aggregate", "plots", "confusion_plot", "all"},
        ),
    ]:
        original = (demo / path).read_bytes()
        try:
            (demo / path).write_bytes(original + b"\n# an edit\n")
            jobs = planned_jobs(demo)
        finally:
            (demo / path).write_bytes(original)
        assert {rule for rule, _ in jobs} == expected, (path, jobs)
        if "methods/" in path:
            # knn_pca is batched with the other light methods of its env (one job per dataset split): only that batch
            reran = [w for rule, w in jobs if rule.startswith("run_")]
            assert len(reran) == 3 and {(w["dataset"], w["split"]) for w in reran} == {
                ("pbmc68k", "published"),
                ("synthetic", "published"),
                ("synthetic", "batch_holdout"),
            }
        assert planned_jobs(demo) == [], path


@pytest.mark.slow
def test_killed_jobs_are_retried_and_resumed(demo, tmp_path):
    """SIGKILL the fine-tuning process: snakemake retries the job. Then SIGKILL snakemake and everything under it
    (a crashed node): the same command removes the stale lock, reruns the job that was running and finishes with
    the undisturbed run's results."""
    workdir = copy_workflow(tmp_path)
    target = "results/runs/synthetic/published/cellplm_finetune/seed0"
    outputs = [f"{target}/prediction.h5ad", f"{target}/run.json"]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *outputs,
        "--cores",
        "2",
        "--retries",
        "1",
        "--configfile",
        "config/demo.yaml",
    ]
    env = dict(os.environ, PYTHONPATH=str(workdir))
    with open(tmp_path / "first.log", "w") as log:
        run = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            first = wait_for_process("cellplm_finetune")  # the runner (in the demo: the batch job that runs it)
            time.sleep(1.5)
            os.kill(first, signal.SIGKILL)  # the job dies mid-run: snakemake restarts it (--retries 1)
            wait_for_process("cellplm_finetune", exclude={first})
            time.sleep(1.5)
            os.killpg(run.pid, signal.SIGKILL)  # the whole run dies, the retried job with it
            run.wait(timeout=60)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    assert "Trying to restart job" in (tmp_path / "first.log").read_text()
    assert not any((workdir / p).exists() for p in outputs)
    resumed = snakemake(workdir, *outputs, "--cores", "2", "--configfile", "config/demo.yaml")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert STALE_LOCK in resumed.stderr
    assert not list((workdir / target).glob(".*partial*"))
    mine, reference = (read_h5ad(w / outputs[0]).obs["label_pred"].tolist() for w in (workdir, demo))
    assert mine == reference
    record, reference = (json.loads((w / outputs[1]).read_text()) for w in (workdir, demo))
    assert record["status"] == "ok" and stable(record) == stable(reference)


@pytest.mark.slow
def test_demo_killed_mid_run_resumes_and_reproduces_the_first_run(demo, tmp_path):
    """`make demo`'s snakemake killed with SIGKILL (it and every job at once) once its first method job has ended:
    the same command again removes the stale lock (one line), reruns what was running, keeps what was done, and
    gives the undisturbed demo's results. The killed run starts from a copy of the shared demo's results without
    pbmc68k's runs and embeddings and the tables and plots, so that it redoes a third of the demo's jobs (every
    method, embedding and score of pbmc68k, then the tables and plots); it is also the determinism test of that
    third: with the same seeds on CPU it gives identical predictions and identical tables. (What it does not redo is
    proven deterministic elsewhere: the data and splits by the tests of cellplm.bench.data, pretraining by
    test_pretrain's resume test, each method by its own seeded test.)"""
    workdir = copy_workflow(tmp_path)
    for kept in ("results", ".snakemake"):  # the outputs and Snakemake's record of them (copied with their mtimes)
        shutil.copytree(demo / kept, workdir / kept, symlinks=True)
    # where a demo stands a third of the way: pbmc68k's jobs and the tables and plots not done yet (Snakemake does
    # not redo a deleted intermediate file whose consumers are up to date, so the final outputs go too)
    for redone in ("runs/pbmc68k", "embeddings/pbmc68k", "tables", "plots"):
        shutil.rmtree(workdir / "results" / redone)
    cmd = ["--cores", "2", "--configfile", "config/demo.yaml"]  # as the demo fixture and `make demo` run it
    runs = workdir / "results" / "runs"
    benchmarks = workdir / "results" / "benchmarks" / "methods" / "pbmc68k" / "published"
    before = {b: b.stat().st_mtime_ns for b in benchmarks.glob("batch_*.tsv")}
    assert before, "the demo ran no method batch job on pbmc68k"
    first_log = tmp_path / "first.log"

    def batch_jobs_ended():
        """The batch jobs the killed run finished: Snakemake logs "Finished jobid" once it has recorded a job's
        outputs as complete (only pbmc68k's method jobs have work to do in this run)."""
        text = first_log.read_text() if first_log.exists() else ""
        return [
            benchmarks / f"batch_{name}.tsv"
            for name in re.findall(r"Finished jobid: \d+ \(Rule: run_batch_(\w+)\)", text)
        ]

    with open(first_log, "w") as log:
        first = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *cmd],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(workdir)),
            start_new_session=True,
        )
        try:
            _wait_for(lambda: batch_jobs_ended() or first.poll() is not None, "a method batch job", timeout=1200)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=60)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL, first_log.read_text()[-3000:]
    assert any((workdir / ".snakemake" / "locks").glob("*.lock"))  # what a killed run leaves
    jobs = re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", first_log.read_text(), re.M)
    # of synthetic, only the confusion plots deleted with results/plots: a copied workflow folder reruns no job
    assert {rule for rule, body in jobs if "dataset=synthetic" in body} <= {"confusion_plot"}
    ended = batch_jobs_ended()
    assert len(ended) < len(before)  # killed mid-run: some method jobs of pbmc68k had not ended
    # the runs of the method jobs that had ended (the demo runs every method in batch jobs)
    members = wf.method_batches(workflow_config("config/demo.yaml"), by_env=False)  # as the demo runs, without conda
    done = {
        p: p.stat().st_mtime_ns
        for b in ended
        for m in members[b.stem.removeprefix("batch_")]
        for seed in (0, 1)
        for p in [runs / "pbmc68k" / "published" / m / f"seed{seed}" / "prediction.h5ad"]
    }
    assert done and all(t > max(before.values()) for t in done.values())  # redone by the killed run
    resumed = snakemake(workdir, *cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [line for line in resumed.stderr.splitlines() if "lock" in line.lower()] == [
        STALE_LOCK + " in this directory."
    ]
    assert "configured for a GPU" not in first_log.read_text() + resumed.stderr
    assert {p: p.stat().st_mtime_ns for p in done} == done  # the finished runs were kept, not run again
    assert all(b.stat().st_mtime_ns != before[b] for b in before)  # and every other method job of pbmc68k redone
    first, second = predictions(demo), predictions(workdir)
    demo_run = workflow_config("config/demo.yaml")["run"]  # with the sentence-policy rows of cellplm
    assert len(first) == 3 * 2 * (len(demo_run["methods"]) + len(demo_run["embeddings"]))  # + the zero-shot rows
    assert first.keys() == second.keys()
    differ = [k for k in first if first[k] != second[k]]
    assert not differ, differ
    t1, t2 = result_tables(demo), result_tables(workdir)
    assert t1.keys() == t2.keys() and "scores.tsv" in t1 and "runs.tsv" in t1
    for name in t1:
        pd.testing.assert_frame_equal(t1[name], t2[name], obj=name)
    for rel in ["embeddings/pbmc68k/cellplm/embedding.h5ad", "embeddings/pbmc68k/scvi/embedding.h5ad"]:
        a, b = read_h5ad(demo / "results" / rel), read_h5ad(workdir / "results" / rel)
        assert a.obs_names.equals(b.obs_names) and all(np.array_equal(a.obsm[k], b.obsm[k]) for k in a.obsm)


def test_unwritable_results_stop_before_any_job(workdir, read_only):
    (workdir / "results").mkdir()
    read_only(workdir / "results")
    out = snakemake(workdir, "--cores", "1", "--configfile", "config/demo.yaml")
    assert out.returncode != 0
    assert f"{workdir}/results/: not writable (Read-only file system); run from a writable" in out.stderr
    assert not (workdir / "logs" / "data").exists()  # no job ran


def test_full_disk_stops_with_one_line_then_the_rerun_completes(workdir, small_disk):
    (workdir / "results").symlink_to(small_disk.path)
    cfg = _config(workdir, "disk.yaml", "run: {min_free_gb: 0}\n")  # the pre-run check is tested below
    target = "results/data/synthetic/published/train.h5ad"
    out = snakemake(workdir, target, "--cores", "1", "--configfile", "config/demo.yaml", cfg)
    assert out.returncode != 0
    assert re.search(
        r"ERROR: results/data/synthetic/\S+\.h5ad: no space left on device while writing "
        r"\(nothing was written\)",
        out.stderr,
    ), out.stderr[-3000:]
    assert "SIGSEGV" not in out.stderr and "Traceback" not in out.stderr
    assert not [p for p in small_disk.path.rglob("*") if p.is_file()]  # nothing half-written
    small_disk.resize(256 << 20)
    again = snakemake(workdir, target, "--cores", "1", "--configfile", "config/demo.yaml", cfg)
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_h5ad(workdir / target).n_obs > 0


def test_low_free_space_stops_before_any_job(workdir, small_disk):
    (workdir / "results").symlink_to(small_disk.path)
    out = snakemake(workdir, "--cores", "1", "--configfile", "config/demo.yaml")
    assert out.returncode != 0
    assert re.search(
        r"results/: only 0\.00 GB free on its filesystem, below run.min_free_gb \(1\); free space", out.stderr
    ), out.stderr[-2000:]
    assert not (workdir / "logs" / "data").exists()


# ---- a run killed at any point resumes with the same command; GPU jobs without a GPU; clean-demo; dry-run speed ----

STALE_LOCK = "Removed a stale lock (.snakemake/locks/): the run that left it was killed, and no other snakemake works"
# A few quick jobs of the demo: the synthetic dataset built, preprocessed and split (three jobs, each a new python).
QUICK = (
    "run: {datasets: [synthetic], methods: [majority_class], embeddings: [], seeds: [0]}\n"
    "datasets: {synthetic: {splits: [published]}}\nspeed: {enabled: false}\n"
)
QUICK_TARGET = "results/data/synthetic/published/train.h5ad"


def _wait_for(condition, what, timeout=300):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(0.05)


def test_killed_run_resumes_with_the_same_command(workdir):
    """A run's lock stays while the run lives (a second run stops, a dry run leaves it); once the run is killed with
    SIGKILL, the same command removes the stale lock, says so in one line, and finishes the run."""
    cmd = [QUICK_TARGET, "--cores", "1", "--configfile", "config/demo.yaml", _config(workdir, "quick.yaml", QUICK)]
    locks = workdir / ".snakemake" / "locks"
    env = dict(os.environ, PYTHONPATH=str(workdir))
    with open(workdir / "first.log", "w") as log:
        live = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *cmd],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for(lambda: any(locks.glob("*.lock")) or live.poll() is not None, "the run's lock")
            os.killpg(live.pid, signal.SIGSTOP)  # alive, holding its lock, doing nothing: deterministic from here
            assert live.poll() is None, (workdir / "first.log").read_text()[-3000:]
            held = sorted(p.name for p in locks.glob("*.lock"))
            second = snakemake(workdir, *cmd)
            assert second.returncode != 0 and "Directory cannot be locked" in second.stderr, second.stderr[-3000:]
            assert STALE_LOCK not in second.stderr
            assert snakemake(workdir, "-n", *cmd).returncode == 0
            assert sorted(p.name for p in locks.glob("*.lock")) == held  # neither took the live run's lock away
            os.killpg(live.pid, signal.SIGKILL)  # the whole run dies at once (snakemake and its job)
            live.wait(timeout=60)
        finally:
            if live.poll() is None:
                os.killpg(live.pid, signal.SIGKILL)
    assert sorted(p.name for p in locks.glob("*.lock")) == held and not (workdir / QUICK_TARGET).exists()
    resumed = snakemake(workdir, *cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [line for line in resumed.stderr.splitlines() if "lock" in line.lower()] == [
        STALE_LOCK + " in this directory."
    ]
    assert read_h5ad(workdir / QUICK_TARGET).n_obs > 0
    assert not any(locks.glob("*.lock"))  # the finished run released its own lock


GPU_RUN = (  # two scANVI seeds and the scVI embedding pick their device; cellplm_finetune is pinned to the CPU
    "run: {datasets: [synthetic], methods: [majority_class, scanvi, cellplm_finetune], embeddings: [scvi, pca],"
    " seeds: [0, 1], min_free_gb: 1.0e+9}\n"  # the free-space check then stops the run before any job
    "datasets: {synthetic: {splits: [published]}}\nspeed: {enabled: false}\n"
    "methods: {scanvi: {gpu: true, params: {use_gpu: true}}, cellplm_finetune: {gpu: true, params: {device: cpu}}}\n"
    "embeddings: {scvi: {gpu: true}}\n"
)
GPU_WARNING = (
    "WARNING: 3 jobs of this run are configured for a GPU (gpu: true, device auto) but torch sees no GPU "
    "here; they will run on the CPU. Set run.require_gpu: true to stop instead."
)


def test_gpu_jobs_without_a_gpu_warn_in_one_line_or_stop_the_run(workdir):
    """Jobs configured for a GPU on a machine where torch sees none: one warning line with their number before any
    job; run.require_gpu: true stops the run instead. The demo (nothing configured for a GPU) warns of nothing."""
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}  # torch sees no GPU, on any machine
    cfg = _config(workdir, "gpu.yaml", GPU_RUN)
    out = snakemake(workdir, "--cores", "1", "--configfile", "config/demo.yaml", cfg, extra_env=no_gpu)
    assert out.returncode != 0 and "below run.min_free_gb" in out.stderr, out.stderr[-3000:]
    assert [line for line in out.stderr.splitlines() if "GPU" in line] == [GPU_WARNING]
    assert out.stderr.index(GPU_WARNING) < out.stderr.index("below run.min_free_gb")
    strict = _config(workdir, "strict.yaml", "run: {require_gpu: true}\n")
    out = snakemake(workdir, "--cores", "1", "--configfile", "config/demo.yaml", cfg, strict, extra_env=no_gpu)
    assert out.returncode != 0
    assert (
        "config: run.require_gpu: 3 jobs of this run are configured for a GPU (gpu: true, device auto) but torch "
        "sees no GPU here; run on a machine with a GPU, or set run.require_gpu: false to run them on the CPU"
    ) in out.stderr, out.stderr[-3000:]
    assert "WARNING" not in out.stderr and "min_free_gb" not in out.stderr  # stopped there, before any job
    assert not (workdir / "logs" / "data").exists()
    demo = _config(workdir, "nospace.yaml", "run: {min_free_gb: 1.0e+9}\n")
    out = snakemake(workdir, "--cores", "1", "--configfile", "config/demo.yaml", demo, extra_env=no_gpu)
    assert out.returncode != 0 and "below run.min_free_gb" in out.stderr, out.stderr[-3000:]
    assert "GPU" not in out.stderr


def test_gpu_check_asks_for_the_gpu_only_when_jobs_want_one():
    from cellplm.bench.workflow import gpu_check, wants_gpu

    asked = []
    assert gpu_check(0, True, visible=lambda: asked.append(1)) is None and not asked
    assert gpu_check(5, True, visible=lambda: True) is None  # a GPU is there: nothing to say
    assert gpu_check(1, False, visible=lambda: False).startswith("WARNING: 1 job of this run is configured for a GPU")
    assert [
        wants_gpu(True, {}),
        wants_gpu(True, {"device": "auto"}),
        wants_gpu(True, {"device": "cuda"}),
        wants_gpu(True, {"device": "cpu"}),
        wants_gpu(True, {"use_gpu": False}),
        wants_gpu(False, {}),
    ] == [True, True, False, False, False, False]


def test_clean_demo_deletes_the_demos_files_and_nothing_else(workdir):
    for name in ("Makefile", "tools"):
        src = ROOT / name
        shutil.copytree(src, workdir / name) if src.is_dir() else shutil.copy(src, workdir / name)
    run = "pbmc68k/published/knn_pca/seed0"
    planned = snakemake(workdir, "-n", "--configfile", "config/demo.yaml")
    pretrained = re.search(r"results/cellplm/pretrained/[^/]+/", planned.stdout).group(0)  # its settings' hash
    demo_files = [
        "results/data/synthetic/dataset.h5ad",
        "resources/sources/synthetic.h5ad",
        f"results/runs/{run}/run.json",
        "logs/methods/pbmc68k/published/batch_classic.log",  # knn_pca's batch job (the demo batches every method)
        "results/benchmarks/methods/pbmc68k/published/batch_classic.tsv",
        "results/tables/scores.tsv",
        "results/report.html",
        f"{pretrained}model.best.ckpt",
        f"{pretrained}last.best.ckpt",
    ]  # the training checkpoint too, not an output of the rule
    # a full run's download, run and log in the same folders, and an environment's build log
    full = "pbmc12k/published/knn_pca/seed0"
    others = [
        "resources/downloads/scdiff_reproducibility.tar.gz",
        f"results/runs/{full}/run.json",
        f"logs/methods/{full}.log",
        "results/bootstrap.log",
    ]
    for rel in demo_files + others:
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_text("x")
    out = subprocess.run(
        ["make", "clean-demo", f"PYTHON={sys.executable}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(workdir)),
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "clean-demo: deleted 9 files of the demo" in out.stdout
    assert [rel for rel in demo_files if (workdir / rel).exists()] == []
    assert [rel for rel in others if not (workdir / rel).exists()] == []
    assert not (workdir / "results/data").exists() and not (workdir / "resources/sources").exists()  # emptied


def test_code_hash_parses_each_file_once_and_follows_edits(tmp_path):
    """The full config's dry run asks for a code hash once per job: each file is parsed once, and an edited file
    changes the hash within the same process."""
    from cellplm.bench import codehash

    files = {
        "cellplm/__init__.py": "",
        "cellplm/bench/__init__.py": "",
        "cellplm/bench/a.py": "from . import b\n",
        "cellplm/bench/b.py": "x = 1\n",
        "script.py": "import cellplm.bench.a\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "cellplm/resources").mkdir()  # hashed with the model package (cellplm/__init__.py is part of it)
    before = codehash._imported_names.cache_info().misses
    first = codehash.code_hash(tmp_path, "script.py")
    assert codehash._imported_names.cache_info().misses - before == len(files)
    assert codehash.code_hash(tmp_path, "script.py") == first
    codehash.code_hash(tmp_path, "cellplm.bench.b")
    assert codehash._imported_names.cache_info().misses - before == len(files)  # nothing parsed twice
    b = tmp_path / "cellplm/bench/b.py"
    stat = b.stat()
    b.write_text("x = 2\n")
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert codehash.code_hash(tmp_path, "script.py") != first
    b.write_text("x = 1\n")
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert codehash.code_hash(tmp_path, "script.py") == first


def test_batch_jobs_group_methods_that_would_run_alike():
    """Batch jobs (batch: true) group the methods whose jobs would have the same interpreter and threads (and conda
    env with --use-conda), so each run computes with the threads its own job would give it; a method whose GPU a
    config turns on leaves its batch for the GPU rule; a method with a script of its own is refused with one line."""
    from cellplm.bench.errors import ConfigError

    cfg = workflow_config("config/demo.yaml")
    groups = wf.method_batches(cfg, by_env=False)
    for members in groups.values():
        assert len({(cfg["methods"][m]["python"], cfg["methods"][m]["threads"]) for m in members}) == 1
    assert sorted(m for ms in groups.values() for m in ms) == sorted(cfg["run"]["methods"])  # the demo batches all
    assert groups["classic_t2"] == ["singlecellnet"] and groups["scgpt"] == ["scgpt"]
    assert len(wf.method_batches(cfg, by_env=True)) > len(groups)
    # the embedding methods alike: the demo's .venv ones (CellPLM with its sentence-policy rows, PCA, scVI, Geneformer,
    # the controls) embed a dataset in one job; scGPT's own interpreter runs one job a dataset anyway
    embeddings = wf.embedding_batches(cfg, by_env=False)
    assert embeddings == {"cellplm": [e for e in cfg["run"]["embeddings"] if e != "scgpt"]}
    assert "cellplm_random16" in embeddings["cellplm"] and len(wf.embedding_batches(cfg, by_env=True)) > 1
    cfg["methods"]["scgpt"]["gpu"] = True
    assert "scgpt" not in wf.method_batches(cfg)
    cfg["methods"]["knn_pca"]["script"] = "my_knn.R"
    with pytest.raises(
        ConfigError,
        match=r"^methods.knn_pca: batch: true needs an `entry` \(a script of its own "
        r"runs in a job per seed\)$",
    ):
        wf.method_batches(cfg)


def test_full_config_runs_scdiff_with_the_published_hyperparameters(workdir):
    """The job command of a full run's scDiff: upstream's eval_annotation settings (method.yaml's params, each cited
    there), not the demo's test_params."""
    out = snakemake(workdir, "-n", "-p", "results/runs/hlca/published/scdiff/seed0/run.json")
    assert out.returncode == 0, out.stderr[-2000:]
    command = next(line for line in out.stdout.splitlines() if "--dataset hlca" in line and "scdiff" in line)
    params = json.loads(re.search(r"--params '(\{.*?\})'", command).group(1))
    published = {"embed_dim": 512, "depth": 6, "num_heads": 8, "dim_head": 64, "timesteps": 1000, "batch_size": 2048,
                 "max_epochs": 2000, "base_learning_rate": 1e-08, "n_samples": 5, "cell_mask_ratio": 0.25}  # fmt: skip
    assert {k: params.get(k) for k in published} == published
    assert "--param-set default" in command


def test_full_config_embeds_under_each_sentence_policy(workdir):
    """A policy row's job runs the cellplm embedding method's code with its policy, recorded under its own id."""
    out = snakemake(workdir, "-n", "-p", "results/embeddings/hlca/cellplm_random4096/run.json")
    assert out.returncode == 0, out.stderr[-2000:]
    command = next(line for line in out.stdout.splitlines() if "--as cellplm_random4096" in line)
    assert "-m cellplm.bench.embeddings cellplm --as cellplm_random4096 " in command
    params = json.loads(re.search(r"--params '(\{.*?\})'", command).group(1))
    assert params["sentences"] == "random:4096" and params["checkpoint_kind"] == "released"
    assert "--seed 0 " in command  # the run's first seed draws the random sentences

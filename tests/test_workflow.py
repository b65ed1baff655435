"""The Snakemake workflow itself: lint, offline dry run of the full config, config errors, bad input, demo."""

import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import ROOT, make_counts_adata

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
    if (ROOT / ".venv-scgpt").exists():  # the demo's scGPT interpreter (a link into the env cache), not a copy
        (dest / ".venv-scgpt").symlink_to((ROOT / ".venv-scgpt").resolve())
    return dest


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path)


def snakemake(workdir, *args, timeout=2400):
    env = dict(os.environ, PYTHONPATH=str(workdir))
    # Any attempt to reach the network would go to a closed local port.
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True, text=True,
                          env=env, timeout=timeout)


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
    # 4 PBMC12K files + Pancreas + the scDiff archive (shared by HLCA and Immune) + Brain + Liver
    assert jobs["download"] == 8 and jobs["extract_archive"] == 2 and jobs["preprocess"] == 6
    n_methods = len(yaml.safe_load((ROOT / "config/config.yaml").read_text())["run"]["methods"])
    assert jobs["run_method"] + jobs["run_method_gpu"] == 6 * n_methods * 3  # every method in run.methods
    # The released checkpoint is not on disk here: no CellPLM job is planned, and a warning says what happens.
    assert not any(rule.startswith("cellplm_") for rule in jobs)
    assert "CellPLM checkpoint not found: resources/cellplm/20230926_85M.best.ckpt" in out.stderr
    for dataset in ("pbmc12k", "pancreas", "hlca", "immune", "brain", "liver"):
        assert f"results/data/{dataset}/dataset.h5ad" in out.stdout
    assert "cellxgene_c05e6940-729c-47bd-a2a6-6ce3730c4919.h5ad" in out.stdout
    assert not (workdir / "resources").exists()  # nothing was downloaded


def _config(workdir, name, text):
    (workdir / "config" / name).write_text(text)
    return f"config/{name}"


@pytest.mark.parametrize("text, message", [
    ("run: {datasets: [pbmc68k], methods: [no_such_method]}\n"
     "datasets: {pbmc68k: {source: {kind: builtin, name: pbmc68k_reduced}}}\n",
     "unknown method 'no_such_method' in run.methods"),
    ("run: {datasets: [nowhere], methods: [true_labels]}\n", "unknown dataset 'nowhere' in run.datasets"),
    ("run: {datasets: [pbmc12k], methods: [true_labels], sedes: [1]}\n", "sedes"),
])
def test_config_errors_name_the_problem(workdir, text, message):
    out = snakemake(workdir, "-n", "--configfile", _config(workdir, "bad.yaml", text))
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


CELLPLM_RUN = ("run: {datasets: [pbmc68k], methods: [cellplm_finetune, cellplm_zeroshot]}\n"
               "datasets: {pbmc68k: {source: {kind: builtin, name: pbmc68k_reduced}}}\n")


@pytest.mark.parametrize("section, message", [
    ("cellplm: {checkpoint: {source: url}}",
     "cellplm.checkpoint.source is 'url' but cellplm.checkpoint.weights_url is not set"),
    ("cellplm: {checkpoint: {source: dropbox}}", "'dropbox' is not one of ['path', 'url', 'pretrain', 'none']"),
    ("cellplm: {checkpoint: {source: url, weights_url: 'https://example.org/m.best.ckpt', sha256: abc}}",
     "'abc' does not match"),
    ("cellplm: {checkpoint: {source: url, weights_url: 'ftp://example.org/m.best.ckpt'}}",
     "cellplm.checkpoint.weights_url must be an http(s) URL"),
    ("cellplm: {checkpoint: {source: pretrain, sha256: '" + "a" * 64 + "'}}",
     "cellplm.checkpoint.sha256 is only used with source 'url'"),
    ("cellplm: {checkpoint: {source: pretrain}, pretrain: {corpus: {celltypist_sample: false, train_cells: false,"
     " synthetic_spatial: {enabled: false}}}}", "cellplm.pretrain.corpus: every corpus item is off"),
    ("cellplm: {checkpoint: {source: pretrain}, pretrain: {shape: huge}}", "'huge' is not one of"),
    ("cellplm: {checkpoint: {source: path, checkpoint_dir: x}}", "checkpoint_dir"),
])
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
    none = "cellplm: {checkpoint: {source: none}}\n"
    out = snakemake(workdir, "-n", "--configfile", _config(workdir, "none.yaml", CELLPLM_RUN + none))
    assert out.returncode == 0, out.stderr
    assert not any(rule.startswith("cellplm_") for rule in job_counts(out.stdout))


def test_checkpoint_provenance_labels():
    from cellplm.bench.aggregate import checkpoint_label

    assert checkpoint_label({}, {"k": 5}) == ""
    assert checkpoint_label({"checkpoint": "random initialisation", "checkpoint_kind": "random initialisation",
                             "shape": "tiny"}, {"checkpoint": ""}) == "random initialisation (tiny shape)"
    here = {"checkpoint": "results/cellplm/pretrained/tiny_e4_seed0_ab/model", "checkpoint_kind": "pretrained here",
            "pretraining": {"shape": "tiny", "hyperparameters": {"epochs": 6}}}
    assert checkpoint_label(here, {}) == "pretrained here (tiny, 6 epochs)"
    released = {"checkpoint": "results/cellplm/checkpoints/released__20230926_85M/model", "checkpoint_kind": "released"}
    assert checkpoint_label(released, {}) == "released (20230926_85M)"
    missing = {"checkpoint": "resources/cellplm/20230926_85M", "checkpoint_kind": "released"}
    assert checkpoint_label({}, missing) == "released (20230926_85M)"


def test_bad_input_stops_with_one_line_and_no_output(workdir):
    a = make_counts_adata()
    a.write_h5ad(workdir / "mine.h5ad")
    cfg = _config(workdir, "mine.yaml", (
        "run: {datasets: [mine], methods: [true_labels]}\n"
        "datasets:\n  mine:\n    source: {kind: local, path: mine.h5ad}\n    label_key: celltype\n"))
    out = snakemake(workdir, "results/data/mine/dataset.h5ad", "--cores", "1", "--configfile", cfg)
    assert out.returncode != 0
    assert "ERROR: mine.h5ad: label column 'celltype' not in obs (columns: cell_type, batch)" in out.stderr
    assert not (workdir / "results/data/mine").exists() or not any((workdir / "results/data/mine").iterdir())


@pytest.mark.slow
def test_demo_end_to_end(workdir):
    out = snakemake(workdir, "--cores", "2", "--configfile", "config/demo.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    tables = workdir / "results" / "tables"
    summary = pd.read_csv(tables / "summary.tsv", sep="\t")
    bal = summary[summary["metric"] == "balanced_accuracy"].set_index(["dataset", "split", "method"])["mean"]
    assert (bal.xs("true_labels", level="method") == 1.0).all()
    n_types = {"pbmc68k": 9, "synthetic": 6}
    for (dataset, split), value in bal.xs("random_labels", level="method").items():
        assert abs(value - 1 / n_types[dataset]) < 0.15  # about chance
    assert bal[("pbmc68k", "published", "logistic_regression")] > 0.5
    runs = pd.read_csv(tables / "runs.tsv", sep="\t", keep_default_na=False)
    n_methods = len(yaml.safe_load((ROOT / "config/demo.yaml").read_text())["run"]["methods"])
    geneformer = runs["method"] == "geneformer"  # no model_dir in the demo: a not_applicable row per run
    assert geneformer.sum() == 3 * 2 and (runs.loc[geneformer, "status"] == "not_applicable").all()
    assert runs.loc[geneformer, "reason"].str.startswith("no Geneformer model directory configured").all()
    ok = runs[~geneformer]
    assert len(runs) == (1 + 2) * n_methods * 2 and (ok["status"] == "ok").all(), ok[ok["status"] != "ok"]
    # CellPLM rows: pretrained here (tiny shape, demo epochs), provenance in every table
    cellplm = runs[runs["method"].isin(["cellplm_finetune", "cellplm_zeroshot"])]
    assert len(cellplm) == 3 * 2 * 2
    assert (cellplm["checkpoint"] == "pretrained here (tiny, 4 epochs)").all()
    others = runs.loc[~runs.index.isin(cellplm.index)]
    assert not others["checkpoint"].str.contains("pretrained here").any()
    assert others.loc[others["method"] == "scgpt", "checkpoint"].str.startswith("random initialisation").all()
    for name in ("scores", "summary"):
        table = pd.read_csv(tables / f"{name}.tsv", sep="\t", keep_default_na=False)
        rows = table[table["method"].str.startswith("cellplm_")]
        assert set(rows["method"]) == {"cellplm_finetune", "cellplm_zeroshot"}
        assert (rows["checkpoint"] == "pretrained here (tiny, 4 epochs)").all()
    comparison = pd.read_csv(tables / "comparison.tsv", sep="\t", keep_default_na=False)
    assert (comparison.loc[comparison["method"] == "cellplm_finetune", "checkpoint"] == "pretrained here (tiny, 4 epochs)").all()
    pretrained = list((workdir / "results" / "cellplm" / "pretrained").glob("tiny_e4_seed0_*/loss.tsv"))
    assert len(pretrained) == 1 and len(pd.read_csv(pretrained[0], sep="\t")) > 4
    assert (workdir / "results" / "plots" / "cellplm_pretraining_loss.png").stat().st_size > 5000
    corpus = sorted(p.name for p in (workdir / "results" / "cellplm" / "corpus").glob("*.h5ad"))
    assert corpus == ["celltypist_sample.h5ad", "synthetic_spatial.h5ad", "train__pbmc68k.h5ad", "train__synthetic.h5ad"]
    assert {"fit_s", "predict_s", "peak_rss_mb", "device", "versions"} <= set(runs.columns)
    speed = pd.read_csv(tables / "speed.tsv", sep="\t")
    assert (speed.loc[speed["measure"] == "fit_wall", "job_wall_s"] > 0).all()
    emb = speed[speed["measure"] == "embedding_throughput"].set_index("method")
    assert emb.loc["cellplm", "status"] == "ok" and emb.loc["cellplm", "value"] > 0
    assert emb.loc["geneformer", "status"] == "not_applicable"
    md = (tables / "benchmark.md").read_text()
    assert "## Zero-shot embedding speed" in md
    assert "NOT the published protocol" in md and "Balanced accuracy (macro recall)" in md
    assert "## Checkpoints" in md
    assert "- CellPLM (fine-tuned) (`cellplm_finetune`): pretrained here (tiny, 4 epochs) (6 ok runs)." in md
    for png in ["score_heatmap", "published_comparison", "speed", "confusion/pbmc68k__published"]:
        assert (workdir / "results" / "plots" / f"{png}.png").stat().st_size > 5000
    report = snakemake(workdir, "--configfile", "config/demo.yaml", "--report", "results/report.html")
    assert report.returncode == 0, report.stderr[-2000:]
    assert (workdir / "results" / "report.html").stat().st_size > 100_000
    again = snakemake(workdir, "-n", "--configfile", "config/demo.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr

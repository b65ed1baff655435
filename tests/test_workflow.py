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


@pytest.fixture
def workdir(tmp_path):
    """A copy of the workflow, so runs never touch the checkout's results/."""
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, tmp_path / name)
    return tmp_path


def snakemake(workdir, *args, timeout=900):
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
    assert jobs["run_method"] + jobs["run_method_gpu"] == 6 * 7 * 3
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
    runs = pd.read_csv(tables / "runs.tsv", sep="\t")
    assert len(runs) == (1 + 2) * 7 * 2 and (runs["status"] == "ok").all()
    assert {"fit_s", "predict_s", "peak_rss_mb", "device", "versions"} <= set(runs.columns)
    speed = pd.read_csv(tables / "speed.tsv", sep="\t")
    assert (speed["job_wall_s"] > 0).all()
    md = (tables / "benchmark.md").read_text()
    assert "NOT the published protocol" in md and "Balanced accuracy (macro recall)" in md
    for png in ["score_heatmap", "published_comparison", "speed", "confusion/pbmc68k__published"]:
        assert (workdir / "results" / "plots" / f"{png}.png").stat().st_size > 5000
    report = snakemake(workdir, "--configfile", "config/demo.yaml", "--report", "results/report.html")
    assert report.returncode == 0, report.stderr[-2000:]
    assert (workdir / "results" / "report.html").stat().st_size > 100_000
    again = snakemake(workdir, "-n", "--configfile", "config/demo.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr

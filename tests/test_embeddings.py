"""Every embedding method through the harness on small data: the contract files, the run records, labels never
seen, not-applicable and failed runs as rows, the runner (also scGPT's, in its own environment)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cellplm.bench.data.sources import SyntheticCounts
from cellplm.bench.embeddings import EmbeddingUnavailable, embedding_ids, metadata, registry
from cellplm.bench.embeddings.base import Embedder, EmbeddingIds, run
from cellplm.bench.errors import NotApplicable
from cellplm.bench.io import read_h5ad
from cellplm.bench.report.aggregate import checkpoint_label
from conftest import ROOT, write_split_files

IDS = ["cellplm", "celltype_jittered", "geneformer", "pca", "pca_per_batch", "random_embedding", "scgpt", "scvi"]
CONTROLS = ["celltype_jittered", "pca_per_batch", "random_embedding"]  # tests/test_zeroshot_controls.py in depth
KEYS = {
    "label",
    "entry",
    "implementation",
    "env",
    "python",
    "gpu",
    "threads",
    "params",
    "test_params",
    "setup",
    "model",
    "cellplm_checkpoint",
}
RECORD = {
    "dataset",
    "split",
    "embedding",
    "seed",
    "param_set",
    "status",
    "reason",
    "embed_s",
    "cells_per_s",
    "n_cells",
    "n_dims",
    "device",
    "peak_rss_mb",
    "peak_gpu_mb",
    "n_genes_used",
    "params",
    "implementation",
    "versions",
    "extra",
    "host",
    "finished",
}
SCGPT_PYTHON = ROOT / ".venv-scgpt" / "bin" / "python"


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    """300 synthetic cells (6 types, 2 batches) over 200 genes of the CellPLM vocabulary, split 80/10/10."""
    a = SyntheticCounts(n_cells=300, n_genes=200, n_batches=2, seed=1).adata()
    a.uns["dataset_id"] = "toy"
    return write_split_files(a, tmp_path_factory.mktemp("split"))


@pytest.fixture(scope="module")
def geneformer_dir(split_files, tmp_path_factory):
    from geneformer_tiny import write_tiny_geneformer_for_symbols

    genes = read_h5ad(split_files["train"]).var_names
    return write_tiny_geneformer_for_symbols(tmp_path_factory.mktemp("gf") / "model", list(genes))


def _run(embedding, split_files, tmp_path, params=None, **kw):
    return run(
        embedding,
        EmbeddingIds("toy", "published", embedding if isinstance(embedding, str) else "x", 0, "test"),
        split_files["train"],
        split_files["test"],
        tmp_path / "embedding.h5ad",
        tmp_path / "run.json",
        params=params,
        log=lambda *a: None,
        **kw,
    )


def _outputs(tmp_path):
    return read_h5ad(tmp_path / "embedding.h5ad"), json.loads((tmp_path / "run.json").read_text())


def test_every_embedding_folder_is_in_the_registry():
    folders = sorted(p.parent.name for p in (ROOT / "cellplm/bench/embeddings").glob("*/embedding.yaml"))
    assert folders == embedding_ids() == sorted(registry()) == IDS
    for embedding in IDS:
        meta = metadata(embedding)
        assert set(meta) == KEYS | ({"control"} if embedding in CONTROLS else set()), embedding
        assert set(meta["test_params"]) <= set(meta["params"]), embedding  # test params override defaults only
        assert (ROOT / meta["env"]).is_file() and meta["model"] is None
    assert [e for e in IDS if metadata(e)["cellplm_checkpoint"]] == ["cellplm"]


def _params(embedding, checkpoint, geneformer_dir):
    params = dict(metadata(embedding)["params"], **metadata(embedding)["test_params"])
    if embedding == "cellplm":
        params["checkpoint"] = str(checkpoint)
    if embedding == "geneformer":
        params["model_dir"] = str(geneformer_dir)
    if embedding == "scvi":
        params["max_epochs"] = 2
    return params


@pytest.mark.parametrize("embedding", IDS)
def test_embedding_contract(embedding, split_files, tmp_path, tiny_checkpoint, geneformer_dir):
    cls = registry()[embedding]
    params = _params(embedding, tiny_checkpoint, geneformer_dir)
    record = _run(embedding, split_files, tmp_path, params, solution_path=split_files["solution"])
    out, rec = _outputs(tmp_path)
    train, test = read_h5ad(split_files["train"]), read_h5ad(split_files["test"])
    n = train.n_obs + test.n_obs
    assert set(rec) == RECORD and rec["n_cells"] == n and rec["param_set"] == "test" and rec["embedding"] == embedding
    assert list(out.obs_names) == list(train.obs_names) + list(test.obs_names) and out.shape == (n, 0)
    assert list(out.obs.columns) == ["batch", "set"]
    assert list(out.obs["set"].astype(str)) == ["train"] * train.n_obs + ["test"] * test.n_obs
    batches = np.concatenate([train.obs["batch"].astype(str), test.obs["batch"].astype(str)])
    assert (out.obs["batch"].astype(str).to_numpy() == batches).all()
    assert {k: out.uns[k] for k in ("dataset_id", "split_id", "embedding_id", "seed", "status")} == {
        "dataset_id": "toy",
        "split_id": "published",
        "embedding_id": embedding,
        "seed": 0,
        "status": rec["status"],
    }
    if isinstance(cls, EmbeddingUnavailable):  # scGPT needs its own env (see test_scgpt_runs_in_its_env)
        assert rec["status"] == "not_applicable" and "cannot import package" in rec["reason"]
        assert metadata(embedding)["setup"] in rec["reason"] and "X_emb" not in out.obsm and rec["n_dims"] is None
        return
    assert record.status == "ok", record.reason
    z = out.obsm["X_emb"]
    assert z.dtype == np.float32 and z.shape == (n, rec["n_dims"]) and np.isfinite(z).all() and z.std() > 0
    assert rec["embed_s"] > 0 and rec["cells_per_s"] == pytest.approx(n / rec["embed_s"])
    assert (
        rec["device"] == "cpu"
        and rec["peak_rss_mb"] > 0
        and rec["implementation"] == metadata(embedding)["implementation"]
    )
    assert rec["versions"]["python"] and rec["reason"] == ""
    no_genes = embedding in ("celltype_jittered", "random_embedding")  # noise, and the labels alone
    assert rec["n_genes_used"] == 0 if no_genes else rec["n_genes_used"] > 0
    extra, label = rec["extra"], checkpoint_label(rec["extra"], rec["params"])
    if embedding == "cellplm":
        assert extra["checkpoint_kind"] == "user-supplied" and label == f"user-supplied ({tiny_checkpoint})"
        assert extra["genes"]["n_matched"] == rec["n_genes_used"] == 200 and extra["n_sentences"] == 2  # one per batch
        assert extra["sentences"].startswith("one per obs['batch'] value (")
        assert extra["sentences"].endswith("; 2 sentences)")
    if embedding == "geneformer":
        assert extra["emb_mode"] == "cell" and extra["hidden_states_index"] == -2  # a V1 dictionary: no <cls>
        assert extra["checkpoint"] == str(geneformer_dir) and rec["n_dims"] == 16
    if embedding == "pca":
        assert rec["n_dims"] == 50 and extra["n_hvg"] == rec["n_genes_used"] == 200 and label == ""
    if embedding == "scvi":
        assert rec["n_dims"] == 30 and extra["epochs_run"] == 2 and extra["n_batches"] == 2 and label == ""
    if embedding == "random_embedding":
        assert rec["n_dims"] == 50 and label == ""
    if embedding == "celltype_jittered":  # the labels came from the train and solution files
        assert rec["n_dims"] == extra["n_cell_types"] == 6 and label == ""
    if embedding == "pca_per_batch":
        assert rec["n_dims"] == 50 and extra["n_comps_per_batch"] == {"batch_0": 50, "batch_1": 50}


def test_labels_never_reach_embed(split_files, tmp_path):
    seen = {}

    class Spy(Embedder):
        def embed(self, cells):
            seen.update(
                columns=list(cells.obs.columns),
                cells=list(cells.obs_names),
                genes=cells.n_vars,
                counts=float(cells.X.sum()),
            )
            return np.ones((cells.n_obs, 3))

    record = _run(Spy, split_files, tmp_path, solution_path=split_files["solution"])  # given, never read
    train, test = read_h5ad(split_files["train"]), read_h5ad(split_files["test"])
    assert "cell_type" in train.obs and "is_validation" in train.obs  # what the harness had to drop
    assert record.status == "ok" and seen["columns"] == ["batch"]
    assert seen["cells"] == list(train.obs_names) + list(test.obs_names) and seen["genes"] == train.n_vars
    assert seen["counts"] == pytest.approx(float(train.X.sum() + test.X.sum()))  # raw counts, all cells
    assert _outputs(tmp_path)[0].obsm["X_emb"].dtype == np.float32  # float64 returned, float32 written


@pytest.mark.parametrize(
    "embedding, reason",
    [
        ("cellplm", "needs a pretrained CellPLM checkpoint (none configured)"),
        ("geneformer", "needs a pretrained Geneformer model directory (none configured)"),
    ],
)
def test_no_weights_is_not_applicable(embedding, reason, split_files, tmp_path):
    record = _run(embedding, split_files, tmp_path, metadata(embedding)["params"])
    out, rec = _outputs(tmp_path)
    assert record.status == "not_applicable" and reason in record.reason
    assert rec["status"] == "not_applicable" and rec["embed_s"] is None and rec["n_dims"] is None
    assert out.uns["status"] == "not_applicable" and "X_emb" not in out.obsm and rec["extra"] == {}


class Broken(Embedder):
    def embed(self, cells):
        raise RuntimeError("out of memory")


class WrongShape(Embedder):
    def embed(self, cells):
        return np.zeros((cells.n_obs - 1, 4))


class NotFinite(Embedder):
    def embed(self, cells):
        return np.full((cells.n_obs, 4), np.nan)


class NotForThis(Embedder):
    def embed(self, cells):
        raise NotApplicable("only 3% of genes in the vocabulary")


@pytest.mark.parametrize(
    "cls, status, reason",
    [
        (Broken, "failed", "RuntimeError: out of memory"),
        (WrongShape, "failed", "RuntimeError: embed returned an array of shape"),
        (NotFinite, "failed", "RuntimeError: embed returned non-finite values for"),
        (NotForThis, "not_applicable", "only 3% of genes in the vocabulary"),
    ],
)
def test_failures_are_rows(cls, status, reason, split_files, tmp_path):
    record = _run(cls, split_files, tmp_path)
    out, rec = _outputs(tmp_path)
    assert record.status == status and record.reason.startswith(reason)
    assert rec["status"] == out.uns["status"] == status and "X_emb" not in out.obsm and out.n_obs == rec["n_cells"]


def test_unknown_param_fails_and_on_error_raise_raises(split_files, tmp_path):
    record = _run("pca", split_files, tmp_path, {"n_pcs": 10})
    assert record.status == "failed"
    assert "unknown PCA (unintegrated) parameter(s): n_pcs (known: n_comps, n_hvg)" in record.reason
    with pytest.raises(RuntimeError, match="out of memory"):
        _run(Broken, split_files, tmp_path, on_error="raise")


def test_pca_embedding_is_the_pca_of_the_log_hvgs():
    from cellplm.bench.embeddings.lognorm_pca import pca_embedding
    from cellplm.bench.normalise import log1p_cp10k

    a = SyntheticCounts(n_cells=80, n_genes=30, n_batches=1, seed=2).adata()
    z = pca_embedding(a, n_comps=5, n_hvg=100)  # fewer genes than n_hvg: all of them
    X = log1p_cp10k(a.X).toarray()
    u, s, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(z), np.abs(u[:, :5] * s[:5]), rtol=1e-3, atol=1e-3)  # up to sign
    assert np.array_equal(z, pca_embedding(a, n_comps=5, n_hvg=100))  # seeded: the same twice
    assert pca_embedding(a[:10], n_comps=50).shape == (10, 9)  # capped at one fewer than the cells


def _runner(*args, python=sys.executable, env=None):
    return subprocess.run(
        [str(python), "-m", "cellplm.bench.embeddings", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_runner_help_bad_params_and_a_run(split_files, tmp_path, capsys):
    from cellplm.bench.embeddings.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert f"Embedding methods: {', '.join(IDS)}" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["pca", "--help"])
    assert "pca: PCA (unintegrated). Implementation: scanpy pp.pca" in " ".join(capsys.readouterr().out.split())
    files = list(
        map(
            str,
            [
                "--train",
                split_files["train"],
                "--test",
                split_files["test"],
                "--embedding",
                tmp_path / "e.h5ad",
                "--record",
                tmp_path / "r.json",
            ],
        )
    )
    for bad in ("[1, 2]", "{not json"):
        assert main(["pca", *files, "--params", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ERROR: --params: not a JSON object") and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()
    out = _runner("pca", *files, "--dataset", "toy", "--seed", "3", "--params", '{"n_comps": 7}')
    assert out.returncode == 0 and "status: ok" in out.stdout, out.stdout + out.stderr
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["seed"] == 3 and rec["params"] == {"n_comps": 7} and rec["n_dims"] == 7
    assert read_h5ad(tmp_path / "e.h5ad").obsm["X_emb"].shape == (rec["n_cells"], 7)


def test_a_batch_job_gives_each_run_what_its_own_job_gives(split_files, tmp_path, tiny_checkpoint):
    """`python -m cellplm.bench.embeddings batch` (the workflow's embedding batch jobs) embeds with several methods in
    one process, a sentence-policy variant recorded under its own id: each embedding and record (but timings and
    memory) equal those of its own command, only the control that needs labels reads the solution, and a bad --runs
    is one line."""
    split = ["--train", split_files["train"], "--test", split_files["test"], "--dataset", "toy", "--seed", "2"]
    ckpt = {"checkpoint": str(tiny_checkpoint), "precision": "fp32"}
    members = [
        ("cellplm", "cellplm", ckpt),
        ("cellplm", "cellplm_random16", {**ckpt, "sentences": "random:16"}),
        ("pca", "pca", {"n_comps": 5}),
        ("celltype_jittered", "celltype_jittered", {}),
    ]
    runs = [
        {"embedding": e, "id": i, "params": p, "embedding_path": str(tmp_path / f"b_{i}.h5ad"),
         "record": str(tmp_path / f"b_{i}.json")}
        for e, i, p in members
    ]  # fmt: skip
    out = _runner("batch", *split, "--solution", split_files["solution"], "--runs", json.dumps(runs))
    assert out.returncode == 0, out.stderr
    volatile = {"embed_s", "cells_per_s", "peak_rss_mb", "peak_gpu_mb", "finished"}
    for e, i, p in members:
        own = tmp_path / f"own_{i}"
        args = ["--as", i] if i != e else []
        single = _runner(e, *split, "--solution", split_files["solution"], *args, "--params", json.dumps(p),
                         "--embedding", f"{own}.h5ad", "--record", f"{own}.json")  # fmt: skip
        assert single.returncode == 0, single.stderr
        batch_rec, own_rec = (json.loads(open(f).read()) for f in (tmp_path / f"b_{i}.json", f"{own}.json"))
        assert batch_rec["status"] == "ok" and batch_rec["embedding"] == i and batch_rec["seed"] == 2
        assert {k: v for k, v in batch_rec.items() if k not in volatile} == {
            k: v for k, v in own_rec.items() if k not in volatile
        }
        np.testing.assert_array_equal(
            read_h5ad(tmp_path / f"b_{i}.h5ad").obsm["X_emb"], read_h5ad(f"{own}.h5ad").obsm["X_emb"]
        )
    policy = json.loads((tmp_path / "b_cellplm_random16.json").read_text())["extra"]["sentence_policy"]
    assert policy["policy"] == "random:16" and policy["seed"] == 2
    bad = _runner("batch", *split, "--runs", '{"embedding": "pca"}')
    assert (
        bad.returncode == 2 and bad.stderr.strip() == "ERROR: --runs: not a JSON list of runs (not a list of objects)"
    )


def test_runner_unwritable_output_is_one_line(split_files, tmp_path, read_only):
    folder = tmp_path / "out"
    folder.mkdir()
    read_only(folder)
    out = _runner(
        "pca",
        "--train",
        split_files["train"],
        "--test",
        split_files["test"],
        "--embedding",
        folder / "e.h5ad",
        "--record",
        folder / "r.json",
    )
    assert out.returncode == 1 and out.stderr.startswith("ERROR:") and out.stderr.count("\n") == 1, out.stderr
    assert "not writable" in out.stderr and not list(folder.iterdir())


@pytest.mark.skipif(not SCGPT_PYTHON.exists(), reason=".venv-scgpt is missing: build it with `make scgpt-env`")
def test_scgpt_runs_in_its_env(split_files, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONSAFEPATH="1", PYTHONWARNINGS="ignore")
    params = dict(metadata("scgpt")["params"], **metadata("scgpt")["test_params"], device="cpu")
    out = _runner(
        "scgpt",
        "--train",
        split_files["train"],
        "--test",
        split_files["test"],
        "--embedding",
        tmp_path / "embedding.h5ad",
        "--record",
        tmp_path / "run.json",
        "--params",
        json.dumps(params),
        python=SCGPT_PYTHON,
        env=env,
    )
    assert out.returncode == 0 and "status: ok" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    emb, rec = _outputs(tmp_path)
    assert rec["versions"]["scgpt"] == "0.2.4" and rec["versions"]["torch"].startswith("2.3")
    assert rec["extra"]["checkpoint_kind"] == "random initialisation" and rec["extra"]["amp"] is False
    assert checkpoint_label(rec["extra"], rec["params"]) == "random initialisation (tiny shape)"
    assert rec["n_genes_used"] == 200 and rec["n_dims"] == 32  # the tiny shape's d_model
    z = emb.obsm["X_emb"]
    assert z.shape == (rec["n_cells"], 32) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)

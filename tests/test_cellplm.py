"""Our CellPLM package: embedding and fine-tuning APIs, the command line, offline gene matching, bad input."""

from __future__ import annotations

import json
import subprocess

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cellplm.bench.errors import InputError, NotApplicable
from cellplm.genes import gencode_symbol_to_id
from cellplm.bench.data.sources import synthetic
from cellplm.embed import embed
from cellplm.finetune import CellTypeAnnotator
from cellplm.model import config_for_shape, load_model
from cellplm.model.checkpoint import checkpoint_paths
from conftest import ROOT

VOCAB = config_for_shape("tiny").gene_list


@pytest.fixture
def tiny(tiny_checkpoint):
    return tiny_checkpoint


def vocab_data(n_cells=300, n_genes=400, seed=0, symbols=False, n_types=4, batches=2):
    """Synthetic counts over vocabulary genes (Ensembl ids, or their GENCODE symbols)."""
    if symbols:
        by_id = {v: k for k, v in gencode_symbol_to_id().items()}
        genes = [by_id[g] for g in VOCAB if g in by_id][:n_genes]
    else:
        genes = list(np.random.default_rng(seed).choice(VOCAB, n_genes, replace=False))
    a = synthetic(
        n_cells=n_cells,
        n_genes=n_genes,
        n_cell_types=n_types,
        n_batches=batches,
        seed=seed,
        marker_fold=6.0,
        markers_per_type=40,
        gene_symbols=genes,
    )
    a.obs["cell_type"] = a.obs["cell_type"].astype(str)
    return a


def test_embed_is_deterministic_and_scanpy_style(tiny, tmp_path):
    a = vocab_data()
    embed(a, tiny, progress=False, precision="fp32")
    first = a.obsm["X_cellplm"].copy()
    assert first.shape == (a.n_obs, 32) and np.isfinite(first).all()
    assert a.uns["cellplm"]["genes"]["n_matched"] == 400 and a.uns["cellplm"]["genes"]["gene_share"] == 1.0
    assert a.uns["cellplm"]["cluster_choice"].startswith("most probable")
    b = embed(a, tiny, progress=False, precision="fp32", copy=True)
    np.testing.assert_array_equal(b.obsm["X_cellplm"], first)
    # each batch is its own sentence: embedding a batch alone gives the same numbers
    one = a[a.obs["batch"] == a.obs["batch"].iloc[0]].copy()
    embed(one, tiny, progress=False, precision="fp32")
    np.testing.assert_allclose(
        one.obsm["X_cellplm"], first[(a.obs["batch"] == a.obs["batch"].iloc[0]).to_numpy()], atol=1e-5
    )
    # a backed file is read sentence by sentence and gives the same result
    path = tmp_path / "a.h5ad"
    a.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    from cellplm.embed import embed_cells, load_embedder

    result = embed_cells(backed, load_embedder(tiny)[0], progress=False, precision="fp32")
    np.testing.assert_allclose(result.embedding, first, atol=1e-5)


def test_bf16_embedding_is_close_to_fp32(tiny):
    a = vocab_data()
    a32 = embed(a, tiny, progress=False, precision="fp32", copy=True)
    a16 = embed(a, tiny, progress=False, precision="bf16", copy=True)
    assert a16.uns["cellplm"]["precision"] == "bf16"
    same = (a32.obs["cellplm_cluster"] == a16.obs["cellplm_cluster"]).to_numpy()
    assert same.mean() > 0.95  # a cell near a tie between two mixture components may switch
    e32, e16 = a32.obsm["X_cellplm"][same], a16.obsm["X_cellplm"][same]
    cos = (e32 * e16).sum(1) / np.linalg.norm(e32, axis=1) / np.linalg.norm(e16, axis=1)
    assert cos.min() > 0.999


def test_symbols_are_mapped_offline(tiny):
    a = vocab_data(symbols=True)
    embed(a, tiny, progress=False)
    genes = a.uns["cellplm"]["genes"]
    assert genes["n_matched"] == 400 and "GENCODE" in genes["id_source"]


def test_low_vocabulary_coverage_is_not_applicable(tiny):
    a = vocab_data()
    a.var_names = [f"NOTAGENE{i}" for i in range(a.n_vars)]
    with pytest.raises(NotApplicable, match="no genes in the CellPLM vocabulary"):
        embed(a, tiny, progress=False, min_gene_share=0.3)
    b = vocab_data()
    b.var_names = [g if i < 40 else f"NOTAGENE{i}" for i, g in enumerate(b.var_names)]
    with pytest.raises(NotApplicable, match="below the thresholds"):
        embed(b, tiny, progress=False, min_gene_share=0.3)


def test_normalised_values_are_refused(tiny):
    a = vocab_data()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray() / a.X.sum(1).A * 1e4))
    with pytest.raises(InputError, match="raw counts are required"):
        embed(a, tiny, progress=False)


def test_empty_input_is_refused(tiny):
    with pytest.raises(InputError, match="no cells"):
        embed(vocab_data()[:0].copy(), tiny, progress=False)
    with pytest.raises(ValueError, match="empty sentence"):
        from cellplm.model import Sentence

        model = load_model(tiny)[0]
        model.embed(Sentence.from_csr(sp.csr_matrix((0, 3)), np.arange(3), len(VOCAB)))


def test_checkpoint_errors(tiny, tmp_path):
    config_path, weights_path = checkpoint_paths(tiny)
    # corrupt (truncated) weights
    bad = tmp_path / "bad"
    (tmp_path / "bad.config.json").write_text(config_path.read_text())
    (tmp_path / "bad.best.ckpt").write_bytes(weights_path.read_bytes()[:5000])
    with pytest.raises(InputError, match="bad.best.ckpt: not a readable PyTorch checkpoint, truncated or corrupt"):
        load_model(bad)
    # config and weights disagree: vocabulary size
    cfg = json.loads(config_path.read_text())
    cfg["gene_list"] = cfg["gene_list"][:100]
    (tmp_path / "vocab.config.json").write_text(json.dumps(cfg))
    (tmp_path / "vocab.best.ckpt").write_bytes(weights_path.read_bytes())
    with pytest.raises(InputError, match="gene_list has 100 genes: config and weights disagree"):
        load_model(tmp_path / "vocab")
    # config and weights disagree: width
    cfg = json.loads(config_path.read_text())
    cfg["enc_hid"] = 128
    (tmp_path / "wide.config.json").write_text(json.dumps(cfg))
    (tmp_path / "wide.best.ckpt").write_bytes(weights_path.read_bytes())
    with pytest.raises(InputError, match="do not fit the architecture"):
        load_model(tmp_path / "wide")
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "absent")
    # an architecture this package does not implement
    cfg = json.loads(config_path.read_text())
    cfg["enc_mod"] = "performer"
    (tmp_path / "perf.config.json").write_text(json.dumps(cfg))
    (tmp_path / "perf.best.ckpt").write_bytes(weights_path.read_bytes())
    with pytest.raises(InputError, match="enc_mod='performer'"):
        load_model(tmp_path / "perf")


def test_finetune_learns_and_saves(tmp_path):
    a = vocab_data(n_cells=400)
    rng = np.random.default_rng(0)
    order = rng.permutation(a.n_obs)
    train, test = a[order[:300]].copy(), a[order[300:]].copy()
    train.obs["is_validation"] = np.arange(train.n_obs) < 30
    truth = test.obs["cell_type"].to_numpy()
    test.obs = test.obs[["batch"]]
    accuracy = {}
    for transductive in (True, False):
        model = CellTypeAnnotator(
            shape="tiny",
            max_epochs=40,
            warmup_epochs=5,
            transductive=transductive,
            progress=False,
            precision="fp32",
            lr=5e-3,
        )
        model.fit(train, unlabelled=test)
        pred = model.predict(test, key_added="cellplm_prediction")
        assert (test.obs["cellplm_prediction"].astype(str).to_numpy() == pred).all()
        accuracy[transductive] = np.mean(pred == truth)
        assert model.info_["setting"] == ("transductive" if transductive else "inductive")
        assert model.info_["checkpoint"]["kind"] == "random initialisation"
        assert len(model.history_) == 40 and "valid_macro_f1" in model.history_[0]
    assert min(accuracy.values()) > 0.7, accuracy
    model.save(tmp_path / "ft")
    reloaded, report = load_model(tmp_path / "ft", task="annotation")
    assert report.ok and reloaded.config.n_genes == model.info_["n_genes_used"]


def test_finetune_from_checkpoint_reports_load(tiny):
    a = vocab_data(n_cells=200)
    a.obs["is_validation"] = np.arange(a.n_obs) % 10 == 0
    model = CellTypeAnnotator(tiny, max_epochs=2, progress=False).fit(a)
    assert "4 new" in model.info_["checkpoint"]["load_report"]


def _cli(*args):
    return subprocess.run([str(ROOT / ".venv/bin/cellplm"), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_cli(tiny, tmp_path):
    for sub in ("embed", "finetune", "pretrain", "inspect"):
        assert _cli(sub, "--help").returncode == 0
    a = vocab_data(n_cells=120)
    a.write_h5ad(tmp_path / "a.h5ad")
    r = _cli("embed", tmp_path / "a.h5ad", "--checkpoint", tiny, "--out", tmp_path / "emb.h5ad", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert ad.read_h5ad(tmp_path / "emb.h5ad").obsm["X_cellplm"].shape == (120, 32)
    r = _cli("inspect", tiny, "--task", "annotation")
    assert r.returncode == 0 and "4 new" in r.stdout
    train, test = a[:90].copy(), a[90:].copy()
    train.write_h5ad(tmp_path / "train.h5ad")
    test.write_h5ad(tmp_path / "test.h5ad")
    r = _cli(
        "finetune",
        tmp_path / "train.h5ad",
        "--test",
        tmp_path / "test.h5ad",
        "--checkpoint",
        tiny,
        "--out",
        tmp_path / "pred.h5ad",
        "--max-epochs",
        "3",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    assert ad.read_h5ad(tmp_path / "pred.h5ad").obs["label_pred"].notna().all()
    # errors: one line naming the file; not applicable exits 3
    (tmp_path / "junk.best.ckpt").write_bytes(b"not a checkpoint")
    (tmp_path / "junk.config.json").write_text(checkpoint_paths(tiny)[0].read_text())
    r = _cli("embed", tmp_path / "a.h5ad", "--checkpoint", tmp_path / "junk", "--out", tmp_path / "x.h5ad")
    assert r.returncode == 1 and "junk.best.ckpt: not a PyTorch checkpoint" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.h5ad").exists()
    b = a.copy()
    b.var_names = [f"NOTAGENE{i}" for i in range(b.n_vars)]
    b.write_h5ad(tmp_path / "b.h5ad")
    r = _cli("embed", tmp_path / "b.h5ad", "--checkpoint", tiny, "--out", tmp_path / "y.h5ad")
    assert r.returncode == 3 and "not applicable" in r.stderr


def test_spatial_encoding_switch():
    import torch

    from cellplm.model import CellPLM, Sentence
    from cellplm.model.embedder import PE_GRID

    torch.manual_seed(0)
    model = CellPLM(config_for_shape("tiny", spatial_pe=True).for_embedding()).eval()
    pe = model.embedder.pe_enc
    table = pe.pe_enc.weight
    half = table.shape[1] // 2
    # row x*100+y: the first half encodes x only, the second half y only
    assert torch.equal(table[3 * PE_GRID + 5, :half], table[3 * PE_GRID + 7, :half])
    assert torch.equal(table[3 * PE_GRID + 5, half:], table[9 * PE_GRID + 5, half:])
    X = sp.random(20, 50, density=0.3, format="csr", random_state=0)
    X.data = np.ceil(X.data * 5)
    coords = torch.rand(20, 2)
    plain = Sentence.from_csr(X, np.arange(50), len(VOCAB))
    placed = Sentence.from_csr(X, np.arange(50), len(VOCAB), coords=coords)
    missing = Sentence.from_csr(X, np.arange(50), len(VOCAB), coords=-torch.ones(20, 2))
    assert torch.equal(pe(None, 20), pe(missing.coords, 20))  # no coordinates: the learned missing vector
    assert not torch.allclose(model.embed(placed).z, model.embed(plain).z)
    model.embedder.spatial_pe = False  # off (the released behaviour): coordinates are ignored
    assert torch.equal(model.embed(placed).z, model.embed(plain).z)


def test_gene_totals_can_estimate_on_spread_blocks():
    from cellplm.data import gene_totals

    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(1.0, size=(1000, 7)).astype(np.float32))
    adata = ad.AnnData(X)
    assert np.allclose(gene_totals(adata, chunk=64), np.asarray(X.sum(0)).ravel())
    assert np.allclose(gene_totals(adata, max_cells=5000), np.asarray(X.sum(0)).ravel())  # fewer cells: full pass
    sampled = gene_totals(adata, max_cells=100)  # 20 blocks of 5 rows, first at 0, last ending at row 1000
    starts = np.linspace(0, 995, 20).astype(int)
    rows = np.concatenate([np.arange(s, s + 5) for s in starts])
    assert np.allclose(sampled, np.asarray(X[rows].sum(0)).ravel())

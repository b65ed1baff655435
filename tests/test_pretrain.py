"""Pretraining: loss goes down, resume is bit-identical, checkpoints load, bad input is refused, DDP agrees."""

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cellplm.bench.errors import ConfigError, InputError
from cellplm.model import config_for_shape, load_model, read_checkpoint, released_config
from cellplm.model.sentence import Sentence
from cellplm.pretrain import CorpusItem, PretrainConfig, balanced_partition, pretrain

ROOT = Path(__file__).resolve().parents[1]
VOCAB = released_config().gene_list


def corpus_adata(n_sentences=4, cells=(30, 50), n_genes=150, n_types=3, seed=0, offset=0, spatial=False) -> ad.AnnData:
    """Sentences of cell types with distinct gene programs (learnable), raw counts as CSR, Ensembl var_names."""
    rng = np.random.default_rng(seed)
    genes = VOCAB[offset : offset + n_genes]
    programs = rng.gamma(0.5, 2.0, size=(n_types, n_genes)) * (rng.random((n_types, n_genes)) < 0.3)
    sizes = rng.integers(cells[0], cells[1] + 1, size=n_sentences)
    types = np.concatenate([rng.integers(0, n_types, size=k) for k in sizes])
    X = rng.poisson(programs[types] * 4 + 0.05).astype(np.float32)
    obs = pd.DataFrame(
        {"batch": np.repeat([f"s{k}" for k in range(n_sentences)], sizes), "cell_type": [f"t{t}" for t in types]},
        index=[f"c{i}" for i in range(len(types))],
    )
    a = ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=genes))
    if spatial:
        a.obsm["spatial"] = rng.uniform(0, 500, size=(a.n_obs, 2))
    return a


def tiny(**kw):
    return config_for_shape("tiny", **kw)


def fast(**kw) -> PretrainConfig:
    base = dict(
        epochs=2, lr=1e-3, warmup_steps=2, seed=3, device="cpu", precision="fp32", val_sentences=1, checkpoint_every=2
    )
    return PretrainConfig(**{**base, **kw})


def rows(path):
    return pd.read_csv(path, sep="\t")


# ---- training and checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    corpus = [("lung", corpus_adata(4, seed=1)), ("blood", corpus_adata(2, seed=2, offset=100))]
    result = pretrain(corpus, out, fast(epochs=5, val_sentences=2, checkpoint_every=100), tiny(), progress=False)
    return out, result


def test_loss_decreases(trained):
    out, result = trained
    log = rows(out / "loss.tsv")
    train, val = log[log.split == "train"], log[log.split == "val"]
    assert len(val) == 5 and list(val.epoch) == list(range(5))
    assert len(train) == 5 * 4 and list(train.step) == list(range(1, 21))
    per_epoch = train.groupby("epoch").loss.mean()
    assert per_epoch.iloc[-1] < 0.9 * per_epoch.iloc[0] and per_epoch.is_monotonic_decreasing
    assert val.loss.iloc[-1] < val.loss.iloc[0]
    assert result.summary["finished"] and result.summary["selection"] == "validation loss"
    assert result.summary["best_loss"] == pytest.approx(val.loss.min())
    assert set(log.columns) >= {
        "step",
        "epoch",
        "loss",
        "latent_loss",
        "reconstruction_loss",
        "lr",
        "n_cells",
        "seconds",
    }


def test_checkpoint_loads_and_carries_metadata(trained):
    out, result = trained
    assert result.checkpoint == out / "model"
    blob = torch.load(out / "model.best.ckpt", weights_only=True)  # plain data only: loads without unpickling code
    meta = blob["pretraining"]
    assert meta["pretrained_here"] and meta["shape"] == "tiny" and not meta["resumed"]
    assert [c["name"] for c in meta["corpus"]] == ["lung", "blood"]
    assert meta["corpus"][0]["n_cells"] > 0 and meta["seed"] == 3 and meta["precision"] == "fp32"
    assert meta["hyperparameters"]["lr"] == 1e-3 and "torch" in meta["versions"]
    last = torch.load(out / "last.best.ckpt", weights_only=True)
    assert {"optimizer_state_dict", "scheduler_state_dict", "epoch", "step", "best_loss"} <= set(last)
    assert last["step"] == 20 and last["pretraining"]["n_sentences"] == 6

    emb, report = load_model(out / "model", task="embedder")
    assert report.ok and emb.config.batch_num == 6 and emb.config.dataset_num == 2
    assert emb.config.extra["lr"] == 1e-3 and emb.config.extra["val_num"] == 2
    a = corpus_adata(1, seed=9)
    idx = np.array([VOCAB.index(g) for g in a.var_names])
    z = emb.eval().embed(Sentence.from_csr(a.X, idx, len(VOCAB))).z
    assert z.shape == (a.n_obs, emb.config.post_latent_dim) and torch.isfinite(z).all()
    ann, report = load_model(out / "model", task="annotation", n_classes=3)
    assert report.ok and ann.eval().logits(Sentence.from_csr(a.X, idx, len(VOCAB))).shape == (a.n_obs, 3)


# ---- resume ---------------------------------------------------------------------------------------------------


def test_resume_is_bit_identical(tmp_path):
    corpus = [("a", corpus_adata(3, seed=4, cells=(20, 40))), ("b", corpus_adata(2, seed=5, cells=(20, 40)))]
    # 5 sentences, 1 validation: 4 steps per epoch, 2 epochs; sentences over 30 cells are subsampled
    cfg = fast(epochs=2, checkpoint_every=3, max_cells_per_sentence=30)
    pretrain(corpus, tmp_path / "straight", cfg, tiny(), progress=False)
    stopped = pretrain(
        corpus, tmp_path / "resumed", PretrainConfig(**{**cfg.__dict__, "max_steps": 5}), tiny(), progress=False
    )
    assert stopped.summary["stopped_early"] and stopped.summary["steps"] == 5
    assert read_checkpoint(tmp_path / "resumed" / "last.best.ckpt")["step"] == 5
    # an interrupted run appended a row past its last checkpoint: the resumed log must not duplicate it
    with open(tmp_path / "resumed" / "loss.tsv", "a") as fh:
        fh.write("6\t1\ttrain\t1.0\t1.0\t1.0\t0.001\t30\t0.1\n")
    with pytest.raises(ConfigError, match="already holds"):
        pretrain(corpus, tmp_path / "resumed", cfg, tiny(), progress=False)
    with pytest.raises(ConfigError, match="lr"):
        pretrain(
            corpus,
            tmp_path / "resumed",
            PretrainConfig(**{**cfg.__dict__, "lr": 5e-4}),
            tiny(),
            resume=True,
            progress=False,
        )
    with pytest.raises(ConfigError, match="enc_layers"):
        pretrain(corpus, tmp_path / "resumed", cfg, tiny(enc_layers=1), resume=True, progress=False)
    result = pretrain(corpus, tmp_path / "resumed", cfg, tiny(), resume=True, progress=False)
    assert result.summary["resumed"] and result.summary["finished"]

    for name in ("last.best.ckpt", "model.best.ckpt"):
        a, b = read_checkpoint(tmp_path / "straight" / name), read_checkpoint(tmp_path / "resumed" / name)
        assert a["model_state_dict"].keys() == b["model_state_dict"].keys()
        for k, v in a["model_state_dict"].items():
            assert torch.equal(v, b["model_state_dict"][k]), k
        assert a["step"] == b["step"] and a["best_loss"] == b["best_loss"]
    a, b = (
        read_checkpoint(tmp_path / "straight" / "last.best.ckpt"),
        read_checkpoint(tmp_path / "resumed" / "last.best.ckpt"),
    )
    for k, state in a["optimizer_state_dict"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer_state_dict"]["state"][k]["exp_avg_sq"])
    assert b["pretraining"]["resumed"] and b["pretraining"]["resumed_at_step"] == 5
    straight, resumed = rows(tmp_path / "straight" / "loss.tsv"), rows(tmp_path / "resumed" / "loss.tsv")
    pd.testing.assert_frame_equal(straight.drop(columns="seconds"), resumed.drop(columns="seconds"))
    assert len(straight) == 2 * 4 + 2


# ---- input checks ---------------------------------------------------------------------------------------------


def test_normalised_values_name_the_file(tmp_path):
    a = corpus_adata(2)
    a.X = sp.csr_matrix(np.log1p(a.X.toarray() / 3.0))
    path = tmp_path / "normed.h5ad"
    a.write_h5ad(path)
    with pytest.raises(InputError, match="normed.h5ad.*raw counts"):
        pretrain([path], tmp_path / "out", fast(), tiny(), progress=False)


def test_no_vocabulary_genes(tmp_path):
    a = corpus_adata(2)
    a.var_names = [f"ENSG9{i:010d}" for i in range(a.n_vars)]  # Ensembl-like ids outside the vocabulary
    with pytest.raises(InputError, match="weird.*no genes in the CellPLM vocabulary"):
        pretrain([("weird", a)], tmp_path / "out", fast(), tiny(), progress=False)


def test_empty_sentence_names_the_item(tmp_path):
    a = corpus_adata(3)
    X = a.X.tolil()
    X[np.flatnonzero(a.obs.batch == "s1")] = 0
    a.X = sp.csr_matrix(X)
    with pytest.raises(InputError, match="sparse_item.*s1.*empty"):
        pretrain([("ok", corpus_adata(2)), ("sparse_item", a)], tmp_path / "out", fast(), tiny(), progress=False)


# ---- spatial --------------------------------------------------------------------------------------------------


def test_spatial_item_with_spatial_pe(tmp_path, caplog):
    # 3 sentences cannot spare 10 for validation: the epoch's training loss picks the best checkpoint
    corpus = [CorpusItem("fov", corpus_adata(2, seed=6, spatial=True)), CorpusItem("rna", corpus_adata(1, seed=7))]
    result = pretrain(
        corpus,
        tmp_path / "sp",
        fast(epochs=1, spatial_key="spatial", val_sentences=10),
        tiny(spatial_pe=True),
        progress=False,
    )
    assert result.summary["selection"] == "training loss" and result.summary["steps"] == 3
    assert "no held-out validation" in caplog.text
    meta = read_checkpoint(result.checkpoint.with_name("model.best.ckpt"))["pretraining"]
    assert [c["spatial"] for c in meta["corpus"]] == [True, False]
    model, report = load_model(result.checkpoint, task="embedder")
    assert report.ok and model.config.spatial_pe


# ---- distributed ----------------------------------------------------------------------------------------------


def test_balanced_partition():
    sizes = [100, 90, 10, 10, 5]
    parts = balanced_partition(sizes, [4, 2, 0, 3, 1], 2)
    assert [len(p) for p in parts] == [3, 3]
    assert set(parts[0]) | set(parts[1]) == set(range(5))
    assert abs(sum(sizes[j] for j in set(parts[0])) - sum(sizes[j] for j in set(parts[1]))) <= 100


def test_ddp_two_cpu_processes(tmp_path):
    corpus_adata(3, seed=11).write_h5ad(tmp_path / "a.h5ad")
    corpus_adata(3, seed=12, offset=50).write_h5ad(tmp_path / "b.h5ad")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {
        **os.environ,
        "CELLPLM_PRETRAIN_DIGEST_DIR": str(tmp_path / "digest"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    # 6 sentences, 1 validation: 5 training sentences over 2 ranks = 3 steps each (one rank repeats one)
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "cellplm.pretrain",
        str(tmp_path / "a.h5ad"),
        str(tmp_path / "b.h5ad"),
        "--out",
        str(tmp_path / "ddp"),
        "--shape",
        "tiny",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "2",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--val-sentences",
        "1",
        "--backed",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "model.best.ckpt").exists() and (tmp_path / "ddp" / "model.config.json").exists()
    digests = [(tmp_path / "digest" / f"rank{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    last = read_checkpoint(tmp_path / "ddp" / "last.best.ckpt")
    assert last["step"] == 6 and last["pretraining"]["world_size"] == 2
    log = rows(tmp_path / "ddp" / "loss.tsv")
    assert list(log[log.split == "train"].step) == list(range(1, 7)) and (log.split == "val").sum() == 2

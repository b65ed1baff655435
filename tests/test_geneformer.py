"""Geneformer: rank-value tokenisation by hand, model-directory handling, not-applicable rows, fine-tuning end to
end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from cellplm.bench.report.aggregate import checkpoint_label
from cellplm.bench.errors import ConfigError, InputError
from cellplm.bench.io import write_h5ad
from cellplm.bench.methods.base import RunIds, run
from cellplm.bench.models.geneformer.files import find_model_files
from cellplm.bench.methods.geneformer.method import (
    Geneformer,
    best_epoch,
    linear_schedule,
    rare_types,
    training_batches,
)
from cellplm.bench.models.geneformer.tokenizer import RankValueTokenizer, anndata_ensembl_ids
from cellplm.bench.data.split import SplitSpec, make_split
from cellplm.checksum import sha256_file
from conftest import ROOT, make_counts_adata
from geneformer_tiny import write_tiny_geneformer

pytest.importorskip("transformers")

A, B, C, D, U = "ENSG00000000001", "ENSG00000000002", "ENSG00000000003", "ENSG00000000004", "ENSG00000000099"
MEDIANS = {A: 1.0, B: 2.0, C: 0.5, D: 4.0}
RUNNER = ["-m", "cellplm.bench.methods", "geneformer"]
# GENCODE v44 ids of the test symbols (conftest.SYMBOLS), as the offline mapping gives them
ENSEMBL = [
    "ENSG00000198851",
    "ENSG00000010610",
    "ENSG00000153563",
    "ENSG00000156738",
    "ENSG00000170458",
    "ENSG00000090382",
    "ENSG00000105374",
    "ENSG00000115523",
    "ENSG00000163736",
    "ENSG00000203747",
    "ENSG00000168685",
    "ENSG00000126353",
]


def tokenizer(special=False, **kw):
    names = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if special else []) + [A, B, C, D, "ENSG00000000005"]
    tokens = {n: i for i, n in enumerate(names)}  # ENSG...05 has a token but no median: never a token
    return RankValueTokenizer(tokens, MEDIANS, special_tokens="auto", **kw), tokens


def test_rank_value_encoding_by_hand():
    tk, t = tokenizer(max_input_size=10)
    ids = [A, B, U, C, D]
    X = sp.csr_matrix(
        np.array(
            [
                [3, 4, 50, 0, 6],  # /total*1e4 then /median: A 3, B 2, D 1.5 (x 1e4/63); raw order would be D, B, A
                [2, 4, 0, 0, 4],  # A 2/1 = B 4/2 (tie: input order), D 1
                [0, 0, 9, 1, 0],  # C only (the unknown gene U is no token but counts in the total)
                [0, 0, 7, 0, 0],  # no dictionary gene: empty sequence
            ],
            dtype=np.float32,
        )
    )
    mapping = tk.map_genes(ids, "test", counts=X)
    assert mapping.coverage.n_matched == 4 and mapping.coverage.gene_share == 0.8
    assert mapping.coverage.count_share == pytest.approx(1 - 66 / 90)
    seqs = tk.tokenize(X, mapping)
    assert [s.tolist() for s in seqs] == [[t[A], t[B], t[D]], [t[A], t[B], t[D]], [t[C]], []]
    assert tk.special_tokens is False and tk.pad_token == 0


def test_median_division_changes_the_rank():
    tk, t = tokenizer()
    # same counts for C and A: C's smaller median ranks it first; D's large median ranks it last despite 2x counts
    X = sp.csr_matrix(np.array([[5, 0, 5, 10]], dtype=np.float64))
    assert tk.tokenize(X, tk.map_genes([A, B, C, D]))[0].tolist() == [t[C], t[A], t[D]]


def test_truncation_special_tokens_and_duplicate_ids():
    tk, t = tokenizer(special=True, max_input_size=4)
    assert tk.special_tokens and tk.max_genes == 2
    X = np.array([[1, 8, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=np.float32)
    # the two C columns are summed (2 / 0.5 = 4) before ranking: C 4, B 4 (tie -> first column of each), A 1, D .25
    seqs = tk.tokenize(X, tk.map_genes([C, B, A, D, C]))
    assert seqs[0].tolist() == [t["<cls>"], t[C], t[B], t["<eos>"]]
    assert seqs[1].size == 0 and tk.n_truncated == 1
    no_special = RankValueTokenizer(t, MEDIANS, max_input_size=2, special_tokens=False)
    assert no_special.tokenize(X, no_special.map_genes([C, B, A, D, C]))[0].tolist() == [t[C], t[B]]
    with pytest.raises(ConfigError, match="no <cls> and <eos>"):
        RankValueTokenizer({"<pad>": 0, A: 1}, MEDIANS, special_tokens=True)


def test_symbols_are_mapped_to_ensembl_offline():
    ids, source = anndata_ensembl_ids(make_counts_adata(n_cells=4))
    assert list(ids) == ENSEMBL and "GENCODE" in source


def test_schedule_and_batches():
    f = linear_schedule(4, 12)
    assert [f(s) for s in (0, 2, 4, 8, 12, 13)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    lengths = np.arange(100) % 7
    batches = training_batches(lengths, 12, np.random.default_rng(0), group_by_length=True)
    assert sorted(np.concatenate(batches).tolist()) == list(range(100)) and max(map(len, batches)) == 12


def test_rare_types_as_the_example_drops_them():
    """Geneformer's example keeps a type with more than 0.005 x the cells: 5 of 1,000 is dropped, 6 kept."""
    labels = ["A"] * 600 + ["B"] * 389 + ["C"] * 5 + ["D"] * 6
    assert rare_types(labels, 0.005) == {"C": 5}
    assert rare_types(labels, 0.006) == {"C": 5, "D": 6} and rare_types(labels, 0.0) == {}


def test_best_model_rule_on_a_recorded_history():
    history = [
        {"epoch": 1, "train_loss": 1.2},  # not validated
        {"epoch": 2, "valid_loss": 0.9, "valid_macro_f1": 0.50},
        {"epoch": 3, "valid_loss": 0.6, "valid_macro_f1": 0.70},
        {"epoch": 4, "valid_loss": 0.7, "valid_macro_f1": 0.80},
        {"epoch": 5, "valid_loss": 0.6, "valid_macro_f1": 0.80},
    ]
    assert best_epoch(history, "eval_loss") == 3 and best_epoch(history, "macro_f1") == 4  # the first of equals
    assert best_epoch(history[:1], "eval_loss") is None
    with pytest.raises(ValueError, match="best_model must be one of eval_loss, macro_f1, not 'accuracy'"):
        best_epoch(history, "accuracy")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_geneformer(tmp_path_factory.mktemp("gf") / "gf-tiny", ENSEMBL)


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    a = make_counts_adata(n_cells=120, n_types=3, batches=2)
    parts = make_split(a, SplitSpec("published"), {"train": 0.8, "valid": 0.1, "test": 0.1})
    for name, part in parts.items():
        write_h5ad(part, folder / f"{name}.h5ad")
    return {name: folder / f"{name}.h5ad" for name in parts}


def _run(split_files, tmp_path, params):
    return run(
        Geneformer,
        RunIds("toy", "published", "geneformer", 0),
        split_files["train"],
        split_files["test"],
        tmp_path / "prediction.h5ad",
        tmp_path / "run.json",
        params=params,
        log=lambda *a: None,
    )


def test_model_files_and_their_errors(model_dir, tmp_path):
    files = find_model_files(model_dir)
    assert files.weights.name == "model.safetensors" and files.token_dictionary.name == "token_dictionary.pkl"
    with pytest.raises(InputError, match="nope: Geneformer model directory does not exist"):
        find_model_files(tmp_path / "nope")
    both = write_tiny_geneformer(tmp_path / "both", ENSEMBL[:3], suffix="_gc104M")
    write_tiny_geneformer(both, ENSEMBL[:3], suffix="_gc30M")
    with pytest.raises(InputError, match="several Geneformer dictionary pairs"):
        find_model_files(both)
    chosen = find_model_files(both, "token_dictionary_gc30M.pkl", "gene_median_dictionary_gc30M.pkl")
    assert chosen.gene_median_dictionary == both / "gene_median_dictionary_gc30M.pkl"
    (both / "token_dictionary_gc30M.pkl").unlink()
    (both / "token_dictionary_gc104M.pkl").unlink()
    with pytest.raises(InputError, match="no Geneformer token and gene median dictionaries"):
        find_model_files(both)


def test_no_model_dir_is_not_applicable_without_transformers(split_files, tmp_path):
    code = (
        "import sys; from pathlib import Path; from cellplm.bench.methods.base import RunIds, run; "
        "from cellplm.bench.methods.geneformer.method import Geneformer; "
        f"r = run(Geneformer, RunIds('toy', 'published', 'geneformer', 0), {str(split_files['train'])!r}, "
        f"{str(split_files['test'])!r}, Path({str(tmp_path)!r}) / 'p.h5ad', Path({str(tmp_path)!r}) / 'r.json', "
        "params={'model_dir': None}, log=lambda *a: None); "
        "print(r.status, 'transformers' in sys.modules, 'torch' in sys.modules); print(r.reason)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    status, reason = out.stdout.strip().splitlines()
    assert status == "not_applicable False False"
    assert reason.startswith("no Geneformer model directory configured (methods.geneformer.params.model_dir)")


def test_no_dictionary_gene_is_not_applicable(split_files, tmp_path):
    other = write_tiny_geneformer(tmp_path / "other", [A, B])
    record = _run(split_files, tmp_path, {"model_dir": str(other)})
    assert record.status == "not_applicable"
    assert record.reason == (
        "training data: no genes in the Geneformer token dictionary (12 genes; ids from gene "
        "symbols mapped with GENCODE v44 (CellTypist's table))"
    )
    assert record.extra["checkpoint"] == str(other)  # provenance kept on a row that did not run
    low = write_tiny_geneformer(tmp_path / "low", ENSEMBL[:2])
    record = _run(split_files, tmp_path, {"model_dir": str(low)})
    assert record.status == "not_applicable" and "below the thresholds" in record.reason


def test_bad_model_directory_fails_with_one_line(split_files, model_dir, tmp_path):
    record = _run(split_files, tmp_path, {"model_dir": str(model_dir), "max_input_size": 4096})
    assert record.status == "failed"
    assert record.reason.startswith("ConfigError: max_input_size 4096 exceeds the model's max_position_embeddings 2048")
    record = _run(split_files, tmp_path, {"model_dir": str(model_dir), "best_model": "accuracy"})
    assert record.status == "failed" and record.reason.startswith("ValueError: best_model must be one of")
    wrong = write_tiny_geneformer(tmp_path / "wrong", ENSEMBL)
    cfg = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    record = _run(split_files, tmp_path, {"model_dir": str(wrong)})
    assert record.status == "failed" and "model.safetensors: the weights do not fit the BERT encoder" in record.reason


def test_pretrained_weights_are_loaded_and_frozen_layers_stay(split_files, model_dir):
    from safetensors.torch import load_file

    from cellplm.bench.io import read_h5ad

    saved = load_file(str(model_dir / "model.safetensors"))
    train = read_h5ad(split_files["train"])
    gf = Geneformer(
        seed=0, model_dir=str(model_dir), epochs=1, warmup_steps=1, freeze_layers=2, device="cpu", precision="fp32"
    ).fit(train)
    state = gf.model_.state_dict()
    encoder = [k for k in saved if k.startswith("bert.encoder.")]
    assert len(encoder) == 32 and all(np.array_equal(state[k], saved[k]) for k in encoder)  # loaded, then frozen
    emb = "bert.embeddings.word_embeddings.weight"
    assert not np.array_equal(state[emb], saved[emb])  # the embeddings were trained
    assert set(gf.extra["loading"]["newly_initialised"]) == {
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    }


def test_rare_type_cells_are_not_trained_on(split_files, model_dir):
    from cellplm.bench.io import read_h5ad

    train = read_h5ad(split_files["train"])
    labels = train.obs["cell_type"].astype(str).to_numpy()
    labels[:3] = "rare"  # 3 of the training cells, under 5%
    train.obs["cell_type"] = labels
    gf = Geneformer(
        seed=0,
        model_dir=str(model_dir),
        epochs=1,
        warmup_steps=1,
        device="cpu",
        precision="fp32",
        rare_type_fraction=0.05,
    ).fit(train)
    assert gf.extra["rare_types_dropped"] == {"rare": 3} and list(gf.classes_) == ["type0", "type1", "type2"]
    training = gf.extra["training"]
    assert training["n_fit_cells"] + training["n_valid_cells"] == train.n_obs - 3
    assert gf.model_.config.num_labels == 3


def test_script_end_to_end(split_files, model_dir, tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PYTHONSAFEPATH": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    help_text = subprocess.run([sys.executable, *RUNNER, "--help"], capture_output=True, text=True, env=env, check=True)
    assert "Geneformer" in help_text.stdout and "--params" in help_text.stdout
    params = {
        "model_dir": str(model_dir),
        "epochs": 3,
        "warmup_steps": 2,
        "max_lr": 1e-3,
        "max_input_size": 16,
        "device": "cpu",
        "precision": "fp32",
    }
    out = subprocess.run(
        [
            sys.executable,
            *RUNNER,
            "--train",
            split_files["train"],
            "--test",
            split_files["test"],
            "--prediction",
            tmp_path / "p.h5ad",
            "--record",
            tmp_path / "r.json",
            "--params",
            json.dumps(params),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0 and "status: ok" in out.stdout, out.stdout + out.stderr
    rec = json.loads((tmp_path / "r.json").read_text())
    extra = rec["extra"]
    assert rec["status"] == "ok" and rec["device"] == "cpu" and rec["n_genes_used"] == 12
    assert rec["versions"]["transformers"] and "BertForSequenceClassification" in rec["implementation"]
    assert extra["checkpoint"] == str(model_dir) and extra["checkpoint_kind"] == "pretrained"
    assert extra["checkpoint_sha256"] == sha256_file(model_dir / "model.safetensors")
    assert checkpoint_label(extra, rec["params"]) == f"pretrained ({model_dir})"
    assert extra["genes"]["n_matched"] == 12 and extra["genes"]["gene_share"] == 1.0
    assert extra["tokenisation"]["max_input_size"] == 16 and extra["tokenisation"]["special_tokens"] is False
    assert extra["model"]["num_hidden_layers"] == 2 and extra["model"]["hidden_size"] == 16
    training = extra["training"]
    assert len(training["history"]) == 3 and training["n_valid_cells"] > 0 and 1 <= training["best_epoch"] <= 3
    # the example's rule by default: the epoch of lowest validation loss; no type of the toy is rare
    assert training["best_epoch"] == min(training["history"], key=lambda e: e["valid_loss"])["epoch"]
    assert training["selection"] == "best validation eval_loss (best_model)" and extra["rare_types_dropped"] == {}
    assert training["total_steps"] == 3 * -(-training["n_fit_cells"] // 12)
    from cellplm.bench.io import read_h5ad

    pred = read_h5ad(tmp_path / "p.h5ad").obs["label_pred"].astype(str)
    truth = read_h5ad(split_files["solution"]).obs["cell_type"].astype(str)
    assert pred.isin(["type0", "type1", "type2"]).all() and len(pred) == len(truth)


def test_zero_shot_embeddings_mask_padding_and_special_tokens(tmp_path):
    import torch
    from transformers import BertModel

    from cellplm.bench.models.geneformer.embedder import embed_cells
    from cellplm.bench.models.geneformer.files import find_model_files
    from cellplm.bench.models.geneformer.tokenizer import make_tokenizer

    folder = write_tiny_geneformer(tmp_path / "v2", ENSEMBL, special_tokens=True)
    a = make_counts_adata(n_cells=6)
    a.X[5] = 0  # no gene: zeros
    emb = embed_cells(a, folder, device="cpu", batch_size=4, emb_mode="cell")
    assert emb.shape == (6, 16) and emb.dtype == np.float32 and not emb[5].any() and np.abs(emb[:5]).sum() > 0
    # cell 0 alone, unpadded, by hand: mean over its gene tokens (not <cls>/<eos>) of the penultimate layer
    tokenizer, _ = make_tokenizer(find_model_files(folder), 2048)
    ids = tokenizer.tokenize(a.X[:1], tokenizer.map_genes(ENSEMBL))[0]
    assert ids[0] == 2 and ids[-1] == 3  # <cls> ... <eos>
    bert = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = bert(input_ids=torch.as_tensor(ids)[None], output_hidden_states=True).hidden_states
    np.testing.assert_allclose(emb[0], hidden[-2][0, 1:-1].mean(0).numpy(), atol=1e-5)
    # EmbExtractor's defaults: <cls> (the dictionary has it) of the 2nd-to-last layer (emb_layer -1); 0 the last
    cls, info = embed_cells(a, folder, device="cpu", batch_size=4, return_info=True)
    assert info["emb_mode"] == "cls" and info["hidden_states_index"] == -2 and info["cells_without_tokens"] == 1
    np.testing.assert_allclose(cls[0], hidden[-2][0, 0].numpy(), atol=1e-5)
    last = embed_cells(a, folder, device="cpu", batch_size=4, emb_layer=0)
    np.testing.assert_allclose(last[0], hidden[-1][0, 0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="without <cls>"):  # V1: no <cls> to take
        embed_cells(a, write_tiny_geneformer(tmp_path / "v1", ENSEMBL), device="cpu", emb_mode="cls")

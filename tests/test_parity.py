"""Parity with the upstream package: the same checkpoint gives the same numbers in both implementations.

``tests/upstream/parity_reference.py`` runs in ``.venv-upstream`` (built by ``tools/upstream_env.sh`` with
``cellplm==0.1.0.post2``): it builds upstream's model from the released 85M config with random weights, saves
it in upstream's checkpoint format, and records embeddings, annotation logits and the pretraining loss on a
fixed mask. Here the same files are loaded into our model and compared in float32.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellplm.model import CellPLM, Sentence, load_model, released_config
from cellplm.model.checkpoint import checkpoint_paths

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_PY = ROOT / ".venv-upstream" / "bin" / "python"
TOL = 1e-4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    if not UPSTREAM_PY.exists():
        pytest.fail("the upstream environment is missing: run `bash tools/upstream_env.sh` (make test does)")
    out = tmp_path_factory.mktemp("upstream")
    subprocess.run(
        [str(UPSTREAM_PY), str(ROOT / "tests/upstream/parity_reference.py"), "--out", str(out), "--seed", "0"],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    inputs = dict(np.load(out / "inputs.npz"))
    expected = dict(np.load(out / "expected.npz"))
    return out, inputs, expected


def _csr(inputs, name):
    return sp.csr_matrix(
        (inputs[f"{name}_data"], inputs[f"{name}_indices"], inputs[f"{name}_indptr"]),
        shape=tuple(inputs[f"{name}_shape"]),
    )


def _sentence(inputs, config):
    position = {g: i for i, g in enumerate(config.gene_list)}
    vocab_index = np.array([position[g] for g in inputs["gene_ids"]])
    return Sentence.from_csr(_csr(inputs, "x"), vocab_index, config.n_genes)


def _close(ours: torch.Tensor, theirs: np.ndarray, rel: bool = False):
    theirs = torch.as_tensor(theirs)
    diff = (ours.detach().float() - theirs.float()).abs().max().item()
    scale = max(theirs.abs().max().item(), 1.0) if rel else 1.0
    assert diff / scale <= TOL, f"max |diff| {diff:.3g} (scale {scale:.3g})"


def test_released_key_table_matches_our_model():
    rows = list(csv.DictReader(open(ROOT / "cellplm/resources/state_dict_keys_20230926_85M.tsv"), delimiter="\t"))
    table = {r["key"]: [int(s) for s in r["shape"].strip("[]").split(",")] for r in rows}
    ours = {k: list(v.shape) for k, v in CellPLM(released_config()).state_dict().items()}
    assert ours == table
    assert sum(np.prod(s) for s in table.values()) == 82_402_543


def test_embedding_matches_upstream(reference):
    out, inputs, expected = reference
    model, report = load_model(out / "pretrain", task="embedder")
    assert report.ok and len(report.loaded) == 87 and len(report.unused) == 18  # the 18 decoder keys are unused
    model.eval()
    sentence = _sentence(inputs, model.config)
    tokens = model.embedder(sentence)
    _close(tokens, expected["tokens"])
    h = model.encode(sentence)
    _close(h, expected["encoded"])
    result = model.embed(sentence)
    assert torch.equal(result.cluster, torch.as_tensor(expected["cluster"]))
    _close(result.z, expected["embedding"])
    # deterministic by default, stochastic (as upstream) on request
    assert torch.equal(model.embed(sentence).z, result.z)
    sampled = [model.embed(sentence, sample_cluster=True).z for _ in range(3)]
    assert any(not torch.equal(s, sampled[0]) for s in sampled[1:])


def test_annotation_logits_match_upstream(reference):
    out, inputs, expected = reference
    model, report = load_model(out / "annotation", task="annotation")
    assert report.ok and not report.new  # this file already holds the fine-tuning head
    model.eval()
    with torch.no_grad():
        logits = model.logits(_sentence(inputs, model.config))
    _close(logits, expected["annotation_logits"])
    assert torch.equal(logits.argmax(1), torch.as_tensor(expected["annotation_pred"]))


def test_pretraining_loss_on_fixed_mask_matches_upstream(reference):
    out, inputs, expected = reference
    model, report = load_model(out / "pretrain", task="pretrain")
    assert report.ok and len(report.loaded) == 105
    model.eval()
    full = _csr(inputs, "full")
    sentence = Sentence.from_csr(full, np.arange(full.shape[1]), full.shape[1])
    with torch.no_grad():
        loss = model.fixed_mask_loss(sentence, torch.as_tensor(inputs["input_mask"]).bool())
    assert loss.n_masked_cells == len(inputs["masked_cells"])
    for ours, name in (
        (loss.latent_loss, "loss_latent"),
        (loss.reconstruction_loss, "loss_nb"),
        (loss.loss, "loss_total"),
    ):
        theirs = float(expected[name])
        assert abs(ours.item() - theirs) <= TOL * max(1.0, abs(theirs)), f"{name}: ours {ours.item()} upstream {theirs}"


def test_annotation_model_from_pretraining_checkpoint_reports_new_and_unused_keys(reference):
    out, _, _ = reference
    model, report = load_model(out / "pretrain", task="annotation", n_classes=7)
    assert report.ok
    assert sorted(report.new) == [
        "head.mlp.1.bias",
        "head.mlp.1.weight",
        "latent.layers.1.lat_2lat.0.bias",
        "latent.layers.1.lat_2lat.0.weight",
    ]
    assert len(report.unused) == 18 + 12  # decoder and GMVAE keys
    assert model.head.mlp[1].out_features == 7
    assert checkpoint_paths(out / "pretrain.best.ckpt")[0].name == "pretrain.config.json"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

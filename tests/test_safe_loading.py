"""Fetched files are data, never code: every loader refuses a file whose unpickling would run code.

Each test writes a file whose pickle calls ``os.system("touch <marker>")`` and checks that the loader refuses it
with a one-line message and that the marker was never created (the code did not run).
"""

import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from cellplm.bench.errors import InputError
from cellplm.checksum import sha256_file
from cellplm.model import load_model, read_checkpoint


class RunsCode:
    """Unpickling this calls os.system: what a swapped or tampered download could hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_checkpoint(tiny_checkpoint, folder):
    """The tiny checkpoint's weights plus one object whose unpickling runs code."""
    marker = folder / "code-ran"
    prefix = folder / "evil"
    shutil.copy(f"{tiny_checkpoint}.config.json", f"{prefix}.config.json")
    blob = torch.load(f"{tiny_checkpoint}.best.ckpt", weights_only=True)
    blob["extra"] = RunsCode(marker)
    torch.save(blob, f"{prefix}.best.ckpt")
    return prefix, marker


def test_cellplm_checkpoint_that_runs_code_is_refused(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("CELLPLM_TRUSTED_SHA256", raising=False)
    prefix, marker = evil_checkpoint(tiny_checkpoint, tmp_path)
    digest = sha256_file(f"{prefix}.best.ckpt")
    for load in (lambda: read_checkpoint(f"{prefix}.best.ckpt"), lambda: load_model(prefix)):
        with pytest.raises(InputError) as e:
            load()
        message = str(e.value)
        assert "\n" not in message and message.startswith(
            f"{prefix}.best.ckpt: refused: its pickle calls the Python object posix.system"
        )
        assert f"add its sha256 {digest} to CELLPLM_TRUSTED_SHA256" in message
        assert not marker.exists()  # nothing ran
    # another digest trusted: still refused
    with pytest.raises(InputError, match="refused"):
        read_checkpoint(f"{prefix}.best.ckpt", trusted_sha256=["0" * 64])
    assert not marker.exists()


def test_trusted_digest_allows_a_full_unpickle_and_says_so(tiny_checkpoint, tmp_path, monkeypatch):
    prefix, marker = evil_checkpoint(tiny_checkpoint, tmp_path)
    digest = sha256_file(f"{prefix}.best.ckpt")
    monkeypatch.setenv("CELLPLM_TRUSTED_SHA256", f"{'1' * 64}, {digest.upper()}")
    blob = read_checkpoint(f"{prefix}.best.ckpt")
    assert marker.exists()  # the opt-in really unpickles everything: that is why it must be explicit
    assert blob["loaded_with"] == f"full unpickle (trusted sha256 {digest})"
    model, report = load_model(prefix)
    assert report.ok and len(report.loaded) > 0


def test_the_benchmark_passes_trusted_digests_as_arguments(tiny_checkpoint, tmp_path, monkeypatch):
    """The config's trusted digests reach the loaders of cellplm_finetune and of the CellPLM embedding as
    arguments (their params): nothing travels through CELLPLM_TRUSTED_SHA256, which stays a user's override."""
    from cellplm.bench.embeddings.cellplm.embedder import CellPLMEmbedder
    from cellplm.bench.methods.cellplm_finetune.method import CellPLMFinetune
    from cellplm.embed import load_embedder
    from conftest import make_counts_adata

    monkeypatch.delenv("CELLPLM_TRUSTED_SHA256", raising=False)
    prefix, marker = evil_checkpoint(tiny_checkpoint, tmp_path)
    digest = sha256_file(f"{prefix}.best.ckpt")
    params = {"checkpoint": str(prefix), "checkpoint_kind": "user-supplied", "trusted_sha256": [digest]}
    cells = make_counts_adata(n_cells=40)
    embedder = CellPLMEmbedder(**params, device="cpu")
    assert embedder.embed(cells).shape == (40, 32)
    finetuned = CellPLMFinetune(**params, shape="tiny", max_epochs=1, patience=1, warmup_epochs=0, device="cpu")
    finetuned.fit(cells[:30].copy(), unlabelled=cells[30:].copy())
    assert len(finetuned.predict(cells[30:].copy())) == 10
    for component in (embedder, finetuned):
        assert component.extra["loaded_with"] == f"full unpickle (trusted sha256 {digest})"
    assert "CELLPLM_TRUSTED_SHA256" not in os.environ
    with pytest.raises(InputError, match="refused"):  # the digests went nowhere else: a bare load still refuses it
        load_embedder(prefix)


def test_plain_checkpoint_loads_without_trust(tiny_checkpoint, monkeypatch):
    monkeypatch.delenv("CELLPLM_TRUSTED_SHA256", raising=False)
    blob = read_checkpoint(f"{tiny_checkpoint}.best.ckpt")
    assert "loaded_with" not in blob and "model_state_dict" in blob


def test_geneformer_dictionary_that_runs_code_is_refused(tmp_path):
    from cellplm.bench.models.geneformer.files import read_pickled_dict

    marker = tmp_path / "code-ran"
    path = tmp_path / "token_dictionary_gc30M.pkl"
    path.write_bytes(pickle.dumps({"<pad>": 0, "ENSG00000000003": RunsCode(marker)}))
    with pytest.raises(InputError) as e:
        read_pickled_dict(path, "Geneformer token dictionary")
    assert str(e.value) == (
        f"{path}: cannot read the Geneformer token dictionary: refused the global posix.system "
        "(only dicts of strings and numbers are read)"
    )
    assert not marker.exists()
    # what the real dictionaries hold loads: ids to ints, ids to numpy or Python floats
    path.write_bytes(pickle.dumps({"<pad>": 0, "<mask>": 1, "ENSG00000000003": 2}))
    assert read_pickled_dict(path, "tokens") == {"<pad>": 0, "<mask>": 1, "ENSG00000000003": 2}
    path.write_bytes(pickle.dumps({"ENSG00000000003": np.float32(1.5), "ENSG00000000005": 2.25}))
    assert read_pickled_dict(path, "medians") == {"ENSG00000000003": 1.5, "ENSG00000000005": 2.25}
    path.write_bytes(pickle.dumps({"ENSG00000000003": [1, 2]}))
    with pytest.raises(InputError, match="maps 'ENSG00000000003' to list: expected strings to numbers"):
        read_pickled_dict(path, "medians")


def test_scgpt_weights_that_run_code_are_refused(tmp_path):
    """In .venv-scgpt (torch 2.3, whose torch.load unpickles everything by default): the method's loader refuses."""
    from test_scgpt import PYTHON, helper, run_method
    from conftest import make_counts_adata, write_split_files

    if not PYTHON.exists():
        pytest.skip(".venv-scgpt is missing: build it with `make scgpt-env`")
    helper("model-dirs", tmp_path / "models")
    model_dir = tmp_path / "models" / "a"
    marker = tmp_path / "code-ran"
    state = torch.load(model_dir / "best_model.pt", weights_only=True)
    state["extra"] = RunsCode(marker)
    torch.save(state, model_dir / "best_model.pt")
    files = write_split_files(make_counts_adata(n_cells=90, n_types=3), tmp_path / "split")
    record, _, _ = run_method(files, tmp_path / "run", {"model_dir": str(model_dir), "epochs": 1, "device": "cpu"})
    assert record["status"] == "failed"
    assert record["reason"].startswith(
        f"InputError: {model_dir / 'best_model.pt'}: refused: its pickle calls the Python object posix.system"
    ), record["reason"]
    assert "\n" not in record["reason"] and not marker.exists()

"""Geneformer's files: the model directory (a Hugging Face BERT checkpoint) and its two pickled dictionaries, read
with an unpickler that builds plain data only."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ....checksum import sha256_file
from ...errors import InputError


# File names of the real distribution (Geneformer's repository, package folder `geneformer/`): the 2023
# release shipped `token_dictionary.pkl` + `gene_median_dictionary.pkl`; later releases name them after the
# pretraining corpus (`_gc95M`, `_gc104M`; the 2023 model's copies moved to `gene_dictionaries_30m/..._gc30M`).
DICTIONARY_SUFFIXES = ("", "_gc104M", "_gc95M", "_gc30M")
TOKEN_DICTIONARY = "token_dictionary{}.pkl"
GENE_MEDIAN_DICTIONARY = "gene_median_dictionary{}.pkl"
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",  # sharded checkpoints: their index files
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


@dataclass
class GeneformerFiles:
    model_dir: Path
    config: Path
    weights: Path
    token_dictionary: Path
    gene_median_dictionary: Path

    def provenance(self, kind: str) -> dict:
        """What a run record says about the weights: the model directory, how it was obtained (``kind``:
        "released" when the workflow fetched it), the files used and the weights' sha256."""
        out = {
            "checkpoint": str(self.model_dir),
            "checkpoint_kind": kind,
            "weights_file": self.weights.name,
            "token_dictionary": str(self.token_dictionary),
            "gene_median_dictionary": str(self.gene_median_dictionary),
        }
        if self.weights.suffix != ".json":  # a single weights file (not a sharded index)
            out["checkpoint_sha256"] = sha256_file(self.weights)
        return out


def _given_path(value, model_dir: Path) -> Path:
    """A path from params: absolute, relative to the working directory, or else relative to the model folder."""
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    return model_dir / p


def find_model_files(model_dir, token_dictionary=None, gene_median_dictionary=None) -> GeneformerFiles:
    """Locate config, weights and the two dictionaries; one-line InputError naming what is missing."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise InputError(folder, "Geneformer model directory does not exist")
    config = folder / "config.json"
    if not config.is_file():
        raise InputError(folder, "no config.json (a Hugging Face BERT checkpoint saved with save_pretrained)")
    weights = next((folder / w for w in WEIGHT_FILES if (folder / w).is_file()), None)
    if weights is None:
        raise InputError(folder, f"no model weights (looked for {', '.join(WEIGHT_FILES)})")
    if token_dictionary and gene_median_dictionary:
        pair = (_given_path(token_dictionary, folder), _given_path(gene_median_dictionary, folder))
    else:
        pairs = [
            (folder / TOKEN_DICTIONARY.format(s), folder / GENE_MEDIAN_DICTIONARY.format(s))
            for s in DICTIONARY_SUFFIXES
        ]
        if token_dictionary:
            given = _given_path(token_dictionary, folder)
            pairs = [(given, m) for _, m in pairs]
        elif gene_median_dictionary:
            given = _given_path(gene_median_dictionary, folder)
            pairs = [(t, given) for t, _ in pairs]
        found = [p for p in pairs if p[0].is_file() and p[1].is_file()]
        if not found:
            names = ", ".join(
                f"{TOKEN_DICTIONARY.format(s)} + {GENE_MEDIAN_DICTIONARY.format(s)}" for s in DICTIONARY_SUFFIXES
            )
            raise InputError(
                folder,
                f"no Geneformer token and gene median dictionaries (looked for {names}; or set "
                "params token_dictionary and gene_median_dictionary)",
            )
        if len(set(found)) > 1:
            raise InputError(
                folder,
                "several Geneformer dictionary pairs ("
                + "; ".join(f"{t.name} + {m.name}" for t, m in found)
                + "): set params token_dictionary and gene_median_dictionary to the model's pair",
            )
        pair = found[0]
    for p in pair:
        if not p.is_file():
            raise InputError(p, "Geneformer dictionary file does not exist")
    return GeneformerFiles(folder, config, weights, *pair)


class _DictUnpickler(pickle.Unpickler):
    """Unpickles dicts of strings and numbers only: the one global admitted is numpy's scalar constructor (and
    ``numpy.dtype``), which medians saved as numpy floats need. Any other global, which unpickling would call, is
    refused before anything runs."""

    ALLOWED = {("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused the global {module}.{name} (only dicts of strings and numbers are read)")


def read_pickled_dict(path, what: str) -> dict:
    """A Geneformer dictionary (token ids or gene medians): a non-empty dict of strings to numbers, read with a
    restricted unpickler, so that a swapped or corrupted file cannot run code."""
    try:
        with open(path, "rb") as fh:
            obj = _DictUnpickler(fh).load()
    except pickle.UnpicklingError as e:
        raise InputError(path, f"cannot read the {what}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- any unreadable pickle is the same user error
        raise InputError(path, f"cannot read the {what} ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or not obj:
        raise InputError(path, f"the {what} is not a non-empty dict (got {type(obj).__name__})")
    bad = next(
        (
            k
            for k, v in obj.items()
            if not isinstance(k, str)
            or isinstance(v, (bool, np.bool_))
            or not isinstance(v, (int, float, np.integer, np.floating))
        ),
        None,
    )
    if bad is not None:
        raise InputError(path, f"the {what} maps {bad!r} to {type(obj[bad]).__name__}: expected strings to numbers")
    return obj

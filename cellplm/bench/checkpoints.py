"""The CellPLM checkpoint a workflow run uses: linked into its provenance-named folder, loaded once, and checked.

A checkpoint that claims to be the authors' release (``kind: released``) must have the released architecture: the
105 parameter names and shapes of 20230926_85M (``cellplm/resources/state_dict_keys_20230926_85M.tsv``, read from
the released file). That is how a release whose config is fetched from the authors' folder (20231027_85M) is shown
to be the same model, and how a swapped or truncated file is caught before any method runs.

:func:`use_checkpoint` is what a CellPLM method or embedding does with the checkpoint params the workflow gives it
(``checkpoint``: a prefix, or empty; ``checkpoint_kind``: how the workflow obtained it; ``trusted_sha256``), and
:func:`checkpoint_provenance` what it records, so that no row pretends to come from weights it did not use.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..checksum import sha256_file
from ..model.checkpoint import checkpoint_paths, load_model, read_checkpoint
from .errors import InputError
from .io import write_json

KEY_TABLE = Path(__file__).resolve().parents[1] / "resources" / "state_dict_keys_20230926_85M.tsv"


def released_architecture() -> dict[str, list[int]]:
    """Parameter name -> shape of the released 85M model."""
    with open(KEY_TABLE) as fh:
        return {row["key"]: json.loads(row["shape"]) for row in csv.DictReader(fh, delimiter="\t")}


def architecture_report(state: dict) -> dict:
    """How a state dict compares with the released 85M architecture (keys missing, extra, of another shape)."""
    released = released_architecture()
    shapes = {k: list(v.shape) for k, v in state.items()}
    missing = sorted(set(released) - set(shapes))
    extra = sorted(set(shapes) - set(released))
    other = sorted(k for k in set(released) & set(shapes) if released[k] != shapes[k])
    return {
        "released_architecture": not (missing or extra or other),
        "n_keys": len(shapes),
        "n_released_keys": len(released),
        "missing": missing,
        "extra": extra,
        "other_shape": [f"{k}: {shapes[k]} vs released {released[k]}" for k in other],
    }


def verify(prefix, kind: str, trusted_sha256=()) -> dict:
    """Load the checkpoint at ``prefix`` once (config and weights must agree) and compare it with the release.

    A ``released`` checkpoint that is not the released architecture is an :class:`InputError`.
    """
    _, weights = checkpoint_paths(prefix)
    blob = read_checkpoint(weights, trusted_sha256)
    arch = architecture_report(blob["model_state_dict"])
    if kind == "released" and not arch["released_architecture"]:
        diffs = (
            [f"missing {k}" for k in arch["missing"][:2]]
            + [f"extra {k}" for k in arch["extra"][:2]]
            + arch["other_shape"][:2]
        )
        n = len(arch["missing"]) + len(arch["extra"]) + len(arch["other_shape"])
        raise InputError(
            weights,
            f"not the released CellPLM 85M architecture ({n} of {arch['n_released_keys']} "
            f"parameters differ, e.g. {'; '.join(diffs)}): not the authors' file",
        )
    _, report = load_model(prefix, task="embedder", trusted_sha256=trusted_sha256)
    return {
        "architecture": arch,
        "load_report": report.summary(),
        "loaded_with": blob.get("loaded_with", "weights_only"),
    }


def link(
    config_src,
    weights_src,
    out_config,
    out_weights,
    provenance,
    *,
    source: str,
    kind: str,
    urls: dict,
    trusted_sha256=(),
) -> dict:
    """Link the two files into their folder as ``model.*`` (never copied: the weights are ~330 MB), verify, and
    write ``provenance.json``."""
    for src, dest in ((config_src, out_config), (weights_src, out_weights)):
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        os.symlink(Path(src).resolve(), dest)
    record = {
        "source": source,
        "kind": kind,
        "config": str(Path(config_src).resolve()),
        "weights": str(Path(weights_src).resolve()),
        "urls": {Path(k).name: v for k, v in urls.items()},
    }
    try:
        record.update(verify(str(out_weights).removesuffix(".best.ckpt"), kind, trusted_sha256))
    except Exception:
        Path(out_config).unlink(missing_ok=True)
        Path(out_weights).unlink(missing_ok=True)
        raise
    write_json(record, provenance)
    return record


def checkpoint_provenance(checkpoint: str | None, kind: str | None, shape: str = "85M", trusted_sha256=None) -> dict:
    """What produced the weights: kind, path, sha256 of the weights file, how it was unpickled, and pretraining
    metadata if any; random initialisation of ``shape`` without a checkpoint."""
    if not checkpoint:
        return {"checkpoint": "random initialisation", "checkpoint_kind": "random initialisation", "shape": shape}
    weights = checkpoint_paths(checkpoint)[1]
    blob = read_checkpoint(weights, trusted_sha256)
    meta = blob.get("pretraining")
    if kind in (None, "", "auto"):
        kind = "pretrained here" if meta else "user-supplied"
    out = {
        "checkpoint": str(Path(checkpoint)),
        "checkpoint_kind": kind,
        "checkpoint_sha256": sha256_file(weights),
        "loaded_with": blob.get("loaded_with", "weights_only"),
    }
    if meta:
        out["pretraining"] = {k: meta[k] for k in ("shape", "steps", "corpus", "seed") if k in meta}
        out["pretraining"]["epochs"] = meta.get("hyperparameters", {}).get("epochs", meta.get("epochs"))
    return out


def use_checkpoint(
    checkpoint: str | None, kind: str | None, trusted_sha256=None, shape: str = "85M"
) -> tuple[str | None, dict]:
    """(the checkpoint prefix, or None for random initialisation; its :func:`checkpoint_provenance`).

    ``trusted_sha256``: the config's explicit opt-in (cellplm.checkpoint.trusted_sha256, or a pinned release's
    sha256), digests of weights files that may be fully unpickled. The caller passes the same digests to the loader
    it then uses (``CellTypeAnnotator``, ``load_embedder``, ``read_checkpoint``): they travel as arguments, never
    through the environment.
    """
    checkpoint = checkpoint or None
    return checkpoint, checkpoint_provenance(checkpoint, kind, shape, trusted_sha256)

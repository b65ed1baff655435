"""What the CellPLM methods share (cellplm_finetune, and the embedding method cellplm of the zero-shot track).

Both take ``checkpoint`` (a checkpoint prefix, or empty for random initialisation) and
``checkpoint_kind`` (how the workflow obtained it: "released", "pretrained here", "user-supplied"), and record
the checkpoint's provenance in the run record, so that no row pretends to come from weights it did not use.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...checksum import sha256_file
from ...model.checkpoint import TRUST_ENV, checkpoint_paths, read_checkpoint
from .base import Annotator


def checkpoint_provenance(checkpoint: str | None, kind: str | None, shape: str = "85M") -> dict:
    """What produced the weights: kind, path, sha256 of the weights file, how it was unpickled, and pretraining
    metadata if any."""
    if not checkpoint:
        return {"checkpoint": "random initialisation", "checkpoint_kind": "random initialisation", "shape": shape}
    weights = checkpoint_paths(checkpoint)[1]
    blob = read_checkpoint(weights)
    meta = blob.get("pretraining")
    if kind in (None, "", "auto"):
        kind = "pretrained here" if meta else "user-supplied"
    out = {"checkpoint": str(Path(checkpoint)), "checkpoint_kind": kind, "checkpoint_sha256": sha256_file(weights),
           "loaded_with": blob.get("loaded_with", "weights_only")}
    if meta:
        out["pretraining"] = {k: meta[k] for k in ("shape", "steps", "corpus", "seed") if k in meta}
        out["pretraining"]["epochs"] = meta.get("hyperparameters", {}).get("epochs", meta.get("epochs"))
    return out


class CellPLMMethod(Annotator):
    """A CellPLM method: its checkpoint (params ``checkpoint``, ``checkpoint_kind``) and that checkpoint's provenance."""

    packages = ("torch",)
    transductive = True

    def _checkpoint(self):
        p = self.params
        if p.get("trusted_sha256"):  # the explicit opt-in of the config (cellplm.checkpoint.trusted_sha256, a pinned
            os.environ[TRUST_ENV] = ",".join(p["trusted_sha256"])  # release): every load in this run honours it
        ckpt = p.get("checkpoint") or None
        self.extra = checkpoint_provenance(ckpt, p.get("checkpoint_kind"), p.get("shape", "85M"))
        return ckpt

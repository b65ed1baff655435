"""What the CellPLM methods (cellplm_finetune, cellplm_zeroshot) share: the checkpoint params and provenance.

Both take ``checkpoint`` (a checkpoint prefix, or empty for random initialisation) and ``checkpoint_kind`` (how the
workflow obtained it: "released", "pretrained here", "user-supplied") and record the checkpoint's provenance
(:func:`cellplm.bench.checkpoints.use_checkpoint`) in the run record.
"""

from __future__ import annotations

from ..checkpoints import use_checkpoint
from .base import Annotator


class CellPLMMethod(Annotator):
    """A CellPLM method: its checkpoint (params ``checkpoint``, ``checkpoint_kind``) and that checkpoint's provenance."""

    packages = ("torch",)
    transductive = True

    def _checkpoint(self):
        p = self.params
        ckpt, self.extra = use_checkpoint(p.get("checkpoint"), p.get("checkpoint_kind"), p.get("trusted_sha256"),
                                          p.get("shape", "85M"))
        return ckpt

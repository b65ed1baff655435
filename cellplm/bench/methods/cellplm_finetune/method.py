"""CellPLM fine-tuned for cell-type annotation with the upstream CellTypeAnnotationPipeline protocol."""

from __future__ import annotations

from dataclasses import fields

from ....finetune_options import FinetuneConfig
from ....keys import LABEL
from ...checkpoints import use_checkpoint
from ...data.split import describe_sentences
from ...finetune_protocol import CLASS_SET, PROTOCOL
from ..base import Annotator

# The CellTypeAnnotator options a run may set (seed and progress are passed on their own).
FINETUNE_OPTIONS = tuple(f.name for f in fields(FinetuneConfig) if f.name not in ("seed", "progress"))


class CellPLMFinetune(Annotator):
    """Params ``checkpoint`` (a checkpoint prefix, or empty for random initialisation) and ``checkpoint_kind`` (how
    the workflow obtained it: "released", "pretrained here", "user-supplied"), whose provenance goes into the run
    record (:func:`cellplm.bench.checkpoints.use_checkpoint`), and the fine-tuning options."""

    packages = ("torch",)
    transductive = True

    def fit(self, train, solution=None, unlabelled=None):
        from ....finetune import CellTypeAnnotator

        p = self.param
        ckpt, self.extra = use_checkpoint(p("checkpoint"), p("checkpoint_kind"), p("trusted_sha256"), p("shape"))
        # the params given, else this method's defaults (method.yaml, e.g. precision fp32), else CellTypeAnnotator's
        options = {k: p(k) for k in FINETUNE_OPTIONS if k in self.params or k in self.defaults()}
        self.model_ = CellTypeAnnotator(
            ckpt, trusted_sha256=p("trusted_sha256"), seed=self.seed, progress=p("progress"), **options
        )
        self.model_.fit(train, label_key=LABEL, unlabelled=unlabelled)
        info = self.model_.info_
        self.n_genes_used = info.get("n_genes_used")
        self.device = info.get("device", "cpu")
        self.extra.update(
            {
                k: info[k]
                for k in (
                    "genes",
                    "epochs_run",
                    "best_epoch",
                    "best_valid_macro_f1",
                    "precision",
                    "setting",
                    "device_detail",
                )
                if k in info
            }
        )
        group_key = info["options"]["group_key"]
        self.extra.update(
            protocol={k: info["options"][k] for k in PROTOCOL},
            sentences=describe_sentences(train.uns, info["n_sentences"], group_key if group_key in train.obs else None),
            class_set=CLASS_SET.format(n=len(self.model_.classes_)),
        )
        return self

    def predict(self, test):
        return self.model_.predict(test)

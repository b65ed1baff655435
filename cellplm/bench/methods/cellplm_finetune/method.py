"""CellPLM fine-tuned for cell-type annotation with the upstream CellTypeAnnotationPipeline protocol."""

from __future__ import annotations

import time
from dataclasses import fields

from ....finetune_options import FinetuneConfig
from ....errors import NotApplicable
from ....keys import LABEL
from ....sentence_policy import SentencePolicy
from ...checkpoints import use_checkpoint
from ...data.split import describe_sentences
from ...finetune_protocol import CLASS_SET, PROTOCOL
from ..base import Annotator

# The CellTypeAnnotator options a run may set (seed and progress are passed on their own).
FINETUNE_OPTIONS = tuple(f.name for f in fields(FinetuneConfig) if f.name not in ("seed", "progress"))
TEST_ONLY = "test_only"  # a context policy: batch sentences of the test cells alone (no training cells)


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
        self.train_ = train  # the context of the tissue-context predictions (predict_variants)
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

    def predict_variants(self, test):
        """The tissue-context track: the test cells' labels under each sentence policy of ``context_policies``
        (:mod:`cellplm.sentence_policy`), read with the training cells as the fit read them, except ``single``
        (alone by definition) and ``test_only`` (batch sentences of the test cells without the training cells). The
        random draws use the run's seed; what each variant was goes into ``extra['context_predictions']``."""
        out, done = {}, {}
        for text in self.param("context_policies"):
            t0 = time.perf_counter()
            if text == TEST_ONLY:
                policy, context = SentencePolicy.parse("batch"), None
            else:
                policy = SentencePolicy.parse(text, seed=self.seed)
                context = None if policy.kind == "single" else self.train_
            name = TEST_ONLY if text == TEST_ONLY else policy.slug
            try:
                out[name] = self.model_.predict(test, sentences=policy, context=context)
            except NotApplicable as e:  # e.g. spatial sentences without coordinates: that variant only
                done[name] = {**policy.describe(), "status": "not_applicable", "reason": str(e)}
                continue
            done[name] = {
                **policy.describe(),
                "policy": TEST_ONLY if text == TEST_ONLY else str(policy),
                "with_training_cells": context is not None,
                "seconds": time.perf_counter() - t0,
                "status": "ok",
            }
        self.extra["context_predictions"] = done
        return out

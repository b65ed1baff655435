"""CellPLM in the benchmark: fine-tuned annotation (upstream protocol) and zero-shot embedding + a classifier.

Both take ``checkpoint`` (a checkpoint prefix, or empty for random initialisation) and
``checkpoint_kind`` (how the workflow obtained it: "released", "pretrained here", "user-supplied"), and record
the checkpoint's provenance in the run record, so that no row pretends to come from weights it did not use.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...checksum import sha256_file
from ...model.checkpoint import TRUST_ENV, checkpoint_paths, read_checkpoint
from ..errors import NotApplicable
from .base import Annotator

FINETUNE_OPTIONS = ("n_hvg", "transductive", "lr", "embedder_lr_scale", "weight_decay", "embedder_weight_decay",
                    "warmup_epochs", "max_epochs", "patience", "plateau_patience", "plateau_factor", "clip", "dropout",
                    "eval_every", "group_key", "min_gene_share", "min_count_share", "shape", "device", "precision")


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


class _CellPLMBase(Annotator):
    packages = ("torch",)
    transductive = True

    def _checkpoint(self):
        p = self.params
        if p.get("trusted_sha256"):  # the explicit opt-in of the config (cellplm.checkpoint.trusted_sha256, a pinned
            os.environ[TRUST_ENV] = ",".join(p["trusted_sha256"])  # release): every load in this run honours it
        ckpt = p.get("checkpoint") or None
        self.extra = checkpoint_provenance(ckpt, p.get("checkpoint_kind"), p.get("shape", "85M"))
        return ckpt


class CellPLMFinetune(_CellPLMBase):
    label = "CellPLM (fine-tuned)"
    implementation = "cellplm (this project's re-implementation), upstream CellTypeAnnotationPipeline protocol"

    def fit(self, train, solution=None, unlabelled=None):
        from ...finetune import CellTypeAnnotator

        ckpt = self._checkpoint()
        options = {k: self.params[k] for k in FINETUNE_OPTIONS if k in self.params}
        self.model_ = CellTypeAnnotator(ckpt, seed=self.seed, progress=self.params.get("progress", True), **options)
        self.model_.fit(train, label_key="cell_type", unlabelled=unlabelled)
        info = self.model_.info_
        self.n_genes_used = info.get("n_genes_used")
        self.device = info.get("device", "cpu")
        self.extra.update({k: info[k] for k in ("genes", "epochs_run", "best_epoch", "best_valid_macro_f1", "precision",
                                                "setting", "device_detail")
                           if k in info})
        return self

    def predict(self, test):
        return self.model_.predict(test)


class CellPLMZeroShot(_CellPLMBase):
    label = "CellPLM (zero-shot embedding + classifier)"
    implementation = "cellplm embeddings (frozen, deterministic), scikit-learn kNN or logistic regression on train cells"
    transductive = False

    def fit(self, train, solution=None, unlabelled=None):
        from ...embed import embed_cells, load_embedder

        ckpt = self._checkpoint()
        p = self.params
        if ckpt is None:
            raise NotApplicable("zero-shot embedding needs a pretrained checkpoint (none configured)")
        self.model, _ = load_embedder(ckpt)
        self.kw = dict(group_key=p.get("group_key", "batch"), device=p.get("device", "auto"),
                       precision=p.get("precision", "auto"), min_gene_share=p.get("min_gene_share", 0.3),
                       min_count_share=p.get("min_count_share", 0.5), progress=p.get("progress", True))
        result = embed_cells(train, self.model, source="training data", **self.kw)
        self.n_genes_used = result.info["genes"]["n_matched"]
        self.device = result.info["device"]
        self.extra.update({"genes": result.info["genes"], "precision": result.info["precision"],
                           "device_detail": result.info["device_detail"],
                           "classifier": p.get("classifier", "knn")})
        if p.get("classifier", "knn") == "knn":
            from sklearn.neighbors import KNeighborsClassifier

            self.clf = KNeighborsClassifier(n_neighbors=p.get("k", 15))
        else:
            from sklearn.linear_model import LogisticRegression

            self.clf = LogisticRegression(max_iter=p.get("max_iter", 1000), C=p.get("C", 1.0))
        self.clf.fit(result.embedding, train.obs["cell_type"].astype(str).to_numpy())
        return self

    def predict(self, test):
        from ...embed import embed_cells

        result = embed_cells(test, self.model, source="test data", **self.kw)
        return np.asarray(self.clf.predict(result.embedding), dtype=object)

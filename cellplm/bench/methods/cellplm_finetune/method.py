"""CellPLM fine-tuned for cell-type annotation with the upstream CellTypeAnnotationPipeline protocol."""

from __future__ import annotations

from ..cellplm_common import CellPLMMethod

FINETUNE_OPTIONS = ("n_hvg", "transductive", "lr", "embedder_lr_scale", "weight_decay", "embedder_weight_decay",
                    "warmup_epochs", "max_epochs", "patience", "plateau_patience", "plateau_factor", "clip", "dropout",
                    "eval_every", "group_key", "min_gene_share", "min_count_share", "shape", "device", "precision")


class CellPLMFinetune(CellPLMMethod):

    def fit(self, train, solution=None, unlabelled=None):
        from ....finetune import CellTypeAnnotator

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


"""CellPLM zero-shot: frozen, deterministic embeddings, and a kNN (or logistic regression) fitted on the train cells."""

from __future__ import annotations

import numpy as np

from ...errors import NotApplicable
from ..cellplm_common import CellPLMMethod


class CellPLMZeroShot(CellPLMMethod):
    transductive = False

    def fit(self, train, solution=None, unlabelled=None):
        from ....embed import embed_cells, load_embedder

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
        from ....embed import embed_cells

        result = embed_cells(test, self.model, source="test data", **self.kw)
        return np.asarray(self.clf.predict(result.embedding), dtype=object)

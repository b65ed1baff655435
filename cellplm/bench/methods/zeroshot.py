"""Zero-shot annotation of any embedding: a kNN classifier fitted on the train cells' embedding predicts the test
cells (the row ``<embedding>_zeroshot``, e.g. ``cellplm_zeroshot``).

The embedding file (cellplm/bench/embeddings, one per dataset) holds every cell of the dataset, embedded without
labels; this method adds the train labels, and nothing else. It runs through the same harness as every method
(:func:`.base.run`), so its prediction file, run record and scores are those of any other method. Its record
carries the embedding's provenance (checkpoint, device, genes), so that the row says what produced it.
"""

from __future__ import annotations

import numpy as np

from ...keys import LABEL
from ..embedding_results import read_embedding
from ..errors import InputError, NotApplicable
from .base import Annotator


class EmbeddingKNN(Annotator):
    """kNN (``k`` neighbours, Euclidean) on the rows of ``embedding`` (an embedding.h5ad) of the train cells.

    ``record``: the embedding's run.json, whose status, reason and provenance the row inherits: a
    not-applicable embedding gives a not-applicable row, a failed one a failed row, each with its reason. ``k``
    defaults to the row's (``params`` of its registry entry, zeroshot.knn.k).
    """

    packages = ("scikit-learn",)
    meta: dict = {}

    @classmethod
    def metadata(cls) -> dict:
        return dict(cls.meta)

    @classmethod
    def of(cls, method_id: str, meta: dict) -> type:
        """The class of the row ``method_id``, described by its registry entry ``meta`` (label, implementation)."""
        return type(method_id, (cls,), {"meta": dict(meta)})

    def _rows(self, adata) -> np.ndarray:
        """Embedding rows of ``adata``'s cells, in its order."""
        missing = adata.obs_names.difference(self.index_)
        if len(missing):
            raise InputError(
                self.param("embedding"),
                f"{len(missing)} cells of the split are not embedded "
                f"(e.g. {missing[0]}); was it made from another dataset?",
            )
        return self.embedding_[self.index_.get_indexer(adata.obs_names)]

    def fit(self, train, solution=None, unlabelled=None):
        from sklearn.neighbors import KNeighborsClassifier

        embedding, self.index_, record = read_embedding(self.param("embedding"), self.param("record"))
        self.extra = {
            **(record.get("extra") or {}),
            "embedding": record.get("embedding"),
            "embedding_device": record.get("device"),
            "embedding_s": record.get("embed_s"),
        }
        what = f"embedding {record.get('embedding')}"
        if record.get("status") == "not_applicable":
            raise NotApplicable(f"{what} not applicable: {record.get('reason', '')}")
        if record.get("status") != "ok":
            raise RuntimeError(f"{what} {record.get('status')}: {record.get('reason', '')}")
        self.embedding_ = embedding
        self.device, self.n_genes_used = record.get("device", "cpu"), record.get("n_genes_used")
        X = self._rows(train)
        k = min(int(self.param("k")), X.shape[0])
        self.knn_ = KNeighborsClassifier(n_neighbors=k).fit(X, train.obs[LABEL].astype(str).to_numpy())
        return self

    def predict(self, test):
        return np.asarray(self.knn_.predict(self._rows(test)), dtype=object)

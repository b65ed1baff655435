"""Geneformer zero-shot embeddings: :func:`cellplm.bench.models.geneformer.embedder.embed_cells` (EmbExtractor's way).

Importing this module needs transformers, so that where it is missing the registry makes the rows not applicable,
naming it; without a model directory the rows are not applicable too (the dictionaries cannot be made up).
"""

from __future__ import annotations

import transformers  # noqa: F401 - imported here so that a missing package is a not_applicable row, said at load

from ...errors import NotApplicable
from ...models.geneformer.embedder import embed_cells
from ...models.geneformer.files import find_model_files
from ..base import Embedder


class GeneformerEmbedder(Embedder):
    """The cell embedding of a pretrained Geneformer (``model_dir``) as EmbExtractor computes it by default."""

    packages = ("torch", "transformers", "safetensors")

    def embed(self, cells):
        p = self.param
        if not p("model_dir"):
            raise NotApplicable(
                "needs a pretrained Geneformer model directory (none configured): set "
                "embeddings.geneformer.model (e.g. geneformer_v1_10m) or params.model_dir"
            )
        files = find_model_files(p("model_dir"), p("token_dictionary"), p("gene_median_dictionary"))
        self.extra = files.provenance(p("checkpoint_kind"))
        z, info = embed_cells(
            cells,
            p("model_dir"),
            device=p("device"),
            batch_size=int(p("batch_size")),
            max_input_size=int(p("max_input_size")),
            special_tokens=p("special_tokens"),
            token_dictionary=p("token_dictionary"),
            gene_median_dictionary=p("gene_median_dictionary"),
            gene_ids=p("gene_ids"),
            emb_mode=p("emb_mode"),
            emb_layer=int(p("emb_layer")),
            min_gene_share=float(p("min_gene_share")),
            min_count_share=float(p("min_count_share")),
            return_info=True,
        )
        self.device, self.n_genes_used = info.pop("device"), info["genes"]["n_tokens_used"]
        self.extra.update(info)
        return z  # (n_cells, hidden_size) float32

"""scGPT zero-shot embeddings in scGPT's environment: :func:`cellplm.bench.models.scgpt.embedder.embed_cells`.

Importing this module needs scgpt (and torchtext, hence torch 2.3): elsewhere the registry makes its rows not
applicable, naming what is missing and how to build ``.venv-scgpt``.
"""

from __future__ import annotations

from ...models.scgpt.embedder import embed_cells
from ...models.scgpt.model import set_threads, weights_provenance
from ..base import Embedder


class ScGPTEmbedder(Embedder):
    """The ``<cls>`` embedding of every cell (``embed_data``), of ``model_dir`` or of random weights of ``shape``."""

    packages = ("scgpt", "torch", "torchtext")

    def embed(self, cells):
        p = self.param
        self.extra = weights_provenance(p("model_dir"), p("checkpoint_kind"), p("shape"))
        threads = set_threads()
        z, info = embed_cells(
            cells,
            model_dir=p("model_dir"),
            shape=p("shape"),
            batch_size=int(p("batch_size")),
            device=p("device"),
            amp=bool(p("amp")),
            max_seq_len=int(p("max_seq_len")),
            n_bins=int(p("n_bins")),
            seed=self.seed,
            min_gene_share=float(p("min_gene_share")),
            min_count_share=float(p("min_count_share")),
            return_info=True,
        )
        self.device, self.n_genes_used = info.pop("device"), info["genes"]["n_in_vocabulary"]
        self.extra.update(info, threads=threads)
        return z  # (n_cells, d_model) float32, unit norm

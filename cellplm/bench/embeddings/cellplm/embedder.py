"""CellPLM zero-shot embeddings: the configured checkpoint, frozen, all cells of the split, read in the sentences of a
sentence policy (default: one per batch)."""

from __future__ import annotations

from ....embed import embed_cells, load_embedder
from ....sentence_policy import SentencePolicy
from ...checkpoints import use_checkpoint
from ...data.split import describe_sentences
from ...errors import NotApplicable
from ..base import Embedder


class CellPLMEmbedder(Embedder):
    """:func:`cellplm.embed.embed_cells` of the checkpoint (deterministic: the most probable mixture component)."""

    packages = ("torch",)

    def embed(self, cells):
        p = self.param
        if not p("checkpoint"):
            raise NotApplicable("zero-shot embedding needs a pretrained CellPLM checkpoint (none configured)")
        checkpoint, self.extra = use_checkpoint(p("checkpoint"), p("checkpoint_kind"), p("trusted_sha256"))
        model, _ = load_embedder(checkpoint, trusted_sha256=p("trusted_sha256"))
        policy = SentencePolicy.parse(p("sentences"), seed=self.seed)
        result = embed_cells(
            cells,
            model,
            group_key=p("group_key"),
            policy=policy,
            max_cells=p("max_cells"),
            device=p("device"),
            precision=p("precision"),
            min_gene_share=p("min_gene_share"),
            min_count_share=p("min_count_share"),
            progress=p("progress"),
            source="split cells",
        )
        info = result.info
        self.n_genes_used, self.device = info["genes"]["n_matched"], info["device"]
        self.extra.update(
            {
                k: info[k]
                for k in (
                    "genes",
                    "precision",
                    "device_detail",
                    "n_sentences",
                    "sentence_policy",
                    "group_key",
                    "max_cells",
                    "cluster_choice",
                )
            }
        )
        key = p("group_key") if p("group_key") in cells.obs else None
        self.extra["sentences"] = (
            describe_sentences(cells.uns, info["n_sentences"], key)
            if policy.kind == "batch"
            else f"sentence policy {policy} ({info['n_sentences']} sentences)"
        )
        return result.embedding  # (n_cells, post_latent_dim) float32

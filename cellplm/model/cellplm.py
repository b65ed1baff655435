"""CellPLM: cells as tokens, a tissue as the sentence.

    sentence (N cells, raw counts) --embedder--> N x D --Flowformer--> N x D --LayerNorm--> h
    h --latent--> z (N x L) --> NB decoder (pretraining) | identity (embedding) | classifier (annotation)

Parameter names and shapes follow the released ``OmicsFormer`` state dict, so its checkpoints load directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import CellPLMConfig
from .decoder import NBDecoder, reconstruction_loss
from .dropout import Dropout
from .embedder import OmicsEmbedder
from .flowformer import FlowformerEncoder, PreLatentNorm
from .latent import LatentModel, LatentOutput
from .masking import Mask, drop_cells, fixed_mask, mask_sentence
from .sentence import Sentence


class AnnotationHead(nn.Module):
    """Dropout before every Linear, ReLU between them: L -> [dec_hid] * (dec_layers - 1) -> classes."""

    def __init__(self, latent_dim: int, hidden: int, n_classes: int, n_layers: int, dropout: float):
        super().__init__()
        sizes = [latent_dim] + [hidden] * (n_layers - 1) + [n_classes]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            if i:
                layers.append(nn.ReLU())
            layers += [Dropout(dropout), nn.Linear(a, b)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(z)


@dataclass
class PretrainOutput:
    loss: torch.Tensor
    latent_loss: torch.Tensor
    reconstruction_loss: torch.Tensor
    n_cells: int
    n_masked_cells: int


class CellPLM(nn.Module):
    def __init__(self, config: CellPLMConfig):
        super().__init__()
        c = self.config = config
        self.embedder = OmicsEmbedder(c.n_genes, c.enc_hid, c.model_dropout, spatial_pe=c.spatial_pe)
        self.encoder = FlowformerEncoder(c.enc_hid, c.enc_head, c.enc_layers, c.model_dropout)
        self.pre_latent_norm = PreLatentNorm(c.enc_hid)
        self.latent = LatentModel(c.latent_mod, c.enc_hid, c.post_latent_dim, c.num_clusters, c.w_li, c.w_en, c.lamda)
        if c.head_type is None:
            self.decoder = NBDecoder(
                c.post_latent_dim, c.dec_hid, c.out_dim, c.dec_layers, c.model_dropout, c.batch_num, c.dataset_num
            )
        elif c.head_type == "annotation":
            self.head = AnnotationHead(c.post_latent_dim, c.dec_hid, c.out_dim, c.dec_layers, c.model_dropout)

    # ---- shared trunk --------------------------------------------------------------------------------------
    def encode(self, sentence: Sentence) -> torch.Tensor:  # -> h, N x D
        if sentence.n_cells == 0:
            raise ValueError("empty sentence: no cells to encode")
        return self.pre_latent_norm(self.encoder(self.embedder(sentence)))

    def latent_of(self, sentence: Sentence, sample_cluster: bool = False, with_loss: bool = True) -> LatentOutput:
        return self.latent(self.encode(sentence), sample_cluster=sample_cluster, with_loss=with_loss)

    # ---- tasks ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, sentence: Sentence, sample_cluster: bool = False) -> LatentOutput:
        """Zero-shot cell embeddings (eval mode): z = μ(h, y) with y the most probable cluster, or a
        Gumbel-softmax sample of it with ``sample_cluster=True`` (upstream's behaviour: not deterministic)."""
        return self.latent_of(sentence, sample_cluster=sample_cluster, with_loss=False)

    def logits(self, sentence: Sentence) -> torch.Tensor:  # -> N x classes
        return self.head(self.latent_of(sentence, with_loss=False).z)

    def mask(
        self, sentence: Sentence, generator: torch.Generator | None = None, dense: bool = True
    ) -> tuple[Sentence, torch.Tensor, Mask]:
        """Training augmentation: drop cells, then mask cells and entries. Returns the kept cell indices too."""
        c = self.config
        sentence, kept = drop_cells(sentence, c.drop_node_rate, c.max_batch_size, generator)
        sentence, mask = mask_sentence(sentence, c.mask_node_rate, c.mask_feature_rate, dense, generator)
        return sentence, kept, mask

    def pretrain_loss(self, sentence: Sentence, mask: Mask) -> PretrainOutput:
        """Latent loss plus NB reconstruction of the masked cells (``sentence`` already carries the mask).

        Under autocast only the embedder and encoder run in reduced precision; the latent, the decoder's
        exponentials and the losses are computed in float32.
        """
        h = self.encode(sentence)
        with torch.autocast(h.device.type, enabled=False):
            out = self.latent(h.float())
            mean, theta = self.decoder(out.z, sentence)
            recon = reconstruction_loss(
                sentence.dense(),
                mean,
                theta,
                mask.entries,
                mask.cells,
                gene_mask=sentence.gene_mask,
                dae=self.config.dae,
            )
        return PretrainOutput(
            loss=out.loss + recon,
            latent_loss=out.loss,
            reconstruction_loss=recon,
            n_cells=sentence.n_cells,
            n_masked_cells=int(mask.cells.numel()),
        )

    def pretrain_step(self, sentence: Sentence, generator: torch.Generator | None = None) -> PretrainOutput:
        """One masked-cell-modelling loss on a sentence: random dropping and masking, then :meth:`pretrain_loss`."""
        masked, _, mask = self.mask(sentence, generator, dense=True)
        return self.pretrain_loss(masked, mask)

    def forward(self, sentence: Sentence, generator: torch.Generator | None = None) -> PretrainOutput:
        """The pretraining step as ``forward``, so that DistributedDataParallel can wrap the model."""
        return self.pretrain_step(sentence, generator)

    def fixed_mask_loss(self, sentence: Sentence, entries: torch.Tensor) -> PretrainOutput:
        """The pretraining loss for a given entry mask (no cell dropping); used to compare implementations."""
        masked, mask = fixed_mask(sentence, entries)
        return self.pretrain_loss(masked, mask)

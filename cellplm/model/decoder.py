"""The negative-binomial decoder of pretraining and its reconstruction loss.

    h  = GroupNorm(Dropout(PReLU(Linear(z))))  + f_batch(batch id) + f_dataset(dataset id)
    μ  = clamp(exp(Linear(ReLU(Linear(h)))), 1e-5, 1e6)        (one mean per vocabulary gene)
    θ  = clamp(exp(dispersion parameter), 1e-4, 1e4)            (one dispersion per gene)
f_* = GroupNorm(PReLU(Embedding(id))). A sentence without covariate ids uses f(Σ of all embedding rows), as
the released model does for every downstream task.
"""

from __future__ import annotations

import torch
from torch import nn

from .dropout import Dropout
from .sentence import Sentence

NB_HIDDEN = 128  # fixed in the released model
NB_EPS = 1e-10


class NBOutput(nn.Module):
    def __init__(self, dim: int, n_genes: int):
        super().__init__()
        self.dec_disp = nn.Parameter(torch.randn(n_genes))
        self.dec_1 = nn.Linear(dim, NB_HIDDEN)
        self.dec_mean = nn.Sequential(nn.Linear(NB_HIDDEN, n_genes))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # -> mean N x V, dispersion V
        mean = torch.exp(self.dec_mean(torch.relu(self.dec_1(h)))).clamp(1e-5, 1e6)
        return mean, torch.exp(self.dec_disp).clamp(1e-4, 1e4)


def _covariate(n: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Embedding(n, dim), nn.PReLU(), nn.GroupNorm(4, dim))


class NBDecoder(nn.Module):
    def __init__(
        self, latent_dim: int, dim: int, n_genes: int, n_layers: int, dropout: float, n_batches: int, n_datasets: int
    ):
        super().__init__()
        sizes = [latent_dim] + [dim] * (n_layers - 1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.PReLU(), Dropout(dropout), nn.GroupNorm(4, b))
            for a, b in zip(sizes, sizes[1:])
        )
        self.covariate_layers = nn.ModuleList(
            [nn.ModuleDict({"batch": _covariate(n_batches, dim), "dataset": _covariate(n_datasets, dim)})]
        )
        self.out_layer = NBOutput(sizes[-1], n_genes)

    def forward(self, z: torch.Tensor, sentence: Sentence) -> tuple[torch.Tensor, torch.Tensor]:
        h = z
        for layer in self.layers:
            h = layer(h)
        for name, ids in (("batch", sentence.batch), ("dataset", sentence.dataset)):
            f = self.covariate_layers[0][name]
            if ids is None:
                h = h + f[2](f[1](f[0].weight.sum(0, keepdim=True).detach()))
            else:
                h = h + f(ids)
        return self.out_layer(h)


def nb_nll(x: torch.Tensor, mean: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Element-wise negative log-likelihood of counts x under NB(mean, dispersion theta)."""
    eps = NB_EPS
    return (
        torch.lgamma(theta + eps)
        + torch.lgamma(x + 1.0)
        - torch.lgamma(x + theta + eps)
        + (theta + x) * torch.log1p(mean / (theta + eps))
        + x * (torch.log(theta + eps) - torch.log(mean + eps))
    )


def _rescaled(mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scale each cell's predicted means to its observed library size."""
    return mean / mean.sum(1, keepdim=True) * x.sum(1, keepdim=True)


def reconstruction_loss(
    x: torch.Tensor,
    mean: torch.Tensor,
    theta: torch.Tensor,
    entry_mask: torch.Tensor,
    masked_cells: torch.Tensor,
    gene_mask: torch.Tensor | None = None,
    dae: bool = True,
) -> torch.Tensor:
    """NB reconstruction loss of the masked cells, averaged over them.

    x, mean: N x V counts and predicted means; entry_mask: N x V, 1 where an entry was masked; masked_cells:
    indices of the cells with a masked entry; gene_mask: V bool, the genes measured for this sentence.
    Term A: all measured genes of the masked cells, means rescaled to the library size. Term B (``dae``): the
    masked entries only, means rescaled to the masked counts; unmasked entries contribute exactly 0.
    """
    x, mean, m = x[masked_cells], mean[masked_cells], entry_mask[masked_cells].to(x.dtype)
    theta = theta.expand_as(mean)
    if gene_mask is not None:
        x_a, mean_a, theta_a = x[:, gene_mask], mean[:, gene_mask], theta[:, gene_mask]
        m = m * gene_mask.to(x.dtype)
    else:
        x_a, mean_a, theta_a = x, mean, theta
    loss = nb_nll(x_a, _rescaled(mean_a, x_a), theta_a).sum(1)
    if dae:
        x_b, mean_b = x * m, mean * m
        loss = loss + nb_nll(x_b, _rescaled(mean_b, x_b), theta * m).sum(1)
    return loss.mean()

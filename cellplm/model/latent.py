"""Latent layers: the Gaussian-mixture VAE of pretraining and the plain linear latent of fine-tuning.

Both sit at index 1 of ``latent.layers`` (index 0 is a parameter-free placeholder in the released weights).

GMVAE, with h the normalised encoder output (N x D), K clusters and L latent dimensions:
    q(y|h)   = Cat(softmax(W_y h)), sampled with Gumbel-softmax (τ = 1)
    q(z|h,y) = N(μ(h,y), σ²(h,y)),  [h; y] -> Linear(D+K, 512) -> ReLU -> (Linear -> μ, Linear -> softplus -> σ²)
    p(z|y)   = N(Linear(y), softplus(Linear(y)))
    loss     = w_li · max(λ, E[log q(z|h,y) - log p(z|y)]) + w_en · max(λ, KL(q(y|h) || Uniform(K)))
``max`` is taken on the scalar batch means ("free bits"): a term under λ is a constant without gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

QZ_HIDDEN = 512  # fixed in the released model, whatever the latent width


@dataclass
class LatentOutput:
    z: torch.Tensor  # N x L, the cell embedding
    loss: torch.Tensor  # scalar latent loss (0 for the linear latent)
    cluster: torch.Tensor | None = None  # N, the mixture component chosen for each cell (GMVAE)


def log_normal(x: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, var + 1e-8), summed over the last dimension."""
    var = var + 1e-8
    return -0.5 * torch.sum(math.log(2.0 * math.pi) + torch.log(var) + (x - mu) ** 2 / var, dim=-1)


class GumbelSoftmax(nn.Module):
    """q(y|h): cluster logits and a (relaxed) one-hot sample."""

    def __init__(self, dim: int, n_clusters: int):
        super().__init__()
        self.logits = nn.Linear(dim, n_clusters)

    def forward(self, h: torch.Tensor, hard: bool, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(h)
        if not sample:  # deterministic: the most probable cluster
            return logits, F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        gumbel = -torch.log(-torch.log(torch.rand_like(logits) + 1e-20) + 1e-20)
        y = torch.softmax(logits + gumbel, dim=-1)
        if hard:  # straight-through one-hot
            y_hard = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
            y = (y_hard - y).detach() + y
        return logits, y


class Gaussian(nn.Module):
    """A diagonal Gaussian head: mean and softplus variance."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.mu = nn.Linear(dim, out)
        self.var = nn.Linear(dim, out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(x), F.softplus(self.var(x))


class GMVAEInference(nn.Module):
    def __init__(self, dim: int, latent_dim: int, n_clusters: int):
        super().__init__()
        self.inference_qyx = nn.ModuleList([GumbelSoftmax(dim, n_clusters)])
        self.inference_qzyx = nn.ModuleList(
            [nn.Linear(dim + n_clusters, QZ_HIDDEN), nn.ReLU(), Gaussian(QZ_HIDDEN, latent_dim)]
        )
        self.y_mu = nn.Linear(n_clusters, latent_dim)
        self.y_var = nn.Linear(n_clusters, latent_dim)


class GMVAELatent(nn.Module):
    def __init__(self, dim: int, latent_dim: int, n_clusters: int, w_li: float, w_en: float, lamda: float):
        super().__init__()
        self.inference = GMVAEInference(dim, latent_dim, n_clusters)
        self.w_li, self.w_en, self.lamda = w_li, w_en, lamda
        self.n_clusters = n_clusters

    def forward(self, h: torch.Tensor, sample_cluster: bool | None = None, with_loss: bool = True) -> LatentOutput:
        """Train mode: soft Gumbel y and a sampled z. Eval mode: hard y and z = μ.

        ``sample_cluster`` (eval only): False (default) takes the most probable cluster, so embeddings are
        deterministic; True draws y from the Gumbel-softmax as upstream does, so repeated calls differ.
        """
        net = self.inference
        if self.training:
            logits, y = net.inference_qyx[0](h, hard=False, sample=True)
        else:
            logits, y = net.inference_qyx[0](h, hard=True, sample=bool(sample_cluster))
        hidden = net.inference_qzyx[1](net.inference_qzyx[0](torch.cat([h, y], dim=-1)))
        mu, var = net.inference_qzyx[2](hidden)
        z = mu + torch.sqrt(var + 1e-10) * torch.randn_like(mu) if self.training else mu
        cluster = y.argmax(-1)
        if not with_loss:
            return LatentOutput(z=z, loss=z.new_zeros(()), cluster=cluster)
        y_mu, y_var = net.y_mu(y), F.softplus(net.y_var(y))
        return LatentOutput(z=z, loss=self.loss(z, mu, var, y_mu, y_var, logits), cluster=cluster)

    def loss(self, z, mu, var, y_mu, y_var, logits) -> torch.Tensor:
        kl_z = (log_normal(z, mu, var) - log_normal(z, y_mu, y_var)).mean()
        log_q = torch.log_softmax(logits, dim=-1)
        kl_y = (torch.exp(log_q) * log_q).sum(-1).mean() + math.log(self.n_clusters)  # KL(q(y|h) || uniform)
        return self.w_li * _floor(kl_z, self.lamda) + self.w_en * _floor(kl_y, self.lamda)


def _floor(term: torch.Tensor, floor: float) -> torch.Tensor:
    """max(floor, term) on a scalar: below the floor the term is the constant ``floor`` (zero gradient)."""
    return torch.clamp(term, min=floor)


class LinearLatent(nn.Module):
    """The fine-tuning latent: one fresh Linear(D, L) (``lat_2lat.0``), no regulariser."""

    def __init__(self, dim: int, latent_dim: int):
        super().__init__()
        self.lat_2lat = nn.Sequential(nn.Linear(dim, latent_dim))

    def forward(self, h: torch.Tensor, sample_cluster: bool | None = None, with_loss: bool = True) -> LatentOutput:
        return LatentOutput(z=self.lat_2lat(h), loss=h.new_zeros(()))


class LatentModel(nn.Module):
    """``latent.layers``: [placeholder, GMVAE or linear latent]."""

    def __init__(self, kind: str, dim: int, latent_dim: int, n_clusters: int, w_li: float, w_en: float, lamda: float):
        super().__init__()
        layer = (
            GMVAELatent(dim, latent_dim, n_clusters, w_li, w_en, lamda)
            if kind == "gmvae"
            else LinearLatent(dim, latent_dim)
        )
        self.layers = nn.ModuleList([nn.Identity(), layer])

    def forward(self, h: torch.Tensor, sample_cluster: bool | None = None, with_loss: bool = True) -> LatentOutput:
        return self.layers[1](h, sample_cluster=sample_cluster, with_loss=with_loss)

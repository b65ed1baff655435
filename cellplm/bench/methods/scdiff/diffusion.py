"""scDiff's Gaussian diffusion process: the noise schedule, the forward process ``q(x_t | x_0)`` and its posterior.

Written from ``ScDiff.register_schedule``, ``q_sample`` and ``q_posterior`` in ``scdiff/model.py`` and
``make_beta_schedule`` in ``scdiff/utils/diffusion.py`` (OmicsML/scDiff; the DDPM formulas of Ho et al. 2020 as the
latent-diffusion code writes them). scDiff's "linear" schedule is latent diffusion's: the betas are the squares of
evenly spaced values from sqrt(linear_start) to sqrt(linear_end), computed in float64 and stored as float32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def linear_betas(timesteps: int, linear_start: float = 1e-4, linear_end: float = 2e-2) -> np.ndarray:
    """scDiff's ``make_beta_schedule("linear", ...)``: ``linspace(sqrt(start), sqrt(end), T) ** 2`` (float64)."""
    return np.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=np.float64) ** 2


class GaussianDiffusion(nn.Module):
    """The fixed schedule of a DDPM with ``timesteps`` steps, as buffers (they follow the model's device).

    ``alpha_bar_t = prod_{s <= t} (1 - beta_s)``;
    ``q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)``;
    posterior ``q(x_{t-1} | x_t, x_0)``: mean ``coef1_t x_0 + coef2_t x_t`` with
    ``coef1_t = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)``,
    ``coef2_t = (1 - alpha_bar_{t-1}) sqrt(1 - beta_t) / (1 - alpha_bar_t)``, variance
    ``beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)`` (``alpha_bar_{-1} = 1``; scDiff's ``v_posterior`` is 0).
    """

    def __init__(self, timesteps: int = 1000, linear_start: float = 1e-4, linear_end: float = 2e-2):
        super().__init__()
        betas = linear_betas(timesteps, linear_start, linear_end)
        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
        }
        for name, values in buffers.items():
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32))
        self.timesteps = timesteps

    @staticmethod
    def _at(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``values[t]`` shaped to broadcast over ``x`` (t: (B,) or (1,) step indices)."""
        return values.gather(-1, t).reshape(len(t), *([1] * (x.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """A draw of ``x_t ~ q(x_t | x_0)``: ``sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise``."""
        noise = torch.randn_like(x0) if noise is None else noise
        return (
            self._at(self.sqrt_alphas_cumprod, t, x0) * x0 + self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)``."""
        mean = self._at(self.posterior_mean_coef1, t, xt) * x0 + self._at(self.posterior_mean_coef2, t, xt) * xt
        return mean, self._at(self.posterior_variance, t, xt), self._at(self.posterior_log_variance_clipped, t, xt)


def x0_loss(pred: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """scDiff's training loss under its annotation config (``parameterization: x0``, ``loss_type: l2``,
    ``loss_strategy: recon_full``, ``balance_loss: false``, ``original_elbo_weight`` 0): the squared error of the
    predicted clean expression over every gene, averaged over genes, then over cells (``p_losses``)."""
    return ((pred - x0) ** 2).mean(dim=1).mean()

"""The probabilistic, permutation-invariant context encoder q_φ(z | c) (PEARL, Rakelly et al. 2019;
MBML Sec. 2.2).

An MLP maps every transition row [s, a, s', r] of a context set to one Gaussian factor N(μ_n, σ²_n) over the
task embedding z; the posterior is their product, N(μ, σ²) with 1/σ² = Σ_n 1/σ²_n and μ = σ² Σ_n μ_n/σ²_n.
A product is invariant to the order of the rows, and each added row can only raise the precision, so the
posterior narrows as evidence accumulates.

Sets of different sizes share one batch: rows are [..., N, D] with a bool mask [..., N] (True = a real row);
padding rows (any finite values) are ignored. Because the factors are per row, one encoder pass can serve many
subsets of the same rows: encode once with `ContextEncoder.factors`, then combine with different masks in
`product_of_gaussians` (MBML's triplet loss does this). A set with no rows has the prior N(0, I) as posterior.
As in PEARL the prior is not itself a factor of the product, and σ²_n is clamped at `MIN_VARIANCE`.

Used by MBML and, later, by Contextual BCQ and Batch PEARL.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mtrl.nn import mlp

MIN_VARIANCE = 1e-7


def context_dim(obs_dim: int, act_dim: int) -> int:
    """Width of one context row [s, a, s', r]."""
    return 2 * obs_dim + act_dim + 1


def context_rows(obs, act, next_obs, rew):
    """Rows [s, a, s', r] of width 2·obs + act + 1 from [..., obs], [..., act], [..., obs] and rewards [...].

    Works on NumPy arrays (data loaders, evaluation rollouts) and on tensors alike.
    """
    if isinstance(obs, torch.Tensor):
        return torch.cat([obs, act, next_obs, rew.unsqueeze(-1)], -1)
    return np.concatenate([obs, act, next_obs, np.expand_dims(rew, -1)], -1).astype(np.float32, copy=False)


def product_of_gaussians(
    mean: torch.Tensor, var: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine per-row factors [..., N, z] into the posterior (mean, var) [..., z].

    `mask` [..., N] selects the rows to combine; its leading dimensions broadcast against the factors', so
    factors [K, 1, N, z] with a mask [K, M, N] give M subsets of each of K sets. No selected row → N(0, I).
    """
    precision = var.reciprocal()
    weighted = precision * mean
    if mask is not None:
        keep = mask.unsqueeze(-1)
        precision = torch.where(keep, precision, 0.0)
        weighted = torch.where(keep, weighted, 0.0)
    precision, weighted = precision.sum(-2), weighted.sum(-2)
    # Every real row adds a positive precision, so 0 means an empty set: precision 1, mean 0 is the prior.
    precision = torch.where(precision > 0, precision, 1.0)
    var = precision.reciprocal()
    return weighted * var, var


def gaussian_kl(
    mean_p: torch.Tensor, var_p: torch.Tensor, mean_q: torch.Tensor, var_q: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_p, var_p) ‖ N(mean_q, var_q)) between diagonal Gaussians, summed over the last axis."""
    return 0.5 * (var_q.log() - var_p.log() + (var_p + (mean_p - mean_q) ** 2) / var_q - 1.0).sum(-1)


def kl_to_standard_normal(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, var) ‖ N(0, I)), summed over the last axis."""
    return gaussian_kl(mean, var, torch.zeros_like(mean), torch.ones_like(var))


def rsample(mean: torch.Tensor, var: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A reparameterised draw z = mean + σ·ε, ε ~ N(0, I): gradients flow into mean and var."""
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + var.sqrt() * noise


class ContextEncoder(nn.Module):
    """q_φ: an MLP from one row [s, a, s', r] to a Gaussian factor (μ, softplus σ²), combined by product."""

    def __init__(self, row_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200, 200)):
        super().__init__()
        self.net = mlp(row_dim, hidden, 2 * z_dim)
        self.row_dim, self.z_dim = row_dim, z_dim

    def factors(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row factors (mean, var), each [..., N, z], for rows [..., N, D]."""
        mean, raw_var = self.net(rows).chunk(2, -1)
        return mean, F.softplus(raw_var).clamp_min(MIN_VARIANCE)

    def forward(
        self, rows: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, var) [..., z] of the sets rows [..., N, D] (masked by [..., N] if given)."""
        return product_of_gaussians(*self.factors(rows), mask)


class InfersTasks:
    """Acting-time task inference (Alg. 5) for agents that have an `encoder` (ContextEncoder), a `device` and
    their own `generator`: MBML, Contextual BCQ and Batch PEARL share it."""

    encoder: ContextEncoder
    device: torch.device
    generator: torch.Generator

    def _posterior(self, context) -> tuple[torch.Tensor, torch.Tensor]:
        row_dim = self.encoder.row_dim
        rows = np.zeros((0, row_dim), np.float32) if context is None else context
        rows = torch.as_tensor(rows, dtype=torch.float32, device=self.device)
        return self.encoder(rows.reshape(-1, row_dim))

    @torch.inference_mode()
    def posterior(self, context=None) -> tuple[np.ndarray, np.ndarray]:
        """q_φ(z | c) as (mean, var) [z_dim] for context rows [N, D]; None or no rows: the prior N(0, I)."""
        mean, var = self._posterior(context)
        return mean.cpu().numpy(), var.cpu().numpy()

    @torch.inference_mode()
    def sample_z(self, context=None, generator: torch.Generator | None = None) -> np.ndarray:
        """z ~ q_φ(z | c) [z_dim]; `generator` (on the agent's device) defaults to the agent's own."""
        return rsample(*self._posterior(context), self.generator if generator is None else generator).cpu().numpy()

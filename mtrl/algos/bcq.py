"""Batch-Constrained deep Q-learning (Fujimoto, Meger & Precup, 2019): the per-task learner of MBML.

The three learned functions of BCQ, as MBML names them (seed 000, Sec. 2.1, Eq. 1):
G (a conditional VAE that proposes actions seen in the batch), ξ (a bounded perturbation of a candidate) and
twin Q critics. The distilled networks of MBML regress onto these, so their interfaces are kept small.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtrl.nn import mlp

VAE_LOG_STD_MIN, VAE_LOG_STD_MAX = -4.0, 15.0
DECODE_LATENT_CLIP = 0.5


class Perturbation(nn.Module):
    """ξ(s, a): returns the corrected action a + Φ·max_action·tanh(f(s, a)), clipped to the action bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], max_action: float, phi: float):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden, act_dim)
        self.max_action, self.phi = max_action, phi

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        correction = self.phi * self.max_action * torch.tanh(self.net(torch.cat([obs, action], -1)))
        return (action + correction).clamp(-self.max_action, self.max_action)


class TwinCritic(nn.Module):
    """Two independent Q(s, a) networks."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.q1_net = mlp(obs_dim + act_dim, hidden, 1)
        self.q2_net = mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], -1)
        return self.q1_net(x).squeeze(-1), self.q2_net(x).squeeze(-1)

    def q1(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q1_net(torch.cat([obs, action], -1)).squeeze(-1)


class ConditionalVAE(nn.Module):
    """G: encoder (s, a) → N(μ, σ) over a latent of size 2·act_dim, decoder (s, latent) → action in bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], max_action: float, latent_dim: int):
        super().__init__()
        self.encoder = mlp(obs_dim + act_dim, hidden, 2 * latent_dim)
        self.decoder = mlp(obs_dim + latent_dim, hidden, act_dim)
        self.max_action, self.latent_dim = max_action, latent_dim

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, latent mean and latent std (for the VAE loss)."""
        mean, log_std = self.encoder(torch.cat([obs, action], -1)).chunk(2, -1)
        std = log_std.clamp(VAE_LOG_STD_MIN, VAE_LOG_STD_MAX).exp()
        latent = mean + std * torch.randn_like(std)
        return self.decode(obs, latent), mean, std

    def sample_latent(self, batch_shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Latent for decoding at acting time: N(0, 1) clipped to ±0.5, as in BCQ."""
        noise = torch.randn(*batch_shape, self.latent_dim, device=device)
        return noise.clamp(-DECODE_LATENT_CLIP, DECODE_LATENT_CLIP)

    def decode(self, obs: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        if latent is None:
            latent = self.sample_latent(obs.shape[:-1], obs.device)
        return self.max_action * torch.tanh(self.decoder(torch.cat([obs, latent], -1)))

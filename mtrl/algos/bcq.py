"""Batch-Constrained deep Q-learning (Fujimoto, Meger & Precup, 2019): the per-task learner of MBML.

The three learned functions of BCQ, as MBML names them (seed 000, Sec. 2.1, Eq. 1):
G (a conditional VAE that proposes actions seen in the batch), ξ (a bounded perturbation of a candidate) and
twin Q critics. The distilled networks of MBML regress onto these, so their interfaces are kept small.

One `BCQ.update` follows Alg. 1 of the BCQ paper: a VAE step (reconstruction + 0.5·KL), a critic step
towards the soft clipped double-Q target y = r + γ(1 − d)·max_i [λ min_j Q'_j(s', ã_i) + (1 − λ) max_j
Q'_j(s', ã_i)] over n candidates ã_i = ξ'(s', G(s')) drawn with the updated VAE and perturbed by the *target*
ξ', an actor step minimising −Q1(s, ξ(s, G(s))) against the updated critic, then Polyak updates of both
targets.

Task axis: one `BCQ` holds `tasks` independent BCQs (`mtrl.nn.TaskBatchedState`), one per training task, each
network an `EnsembleMLP` with one member per task, so a group of tasks trains with one batched matmul per layer
instead of one small kernel per task and layer. Task t's slice is exactly a single-task BCQ built with the same
seed: its own initialisation and noise (its own generator), its own data, its losses summed (never mixed) over
tasks, element-wise Adam. Metrics stay on the device, [tasks] each, so an update never waits for the host.

Speed (CPU, the reference sizes), without changing the mathematics: the VAE decodes the actor's candidates and
the target's n·B candidates in one call; no gradient flows into the VAE or the critic weights during the actor
step (the reference computes and discards both); in-place ReLUs; fused Adam and foreach Polyak updates.
All randomness (VAE noise, decoder latents) comes from the agent's generators, saved in `state_dict`, so a
resumed run repeats the uninterrupted one bit for bit (mini-batches are sampled by the caller).

Deviations and readings:
- Learning rate 3e-4 for all three networks (MBML App. C lowered it from the official 1e-3).
- Acting uses the same n = `num_candidates` candidates as the target (the paper's Alg. 1 and MBML Table 2);
  the official `select_action` draws 100.
- The KL term is averaged over batch and latent dimensions, as in the official code, not summed over the
  latent as in the VAE paper; with the 0.5 weight this is the official loss exactly.
- Latents for decoding (acting, targets, actor step) are N(0, 1) clipped to ±0.5, as in the official code.
- The loss assumes actions in [−1, 1] (every mtrl env acts there, as the official MBML envs do): it is a
  Gaussian decoder with σ² = 1/8, so on a box far smaller than that the VAE ignores its latent and decodes the
  mean action of the whole batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mtrl.nn import EnsembleMLP, TaskBatchedState, soft_update, task_adam, task_generators, task_randn

VAE_LOG_STD_MIN, VAE_LOG_STD_MAX = -4.0, 15.0
DECODE_LATENT_CLIP = 0.5
KL_WEIGHT = 0.5  # weight of the KL term in the VAE loss (official BCQ code)


@dataclass(frozen=True)
class BCQConfig:
    """Hyper-parameters of BCQ; defaults are the official implementation's, with MBML's learning rate."""

    actor_hidden: tuple[int, ...] = field(
        default=(400, 300), metadata={"help": "hidden widths of the perturbation network ξ"}
    )
    critic_hidden: tuple[int, ...] = field(
        default=(400, 300), metadata={"help": "hidden widths of each of the twin Q networks"}
    )
    vae_hidden: tuple[int, ...] = field(
        default=(750, 750), metadata={"help": "hidden widths of the VAE encoder and of its decoder"}
    )
    latent_dim: int | None = field(default=None, metadata={"min": 1, "help": "VAE latent size; None means 2·act_dim"})
    lmbda: float = field(
        default=0.75,
        metadata={
            "min": 0.0,
            "max": 1.0,
            "help": "weight λ of min over max of the twin targets (soft clipping)",
        },
    )
    phi: float = field(
        default=0.05,
        metadata={"min": 0.0, "max": 1.0, "help": "largest perturbation Φ, as a fraction of max_action"},
    )
    num_candidates: int = field(
        default=10, metadata={"min": 1, "help": "VAE candidates n per state, for the target and for acting"}
    )
    batch_size: int = field(default=100, metadata={"min": 1, "help": "transitions per mini-batch"})
    gamma: float = field(default=0.99, metadata={"min": 0.0, "max": 1.0, "help": "discount factor"})
    tau: float = field(
        default=0.005, metadata={"min": 0.0, "max": 1.0, "help": "Polyak rate of the targets (new weight)"}
    )
    lr: float = field(default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of all three networks"})


class Perturbation(nn.Module):
    """ξ(s, a): returns the corrected action a + Φ·max_action·tanh(f(s, a)), clipped to the action bounds.

    Every BCQ network has a leading task axis: `generators` (one per task) initialise one network per task,
    inputs and outputs are [tasks, ..., ·].
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], max_action: float, phi: float,
                 generators: Sequence[torch.Generator]):
        super().__init__()
        self.net = EnsembleMLP(len(generators), obs_dim + act_dim, hidden, act_dim, generators)
        self.max_action, self.phi = max_action, phi

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        correction = self.phi * self.max_action * torch.tanh(self.net(torch.cat([obs, action], -1)))
        return (action + correction).clamp(-self.max_action, self.max_action)


class TwinCritic(nn.Module):
    """Two independent Q(s, a) networks per task."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], generators: Sequence[torch.Generator]):
        super().__init__()
        self.q1_net = EnsembleMLP(len(generators), obs_dim + act_dim, hidden, 1, generators)
        self.q2_net = EnsembleMLP(len(generators), obs_dim + act_dim, hidden, 1, generators)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], -1)
        return self.q1_net(x).squeeze(-1), self.q2_net(x).squeeze(-1)

    def q1(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q1_net(torch.cat([obs, action], -1)).squeeze(-1)


class ConditionalVAE(nn.Module):
    """G: encoder (s, a) → N(μ, σ) over a latent of size 2·act_dim, decoder (s, latent) → action in bounds.

    Its noise comes from `generators` (one per task, the agent's), so it is reproducible from a checkpoint.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], max_action: float, latent_dim: int,
                 generators: Sequence[torch.Generator]):
        super().__init__()
        tasks = len(generators)
        self.encoder = EnsembleMLP(tasks, obs_dim + act_dim, hidden, 2 * latent_dim, generators)
        self.decoder = EnsembleMLP(tasks, obs_dim + latent_dim, hidden, act_dim, generators)
        self.max_action, self.latent_dim = max_action, latent_dim
        self.generators = list(generators)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, latent mean and latent std (for the VAE loss)."""
        mean, log_std = self.encoder(torch.cat([obs, action], -1)).chunk(2, -1)
        std = log_std.clamp(VAE_LOG_STD_MIN, VAE_LOG_STD_MAX).exp()
        noise = task_randn(self.generators, std.shape, std.device, std.dtype)
        return self.decode(obs, mean + std * noise), mean, std

    def sample_latent(self, batch_shape: Sequence[int], device: torch.device,
                      generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Latent for decoding: N(0, 1) clipped to ±0.5, as in BCQ. `batch_shape` [tasks, ...]; the noise comes
        from the VAE's generators unless others (one per task) are given."""
        noise = task_randn(generators or self.generators, (*batch_shape, self.latent_dim), device)
        return noise.clamp(-DECODE_LATENT_CLIP, DECODE_LATENT_CLIP)

    def decode(self, obs: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        if latent is None:
            latent = self.sample_latent(obs.shape[:-1], obs.device)
        return self.max_action * torch.tanh(self.decoder(torch.cat([obs, latent], -1)))


class BCQPolicy(TaskBatchedState):
    """The networks BCQ acts with (ξ, twin Q, G) and Eq. 1 of MBML; a frozen distillation teacher.

    `tasks` independent BCQs computed as one (`mtrl.nn.TaskBatchedState`); task t's networks are initialised
    from `seeds[t]` (default: draws from torch's global generator). Build one from a trained BCQ's
    `policy_state_dict()` with `BCQPolicy.from_policy_state` (K per-task teachers: `stack_policy_states`).
    """

    NETWORKS = ("actor", "critic", "vae")

    def __init__(self, cfg: BCQConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device | str,
                 tasks: int = 1, seeds: Sequence[int] | None = None):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.tasks = tasks
        self.device = torch.device(device)
        self.generators = task_generators(self.device, tasks, seeds)
        latent_dim = 2 * act_dim if cfg.latent_dim is None else cfg.latent_dim
        max_action, gens = self.max_action, self.generators
        self.actor = Perturbation(obs_dim, act_dim, cfg.actor_hidden, max_action, cfg.phi, gens).to(self.device)
        self.critic = TwinCritic(obs_dim, act_dim, cfg.critic_hidden, gens).to(self.device)
        self.vae = ConditionalVAE(obs_dim, act_dim, cfg.vae_hidden, max_action, latent_dim, gens).to(self.device)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, generators: Sequence[torch.Generator] | None = None) -> np.ndarray:
        """Eq. 1: of n VAE candidates, each perturbed by ξ, the one with the highest Q1.

        `obs` is [tasks, obs_dim] (one observation per task) or [tasks, N, obs_dim]; the actions have the
        matching shape. The candidates' latents come from `generators` (one per task; default the agent's).
        """
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        states = x.unsqueeze(-2).expand(*x.shape[:-1], self.cfg.num_candidates, self.obs_dim)
        latent = self.vae.sample_latent(states.shape[:-1], self.device, generators)
        candidates = self.actor(states, self.vae.decode(states, latent))
        best = self.critic.q1(states, candidates).argmax(-1)  # [...] index of the best of the n candidates
        action = candidates.gather(-2, best[..., None, None].expand(*best.shape, 1, self.act_dim)).squeeze(-2)
        return action.cpu().numpy()

    @classmethod
    def from_policy_state(cls, cfg: BCQConfig, state: dict, device: torch.device | str = "cpu") -> BCQPolicy:
        """An acting-only BCQ (frozen networks in eval mode) from `policy_state_dict()`."""
        policy = super().from_policy_state(cfg, state, device)
        for name in cls.NETWORKS:
            getattr(policy, name).requires_grad_(False).eval()
        return policy


class BCQ(BCQPolicy):
    """BCQ learner: the policy networks plus target ξ' and Q', and one Adam optimiser per network."""

    TRAINING_PARTS = ("actor_target", "critic_target", "actor_opt", "critic_opt", "vae_opt")

    def __init__(self, cfg: BCQConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device | str,
                 tasks: int = 1, seeds: Sequence[int] | None = None):
        super().__init__(cfg, obs_dim, act_dim, max_action, device, tasks, seeds)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = task_adam(self.actor.parameters(), cfg.lr)
        self.critic_opt = task_adam(self.critic.parameters(), cfg.lr)
        self.vae_opt = task_adam(self.vae.parameters(), cfg.lr)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step of the VAE, the critics and ξ of every task, then the Polyak updates.

        Batch keys, each with a leading task axis: observations, next_observations [tasks, B, obs_dim], actions
        [tasks, B, act_dim], rewards and terminals [tasks, B] (float 0/1; 1 only for a true termination, never
        for a time-limit truncation). Returns per-task metrics [tasks] on the device (no host sync).
        """
        return bcq_step(self, batch["observations"], batch["actions"], batch["rewards"],
                        batch["next_observations"], batch["terminals"])


def soft_clipped_target(rewards: torch.Tensor, terminals: torch.Tensor, next_q1: torch.Tensor, next_q2: torch.Tensor,
                        lmbda: float, gamma: float) -> torch.Tensor:
    """BCQ's critic target: y = r + γ(1 − d)·max_i [λ min_j Q'_j(s', ã_i) + (1 − λ) max_j Q'_j(s', ã_i)].

    `rewards`, `terminals` [..., B]; `next_q1`, `next_q2` [..., B, n]: the twin target critics on the n candidate
    next actions ã_i of each row. A pure function of its inputs (the arithmetic of `bcq_step`, unchanged)."""
    soft = lmbda * torch.minimum(next_q1, next_q2) + (1 - lmbda) * torch.maximum(next_q1, next_q2)
    return rewards + gamma * (1 - terminals) * soft.amax(-1)


BCQ_METRICS = ("vae_loss", "recon_loss", "kl_loss", "critic_loss", "actor_loss", "q_mean")


def bcq_step(agent, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor,
             terminals: torch.Tensor, critic_obs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """BCQ's update on [tasks, B, ·] tensors for any agent with BCQ's networks, targets, optimisers and cfg.

    Each task's losses are means over its own rows; the optimisers minimise their sum over tasks, so every task
    gets exactly the gradient it would get alone. `critic_obs` (default `obs`, same values) is what the critic
    step sees: Contextual BCQ passes [s, z] with z attached to its task encoder, so Eq. 20's loss is the
    encoder's only gradient. Returns the `BCQ_METRICS` per task, [tasks] each, detached on the device.
    """
    cfg = agent.cfg
    T, B, n = obs.shape[0], obs.shape[1], cfg.num_candidates

    # VAE: reconstruct the batch actions; the KL term keeps the latent close to N(0, 1).
    recon, mean, std = agent.vae(obs, actions)
    recon_loss = (recon - actions).pow(2).mean((1, 2))
    kl_loss = -0.5 * (1 + 2 * std.log() - mean.pow(2) - std.pow(2)).mean((1, 2))
    vae_loss = recon_loss + KL_WEIGHT * kl_loss
    agent.vae_opt.zero_grad(set_to_none=True)
    vae_loss.sum().backward()
    agent.vae_opt.step()

    with torch.no_grad():
        # One decoder pass for the actor's B candidates and the target's n·B (n per next state).
        next_states = next_obs.repeat_interleave(n, 1)
        sampled = agent.vae.decode(torch.cat([obs, next_states], 1))
        actor_candidates, next_candidates = sampled.split([B, B * n], 1)
        tq1, tq2 = agent.critic_target(next_states, agent.actor_target(next_states, next_candidates))
        y = soft_clipped_target(rewards, terminals, tq1.view(T, B, n), tq2.view(T, B, n), cfg.lmbda, cfg.gamma)

    q1, q2 = agent.critic(obs if critic_obs is None else critic_obs, actions)
    critic_loss = (q1 - y).pow(2).mean(1) + (q2 - y).pow(2).mean(1)
    agent.critic_opt.zero_grad(set_to_none=True)
    critic_loss.sum().backward()
    agent.critic_opt.step()

    # ξ climbs Q1 of the updated critic; gradients go to ξ's weights only (not to Q's, not into G).
    actor_loss = -agent.critic.q1(obs, agent.actor(obs, actor_candidates)).mean(1)
    agent.actor_opt.zero_grad(set_to_none=True)
    actor_loss.sum().backward(inputs=list(agent.actor.parameters()))
    agent.actor_opt.step()

    soft_update(agent.critic_target, agent.critic, cfg.tau)
    soft_update(agent.actor_target, agent.actor, cfg.tau)

    values = (vae_loss, recon_loss, kl_loss, critic_loss, actor_loss, q1.mean(1))
    return {name: value.detach() for name, value in zip(BCQ_METRICS, values, strict=True)}

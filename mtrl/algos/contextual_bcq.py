"""Contextual BCQ (MBML, seed 000, Sec. 5.1, App. C.2 and H.3, Alg. 7): a baseline of Fig. 4.

BCQ (`mtrl.algos.bcq`) whose four networks all take an inferred task identity z: the VAE encoder E(s, a, z)
and decoder D(s, ν, z), the perturbation model ξ(s, a, z) and the twin critics Q(s, a, z). z comes from the
probabilistic context encoder q_ψ(z | c) of PEARL (`mtrl.algos.context`), and q_ψ learns only from the value
loss of Eq. 20 (Alg. 7 line 14): no KL term, no other loss reaches it. One agent is trained directly on the
datasets of all K training tasks, with no per-task teachers and no relabelling.

The networks are BCQ's own classes fed the augmented state [s, z]: a network of BCQ on [s, z] is exactly a
z-conditioned network, so the BCQ code and its bounds (ξ's Φ, the clipped decoding latent) are reused as is.

One `update` takes a batch of all K tasks (keys in the class docstring) and makes Alg. 7's inner loop over
them: for m = 1, ..., K in order, one reparameterised z_m ~ q_ψ(z | c_m) from the current encoder, shared by
task m's N transitions (line 7), then BCQ's steps on those N rows with z_m beside s: the VAE step (Eq. 19), the
critic step towards Eq. 20's target, which also steps ψ, the ξ step (Eq. 21) against the updated critic, and the
Polyak updates of Q' and ξ'. One call is therefore K optimiser steps of every network and K Polyak updates; task
m + 1 sees the networks task m has just updated. The returned metrics are the means over the K tasks.

Choices and deviations:
- One training-loop step (`baselines.steps_per_epoch` counts them) is one pass of Alg. 7's loop over the K
  tasks, i.e. K updates of every network. Alg. 7 draws task m's batch and context inside the loop; here all K
  are drawn before it, from the same distribution (uniform over each task's own dataset).
- The official code (contextual_bcq/BCQ_plus_encoder.py) does not loop: it makes one update on the K tasks'
  rows concatenated (each task its own z_m), K times fewer optimiser steps than Alg. 7. `per_task_updates:
  false` does that, for comparison with the published curves; the default follows the paper's Alg. 7.
- The VAE, ξ and the target see z_m detached: ψ learns from Eq. 20 only, as Alg. 7 prescribes. (In the
  official code the VAE loss reaches q_ψ too: its gradient and the critic's accumulate before ψ's step.)
- Sizes (App. C.2): Q, D and ξ as MBML's Q_D, G_D, ξ_D (9, 7 and 8 × 1024), the VAE encoder as the decoder,
  q_ψ as PEARL's (3 × 200), z of width 20 (MBML Table 2), context sets of 128 rows. The rest are BCQ's defaults
  (λ = 0.75, Φ = 0.05, n = 10, N = 100, τ = 0.005), with MBML's learning rate 3e-4 for every network.
- The VAE loss is BCQ's official one (reconstruction MSE + 0.5 · KL averaged), as in `mtrl.algos.bcq`; Eq. 19
  writes an unweighted sum.
- Acting is Eq. 1 with z: of `num_candidates` perturbed candidates from G(s, z), the one with the highest
  Q1(s, a, z). `sample_z` draws z from the posterior over the rows seen so far (the prior when there are none).
- All randomness (z draws, VAE noise, decoder latents) comes from the agent's own `torch.Generator`, seeded
  from torch's global generator and saved in `state_dict`, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from mtrl.algos.bcq import ConditionalVAE, Perturbation, TwinCritic, bcq_step
from mtrl.algos.context import ContextEncoder, InfersTasks, context_dim, rsample
from mtrl.nn import AgentState, adam, seeded_generator


@dataclass(frozen=True)
class ContextualBCQConfig:
    """Hyper-parameters of Contextual BCQ; defaults are the paper's (App. C.2) and BCQ's."""

    z_dim: int = field(default=20, metadata={"min": 1, "max": 4096, "help": "task identity width (MBML Table 2)"})
    encoder_hidden: tuple[int, ...] = field(
        default=(200, 200, 200), metadata={"help": "hidden widths of the context encoder q_psi (PEARL, Table 4)"}
    )
    critic_hidden: tuple[int, ...] = field(
        default=(1024,) * 9, metadata={"help": "hidden widths of each twin Q(s, a, z) (as Q_D)"}
    )
    vae_hidden: tuple[int, ...] = field(
        default=(1024,) * 7, metadata={"help": "hidden widths of the VAE decoder D(s, nu, z) and encoder (as G_D)"}
    )
    actor_hidden: tuple[int, ...] = field(
        default=(1024,) * 8, metadata={"help": "hidden widths of the perturbation model xi(s, a, z) (as xi_D)"}
    )
    latent_dim: int | None = field(default=None, metadata={"min": 1, "help": "VAE latent size; None means 2·act_dim"})
    context_size: int = field(
        default=128, metadata={"min": 1, "max": 1_000_000, "help": "context rows per task and update (App. C.2)"}
    )
    batch_size: int = field(
        default=100, metadata={"min": 1, "max": 1_000_000, "help": "training transitions per task and update"}
    )
    lmbda: float = field(
        default=0.75, metadata={"min": 0.0, "max": 1.0, "help": "weight of min over max of the twin targets (Eq. 20)"}
    )
    phi: float = field(
        default=0.05, metadata={"min": 0.0, "max": 1.0, "help": "largest perturbation Phi, as a fraction of max_action"}
    )
    num_candidates: int = field(
        default=10, metadata={"min": 1, "max": 10_000, "help": "VAE candidates n per state, for the target and acting"}
    )
    gamma: float = field(default=0.99, metadata={"min": 0.0, "max": 1.0, "help": "discount factor"})
    tau: float = field(
        default=0.005, metadata={"min": 0.0, "max": 1.0, "help": "Polyak rate of the targets (new weight)"}
    )
    lr: float = field(default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of every network"})
    per_task_updates: bool = field(
        default=True, metadata={"help": "Alg. 7: one update per task, K per training step; false: one update on the "
                                        "K tasks' rows together (the official code; K times fewer optimiser steps)"}
    )


class ContextualBCQ(InfersTasks, AgentState):
    """The Contextual BCQ learner and multi-task policy.

    `update(batch)` takes float32 tensors on `device`, with D = 2·obs_dim + act_dim + 1 (rows [s, a, s', r],
    `mtrl.algos.context.context_rows`):
      observations, next_observations [K, batch_size, obs_dim]; actions [K, batch_size, act_dim]
      rewards, terminals [K, batch_size] (terminals 0/1, 1 only for a true termination)
      context [K, context_size, D]: c_m, drawn from the same task's dataset
    """

    NETWORKS = ("encoder", "actor", "critic", "vae")
    TRAINING_PARTS = ("actor_target", "critic_target", "actor_opt", "critic_opt", "vae_opt")

    def __init__(self, cfg: ContextualBCQConfig, obs_dim: int, act_dim: int, max_action: float,
                 device: torch.device | str):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.device = torch.device(device)
        self.generator = seeded_generator(self.device)
        self.context_dim = context_dim(obs_dim, act_dim)
        state_dim = obs_dim + cfg.z_dim  # every BCQ network sees [s, z]
        latent_dim = 2 * act_dim if cfg.latent_dim is None else cfg.latent_dim
        self.encoder = ContextEncoder(self.context_dim, cfg.z_dim, cfg.encoder_hidden).to(self.device)
        # BCQ's networks with a task axis of 1: one network for every task, told apart by z.
        gens = [self.generator]
        self.actor = Perturbation(state_dim, act_dim, cfg.actor_hidden, self.max_action, cfg.phi, gens)
        self.critic = TwinCritic(state_dim, act_dim, cfg.critic_hidden, gens)
        self.vae = ConditionalVAE(state_dim, act_dim, cfg.vae_hidden, self.max_action, latent_dim, gens)
        for net in (self.actor, self.critic, self.vae):
            net.to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), cfg.lr)
        # Eq. 20's loss trains the critics θ and the task inference module ψ (Alg. 7 lines 12 and 14).
        self.critic_opt = adam([*self.critic.parameters(), *self.encoder.parameters()], cfg.lr)
        self.vae_opt = adam(self.vae.parameters(), cfg.lr)

    # ---------------------------------------------------------------- learning
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Alg. 7's loop over the K tasks: per task, one step of the VAE, of the critics and q_ψ, and of ξ, then
        the Polyak updates (K of each per call); float metrics averaged over the tasks. With
        `per_task_updates` off, one such step on the K tasks' rows together."""
        if not self.cfg.per_task_updates:
            return self._step(batch)
        k = batch["observations"].shape[0]
        per_task = [self._step({key: value[m:m + 1] for key, value in batch.items()}) for m in range(k)]
        return {key: sum(metrics[key] for metrics in per_task) / k for key in per_task[0]}

    def _step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One step of every network on the rows of the batch's tasks [K', N, ·] together."""
        k, b = batch["observations"].shape[:2]
        # Alg. 7 line 7: one reparameterised z_m per task, shared by that task's transitions.
        z = rsample(*self.encoder(batch["context"]), self.generator)[:, None].expand(k, b, -1)
        # [1, K'·N, obs + z]: all tasks' rows on BCQ's task axis of 1; z is ψ's only gradient path
        state = torch.cat([batch["observations"], z], -1).flatten(0, 1)[None]
        next_state = torch.cat([batch["next_observations"], z.detach()], -1).flatten(0, 1)[None]
        # Eq. 19-21 are BCQ's steps on [s, z]; only the critic step (Eq. 20) sees z attached to ψ.
        metrics = bcq_step(self, state.detach(), batch["actions"].flatten(0, 1)[None], batch["rewards"].flatten()[None],
                           next_state, batch["terminals"].flatten()[None], critic_obs=state)
        values = torch.cat(list(metrics.values())).tolist()  # one device sync
        return dict(zip(metrics, values, strict=True))

    # ---------------------------------------------------------------- acting
    @torch.inference_mode()
    def act(self, obs, z, generator: torch.Generator | None = None) -> np.ndarray:
        """Eq. 1 given z, for one observation [obs_dim] or a batch [B, obs_dim] with z [z_dim] or [B, z_dim]."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        s = obs_t.reshape(-1, self.obs_dim)
        z_t = torch.as_tensor(z, dtype=torch.float32, device=self.device).reshape(-1, self.cfg.z_dim)
        state = torch.cat([s, z_t.expand(len(s), -1)], -1)[None, :, None].expand(1, -1, self.cfg.num_candidates, -1)
        generator = self.generator if generator is None else generator
        latent = self.vae.sample_latent(state.shape[:-1], self.device, [generator])
        candidates = self.actor(state, self.vae.decode(state, latent))[0]  # [B, n, act]
        best = self.critic.q1(state[0:1], candidates[None])[0].argmax(-1)
        chosen = candidates[torch.arange(len(s), device=self.device), best]
        return chosen.reshape(*obs_t.shape[:-1], self.act_dim).cpu().numpy()

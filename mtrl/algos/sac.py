"""Soft Actor-Critic with automatic entropy tuning (Haarnoja et al., 2018), and MBML's variant of it (App. J).

Plain SAC collects the per-task datasets of MBML; the same class with the App. J options switched on is the
SAC that starts from the multi-task policy on an unseen task (Alg. 9), and its J.2 baseline:

- `identical_critic_init`: both critics start from the same weights (Alg. 9 line 1 initialises both with Q_D).
- `separate_critic_batches`: critic i learns from its own mini-batch B_i, the actor from B_2 (Alg. 9, 10-15);
  `update` then takes two batches, and `SAC.batches_per_update` tells the caller how many to sample.
- `target_policy`: a Polyak-averaged copy of the actor (rate `policy_tau`) draws the next actions of the
  critic target ("target policy smoothing", Sec. 5.3).
- `damped_policy` (with `target_policy`): after every update the target policy is copied back into the
  actor, as the official MBML code does in sac-init, so each policy step moves the actor only `policy_tau`
  of the way from where it was (the initialised policy is not forgotten after a few steps).
- `critic_condition`: a fixed task embedding z appended to every critic input, Q(s, a, z), so the critics can
  be loaded from the distilled Q_D with `init_critics_from` (the actor never sees z).

One `update` is one gradient step of the critics, then of the actor (against the just-updated critics), then
of the temperature α, then the Polyak updates, as in the reference implementations (softlearning, rlkit,
CleanRL). The twin critics are one 2-member `EnsembleMLP`: both Q values come from one batched forward and
one backward. All sampling uses the agent's own `torch.Generator` (seeded from torch's global generator at
construction), whose state is part of `state_dict`, so a resumed run repeats an uninterrupted one bit for bit.

Deviations and readings of the paper:
- The critic loss is the plain mean squared TD error of each critic (Alg. 9 line 13), summed over the two;
  softlearning halves it, which Adam's scale invariance makes (almost) immaterial.
- Alg. 9 line 12 draws the next action and its log-probability from the current policy π_ψ although line 16
  maintains π_ψtarg; with `target_policy` on, both come from π_ψtarg, which is what maintaining it is for.
- Alg. 9 line 16 writes ψ_targ ← τ·ψ_targ + (1 − τ)·ψ, but Table 8 calls 0.1 a "smoothing rate" beside the
  Q rate 0.005 of standard SAC, where the rate is the weight of the new parameters. Both rates here are that
  weight: target ← (1 − rate)·target + rate·online.
- Alg. 8 maximises a Gaussian likelihood of the actions; `imitate` maximises the likelihood under the actor's
  own tanh-squashed Gaussian: the Gaussian likelihood of atanh(a / max_action) plus a term free of
  parameters, so the gradients are those of Alg. 8 in the pre-tanh space that SAC goes on to train.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mtrl.nn import AgentState, EnsembleMLP, TanhGaussianActor, adam, seeded_generator, soft_update


@dataclass(frozen=True)
class SACConfig:
    """Hyper-parameters of SAC; defaults are those of the MBML reference code for data collection.

    `batch_size`, `random_steps` and `utd` shape the caller's loop (sampling, acting, how often to update);
    `SAC` itself reads the rest.
    """

    actor_hidden: tuple[int, ...] = field(
        default=(256, 256), metadata={"help": "hidden widths of the policy MLP"}
    )
    critic_hidden: tuple[int, ...] = field(
        default=(256, 256), metadata={"help": "hidden widths of each Q MLP (sac-init: those of Q_D)"}
    )
    actor_lr: float = field(
        default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of the policy"}
    )
    critic_lr: float = field(
        default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of the critics"}
    )
    alpha_lr: float = field(
        default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of the entropy temperature"}
    )
    batch_size: int = field(default=256, metadata={"min": 1, "help": "transitions per mini-batch"})
    gamma: float = field(default=0.99, metadata={"min": 0.0, "max": 1.0, "help": "discount factor"})
    tau: float = field(
        default=5e-3,
        metadata={"min": 0.0, "max": 1.0, "help": "Polyak rate of the target critics (new weight)"},
    )
    random_steps: int = field(
        default=10_000, metadata={"min": 0, "help": "initial environment steps with uniform random actions"}
    )
    utd: int = field(default=1, metadata={"min": 1, "help": "gradient steps per environment step"})
    target_entropy: float | None = field(
        default=None, metadata={"help": "entropy the temperature tuning aims at; None means -act_dim"}
    )
    init_alpha: float = field(
        default=1.0,
        metadata={
            "min": 1e-8,
            "help": "initial entropy temperature α (1.0, i.e. log α = 0, as softlearning and rlkit)",
        },
    )
    separate_critic_batches: bool = field(
        default=False, metadata={"help": "train the two critics on different mini-batches (MBML App. J)"}
    )
    identical_critic_init: bool = field(
        default=False, metadata={"help": "initialise the two critics with the same weights (MBML App. J)"}
    )
    target_policy: bool = field(
        default=False,
        metadata={"help": "draw next actions from a Polyak-averaged target policy (MBML App. J)"},
    )
    policy_tau: float = field(
        default=0.1,
        metadata={"min": 0.0, "max": 1.0, "help": "Polyak rate of the target policy (new weight)"},
    )
    damped_policy: bool = field(
        default=False,
        metadata={"help": "copy the target policy back into the actor after every update (reference sac-init; "
                          "needs target_policy)"},
    )


class SAC(AgentState):
    """SAC agent: a tanh-Gaussian actor, twin critics with target copies, and a learned temperature α.

    Checkpoints (`AgentState`): the actor is what acting needs; a resume also needs the critics, their targets,
    the target policy (with `target_policy`), log α, the three optimisers and the generator.
    """

    NETWORKS = ("actor",)
    TRAINING_PARTS = ("critic", "critic_target", "log_alpha", "actor_opt", "critic_opt", "alpha_opt", "actor_target")

    def __init__(
        self,
        cfg: SACConfig,
        obs_dim: int,
        act_dim: int,
        max_action: float,
        device: torch.device | str,
        critic_condition: torch.Tensor | None = None,
    ):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.device = torch.device(device)
        self.generator = seeded_generator(self.device)
        if cfg.damped_policy and not cfg.target_policy:
            raise ValueError("SAC: damped_policy copies the target policy into the actor; set target_policy too")
        if critic_condition is not None and critic_condition.dim() != 1:
            raise ValueError(f"critic_condition must be 1-D, got shape {tuple(critic_condition.shape)}")
        # Detached: z is a fixed input here, no gradient may flow back into the encoder that inferred it.
        self.condition = (
            None if critic_condition is None else critic_condition.detach().to(self.device, torch.float32)
        )
        cond_dim = 0 if self.condition is None else self.condition.numel()

        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.actor_hidden, self.max_action).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False) if cfg.target_policy else None
        self.critic = EnsembleMLP(2, obs_dim + act_dim + cond_dim, cfg.critic_hidden, 1).to(self.device)
        if cfg.identical_critic_init:
            with torch.no_grad():
                for p in self.critic.parameters():
                    p[1] = p[0]
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy

        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr)
        self.alpha_opt = adam([self.log_alpha], cfg.alpha_lr)

    @property
    def batches_per_update(self) -> int:
        """How many independently sampled mini-batches `update` takes (2 with `separate_critic_batches`)."""
        return 2 if self.cfg.separate_critic_batches else 1

    # ---------------------------------------------------------------- networks
    def _critic_input(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[s, a] or [s, a, z]: the input order of the distilled critic Q_D."""
        if self.condition is None:
            return torch.cat([obs, action], -1)
        return torch.cat([obs, action, self.condition.expand(*obs.shape[:-1], -1)], -1)

    # ---------------------------------------------------------------- learning
    def update(
        self, batch: dict[str, torch.Tensor], batch2: dict[str, torch.Tensor] | None = None
    ) -> dict[str, float]:
        """One gradient step of every network; returns metrics as floats.

        Batch keys: observations, actions, rewards, next_observations, terminals (float 0/1; 1 only for a true
        termination, never for a time-limit truncation). With `separate_critic_batches`, critic i learns from
        batch i and the actor and α from `batch2` (Alg. 9); otherwise `batch2` must be None.
        """
        if (batch2 is not None) != self.cfg.separate_critic_batches:
            raise ValueError(f"SAC.update takes {self.batches_per_update} batch(es) with this config")
        batches = [batch] if batch2 is None else [batch, batch2]
        n = len(batches)
        obs, actions, rewards, next_obs, terminals = (
            torch.stack([b[k] for b in batches])
            for k in ("observations", "actions", "rewards", "next_observations", "terminals")
        )  # [n, B, ...]
        alpha = self.log_alpha.detach().exp()

        # Critics: y = r + γ(1 − d)(min_j Q'_j(s', ã') − α log π(ã'|s')), ã' from the (target) policy.
        with torch.no_grad():
            next_actor = self.actor if self.actor_target is None else self.actor_target
            next_actions, next_log_prob = next_actor(next_obs, generator=self.generator)
            target_in = self._critic_input(next_obs, next_actions).flatten(0, 1)  # both critics see all n·B
            next_q = self.critic_target(target_in).squeeze(-1).min(0).values.view(n, -1)
            not_done = 1.0 - terminals.view(n, -1)
            y = rewards.view(n, -1) + self.cfg.gamma * not_done * (next_q - alpha * next_log_prob)
        critic_in = self._critic_input(obs, actions)  # [n, B, in]: critic i gets batch i (or the one batch)
        q = self.critic(critic_in[0] if n == 1 else critic_in).squeeze(-1)  # [2, B]
        critic_losses = (q - y).pow(2).mean(1)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_losses.sum().backward()
        self.critic_opt.step()

        # Actor, against the updated critics; their weights are frozen so no gradient is computed for them.
        pi_obs = obs[-1]
        pi_actions, log_prob = self.actor(pi_obs, generator=self.generator)  # all noise from our generator
        self.critic.requires_grad_(False)
        q_pi = self.critic(self._critic_input(pi_obs, pi_actions)).squeeze(-1).min(0).values
        self.critic.requires_grad_(True)
        actor_loss = (alpha * log_prob - q_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # Temperature: raise α when the policy's entropy −log π is below the target, lower it when above.
        log_prob = log_prob.detach()
        alpha_loss = -(self.log_alpha * (log_prob + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        soft_update(self.critic_target, self.critic, self.cfg.tau)
        if self.actor_target is not None:
            soft_update(self.actor_target, self.actor, self.cfg.policy_tau)
            if self.cfg.damped_policy:
                self.actor.load_state_dict(self.actor_target.state_dict())

        names = ("q1_loss", "q2_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean")
        values = [
            *critic_losses.detach(),
            actor_loss.detach(),
            alpha_loss.detach(),
            alpha,
            -log_prob.mean(),
            q.detach().mean(),
        ]
        return dict(zip(names, torch.stack(values).tolist(), strict=True))  # one device sync for all metrics

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Action(s) in [−max_action, max_action] for one observation [obs_dim] or a batch [N, obs_dim].

        A single observation on CPU is computed on one torch thread (restored afterwards): at batch 1 the
        thread hand-off costs more than it saves.
        """
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        threads = torch.get_num_threads()
        one_thread = x.dim() == 1 and threads > 1 and self.device.type == "cpu"
        if one_thread:
            torch.set_num_threads(1)
        try:
            sample = self.actor.sample(x, self.generator, deterministic, with_log_prob=False)
            return sample.action.cpu().numpy()
        finally:
            if one_thread:
                torch.set_num_threads(threads)

    # ---------------------------------------------------------------- initialisation by MBML (Alg. 9 line 1)
    def init_actor_from(self, actor_state: dict[str, torch.Tensor]) -> None:
        """Load a `TanhGaussianActor` state (e.g. the policy fitted by `imitate`) into the actor and the
        target policy. Call before the first update: the optimiser state is not reset."""
        self.actor.load_state_dict(actor_state)
        if self.actor_target is not None:
            self.actor_target.load_state_dict(actor_state)

    @torch.no_grad()
    def init_critics_from(self, q_state: dict[str, torch.Tensor]) -> None:
        """Copy the weights of one `mtrl.nn.mlp` critic (its `state_dict()`; e.g. the distilled Q_D with input
        [s, a, z]) into both critics and both target critics. Call before the first update."""
        weights = sorted((k for k in q_state if k.endswith(".weight")), key=lambda k: int(k.split(".")[0]))
        layers = self.critic.layers
        if len(weights) != len(layers):
            raise ValueError(f"critic state has {len(weights)} linear layers, the critics have {len(layers)}")
        for key, layer in zip(weights, layers, strict=True):
            weight, bias = q_state[key], q_state[key[: -len("weight")] + "bias"]
            if tuple(weight.shape) != (layer.out_dim, layer.in_dim):
                raise ValueError(
                    f"critic state {key} has shape {tuple(weight.shape)}, "
                    f"expected {(layer.out_dim, layer.in_dim)}"
                )
            layer.weight.copy_(weight.t().expand_as(layer.weight))
            layer.bias.copy_(bias.view(1, 1, -1).expand_as(layer.bias))
        self.critic_target.load_state_dict(self.critic.state_dict())


def imitate(
    actor: TanhGaussianActor,
    observations: torch.Tensor,
    actions: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> list[float]:
    """Fit `actor` to (observation, action) pairs by maximum likelihood (MBML Alg. 8); returns the loss curve.

    Used before SAC on an unseen task: the data are the multi-task policy's 10K transitions in that task.
    Mini-batch indices come from `generator` (on the data's device), so the result is a function of its seed.
    """
    optimizer = adam(actor.parameters(), lr)
    losses = torch.empty(steps, device=observations.device)
    for step in range(steps):
        idx = torch.randint(len(observations), (batch_size,), generator=generator, device=observations.device)
        loss = -actor.log_prob(observations[idx], actions[idx]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step] = loss.detach()
    return losses.tolist()

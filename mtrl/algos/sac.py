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
- `task_ids` (with `embedding_dim`): observations carry a task id as one extra last column, which a learned
  `TaskIdEmbedding` in front of the actor and of the critics replaces by its vector (HCSAC's task embedding,
  seed 004 Sec. 2.4; `mtrl.algos.cql`). The actor's and the critics' tables are their own, trained by their
  own losses; the target critics Polyak-average theirs with the rest.

One `update` is one gradient step of the critics, then of the actor (against the just-updated critics), then
of the temperature α, then the Polyak updates, as in the reference implementations (softlearning, rlkit,
CleanRL). The twin critics are one `EnsembleMLP`: both Q values come from one batched forward and one
backward.

Task axis: one `SAC` holds `tasks` independent SACs (`mtrl.nn.TaskBatchedState`), so `collect` and `sac-init`
train a group of tasks, one env each stepped in lockstep, with one batched matmul per layer instead of one small
kernel per task. The actor is a task-batched `TanhGaussianActor` (one member per task), the critics a
[tasks × 2]-member ensemble (task t's twins are members 2t, 2t + 1), log α has shape [tasks]. Task t's slice is
exactly a single-task SAC built with the same seed: initialised from and drawing all its noise from its own
generator, its own batches, its losses summed (never mixed) over tasks, element-wise Adam. Metrics stay on the
device, [tasks] each. The generators' states are part of `state_dict`, so a resumed run repeats an
uninterrupted one bit for bit. On CPU the slice is even bit-identical to the single-task SAC (so `collect`'s
datasets do not depend on how tasks are grouped), with two conditions: the optimisers are `mtrl.nn.task_adam`,
and batch_size·act_dim is a multiple of 32 (true of every profile): softplus, in the log-probability, computes a
tensor's last (numel mod 2·SIMD width) elements in a scalar loop that rounds differently. Otherwise, and on GPUs
(whose batched matmuls may pick kernels by batch count), to float rounding.

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
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mtrl.nn import (
    EnsembleLinear,
    TanhGaussianActor,
    TaskBatchedState,
    TaskIdEmbedding,
    adam,
    soft_update,
    task_adam,
    task_generators,
)


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


class TwinCritics(nn.Module):
    """The twin critics Q_1, Q_2 of every task as one ensemble of 2·tasks MLPs evaluated by one batched matmul
    per layer, like `EnsembleMLP(2 * tasks, ...)` (and initialised exactly as it: task t's twins from
    generators[t]), but with parameters [tasks, 2, ...], so that every tensor of a checkpoint, optimiser moments
    included, has the task axis first (`mtrl.nn.split_tasks`).

    `forward`: x [tasks, 2, rows, in] (critic i of task t sees x[t, i]) or [tasks, rows, in] (both twins see
    it) → Q [tasks, 2, rows].
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], generators: Sequence[torch.Generator]):
        super().__init__()
        self.tasks = len(generators)
        widths = [in_dim, *hidden, 1]
        self.layers = nn.ModuleList(_TwinLinear(a, b, generators) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1).expand(self.tasks, 2, *x.shape[1:])
        elif x.dim() != 4 or x.shape[1] != 2:
            raise ValueError(f"twin critics take [tasks, rows, in] or [tasks, 2, rows, in], got {tuple(x.shape)}")
        x = x.reshape(2 * self.tasks, -1, x.shape[-1])
        for layer in self.layers[:-1]:
            x = F.relu(layer(x), inplace=True)
        return self.layers[-1](x).view(self.tasks, 2, -1)


class _TwinLinear(nn.Module):
    """`EnsembleLinear(2 * tasks, ...)` with its member axis stored as [tasks, 2]."""

    def __init__(self, in_dim: int, out_dim: int, generators: Sequence[torch.Generator]):
        super().__init__()
        tasks, layer = len(generators), EnsembleLinear(2 * len(generators), in_dim, out_dim, generators)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.weight = nn.Parameter(layer.weight.detach().view(tasks, 2, in_dim, out_dim))
        self.bias = nn.Parameter(layer.bias.detach().view(tasks, 2, 1, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [2·tasks, rows, in] → [2·tasks, rows, out]
        return torch.baddbmm(self.bias.flatten(0, 1), x, self.weight.flatten(0, 1))


class SAC(TaskBatchedState):
    """SAC agent: a tanh-Gaussian actor, twin critics with target copies, and a learned temperature α.

    `tasks` independent SACs computed as one (`mtrl.nn.TaskBatchedState`): task t's actor, twin critics, log α
    and optimiser moments are slice t of task-batched tensors, initialised from and drawing noise from its own
    generator (seeded with `seeds[t]`; default: draws from torch's global generator).

    Checkpoints (`AgentState`): the actor is what acting needs; a resume also needs the critics, their targets,
    the target policy (with `target_policy`), log α, the three optimisers and the generators.
    """

    NETWORKS = ("actor",)
    TRAINING_PARTS = ("critic", "critic_target", "log_alpha", "actor_opt", "critic_opt", "alpha_opt", "actor_target")
    METRICS = ("q1_loss", "q2_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean")

    def __init__(
        self,
        cfg: SACConfig,
        obs_dim: int,
        act_dim: int,
        max_action: float,
        device: torch.device | str,
        critic_condition: torch.Tensor | None = None,
        tasks: int = 1,
        seeds: Sequence[int] | None = None,
        task_ids: int = 0,
        embedding_dim: int = 0,
    ):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.tasks, self.task_ids = tasks, task_ids
        self.device = torch.device(device)
        self.generators = task_generators(self.device, tasks, seeds)
        if cfg.damped_policy and not cfg.target_policy:
            raise ValueError("SAC: damped_policy copies the target policy into the actor; set target_policy too")
        if critic_condition is not None:
            if critic_condition.dim() == 1 and tasks == 1:
                critic_condition = critic_condition[None]
            if critic_condition.dim() != 2 or critic_condition.shape[0] != tasks:
                raise ValueError(f"critic_condition must be [tasks={tasks}, cond_dim] (or 1-D for one task), "
                                 f"got shape {tuple(critic_condition.shape)}")
        # Detached: z is a fixed input here, no gradient may flow back into the encoder that inferred it.
        self.condition = (
            None if critic_condition is None else critic_condition.detach().to(self.device, torch.float32)
        )  # [tasks, cond_dim]
        cond_dim = 0 if self.condition is None else self.condition.shape[1]
        gens = self.generators

        embed = embedding_dim if task_ids else 0
        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.actor_hidden, self.max_action, embed, generators=gens)
        self.critic = TwinCritics(obs_dim + act_dim + cond_dim + embed, cfg.critic_hidden, gens)
        if cfg.identical_critic_init:
            with torch.no_grad():
                for p in self.critic.parameters():
                    p[:, 1] = p[:, 0]
        if task_ids:  # the id column sits right after the observation, in the actor's and the critics' inputs
            self.actor.net = nn.Sequential(TaskIdEmbedding(tasks, task_ids, embed, obs_dim, gens), self.actor.net)
            self.critic = nn.Sequential(TaskIdEmbedding(tasks, task_ids, embed, obs_dim, gens), self.critic)
        self.actor, self.critic = self.actor.to(self.device), self.critic.to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False) if cfg.target_policy else None
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.full((tasks,), math.log(cfg.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy

        self.actor_opt = task_adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = task_adam(self.critic.parameters(), cfg.critic_lr)
        self.alpha_opt = task_adam([self.log_alpha], cfg.alpha_lr)

    @property
    def batches_per_update(self) -> int:
        """How many independently sampled mini-batches `update` takes (2 with `separate_critic_batches`)."""
        return 2 if self.cfg.separate_critic_batches else 1

    # ---------------------------------------------------------------- networks
    def _critic_input(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[s, a] or [s, a, z] ([tasks, ..., ·]): the input order of the distilled critic Q_D."""
        if self.condition is None:
            return torch.cat([obs, action], -1)
        z = self.condition.view(self.tasks, *([1] * (obs.dim() - 2)), -1).expand(*obs.shape[:-1], -1)
        return torch.cat([obs, action, z], -1)

    # ---------------------------------------------------------------- learning
    def update(
        self, batch: dict[str, torch.Tensor], batch2: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """One gradient step of every network of every task; returns `METRICS`, [tasks] each, detached on the
        device (no host sync).

        Batch keys, each with a leading task axis: observations, next_observations [tasks, B, obs_dim], actions
        [tasks, B, act_dim], rewards and terminals [tasks, B] (float 0/1; 1 only for a true termination, never
        for a time-limit truncation). With `separate_critic_batches`, critic i learns from batch i and the actor
        and α from `batch2` (Alg. 9); otherwise `batch2` must be None. Each task's losses are means over its
        own rows; the optimisers minimise their sum over tasks, so every task gets exactly its own gradient.
        """
        if (batch2 is not None) != self.cfg.separate_critic_batches:
            raise ValueError(f"SAC.update takes {self.batches_per_update} batch(es) with this config")
        batches = [batch] if batch2 is None else [batch, batch2]
        n, T = len(batches), self.tasks
        obs, actions, rewards, next_obs, terminals = (
            torch.stack([b[k] for b in batches], 1)
            for k in ("observations", "actions", "rewards", "next_observations", "terminals")
        )  # [T, n, B, ...]
        if obs.shape[0] != T:
            raise ValueError(f"SAC.update: batches need a leading task axis of {T}, got shape {tuple(obs.shape)}")
        B = obs.shape[2]
        alpha = self.log_alpha.detach().exp()  # [T]

        # Critics: y = r + γ(1 − d)(min_j Q'_j(s', ã') − α log π(ã'|s')), ã' from the (target) policy.
        with torch.no_grad():
            next_actor = self.actor if self.actor_target is None else self.actor_target
            next_actions, next_log_prob = next_actor(next_obs, generator=self.generators)  # [T, n, B, ·]
            target_in = self._critic_input(next_obs, next_actions).flatten(1, 2)  # both critics see all n·B
            next_q1, next_q2 = self.critic_target(target_in).view(T, 2, n, B).unbind(1)
            y = soft_bellman_target(rewards, terminals, next_q1, next_q2, next_log_prob, alpha.view(T, 1, 1),
                                    self.cfg.gamma)
        critic_in = self._critic_input(obs, actions)  # [T, n, B, in]: critic i gets batch i (or the one batch)
        q = self.critic(critic_in[:, 0] if n == 1 else critic_in)  # [T, 2, B]
        critic_losses = self._critic_losses(q, y, obs[:, 0])  # [T, 2]
        self.critic_opt.zero_grad(set_to_none=True)
        critic_losses.sum().backward()
        self.critic_opt.step()

        # Actor, against the updated critics; their weights are frozen so no gradient is computed for them.
        pi_obs = obs[:, -1]  # [T, B, obs]
        pi_actions, log_prob = self.actor(pi_obs, generator=self.generators)  # all noise from our generators
        self.critic.requires_grad_(False)
        q_pi = self.critic(self._critic_input(pi_obs, pi_actions)).min(1).values
        self.critic.requires_grad_(True)
        actor_losses = (alpha[:, None] * log_prob - q_pi).mean(1)  # [T]
        self.actor_opt.zero_grad(set_to_none=True)
        actor_losses.sum().backward()
        self.actor_opt.step()

        # Temperature: raise α when the policy's entropy −log π is below the target, lower it when above.
        log_prob = log_prob.detach()
        alpha_losses = -(self.log_alpha[:, None] * (log_prob + self.target_entropy)).mean(1)  # [T]
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_losses.sum().backward()
        self.alpha_opt.step()

        soft_update(self.critic_target, self.critic, self.cfg.tau)
        if self.actor_target is not None:
            soft_update(self.actor_target, self.actor, self.cfg.policy_tau)
            if self.cfg.damped_policy:
                self.actor.load_state_dict(self.actor_target.state_dict())

        critic_losses = critic_losses.detach()
        values = (critic_losses[:, 0], critic_losses[:, 1], actor_losses.detach(), alpha_losses.detach(), alpha,
                  -log_prob.mean(1), q.detach().mean((1, 2)))
        return dict(zip(self.METRICS, values, strict=True))

    def _critic_losses(self, q: torch.Tensor, y: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Each critic's loss [T, 2]: the mean squared TD error (y [T, n, B] broadcasts over the twins when n = 1).
        `obs` [T, B, ·] is the first batch's states, for subclasses that regularise Q there (CQL)."""
        return (q - y).pow(2).mean(-1)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions in [−max_action, max_action]: obs [tasks, obs_dim] (one observation per task) or
        [tasks, N, obs_dim] → [tasks, act_dim] or [tasks, N, act_dim]; task t's noise from its generator.

        One observation per task on CPU is computed on one torch thread (restored afterwards): at such sizes
        the thread hand-off costs more than it saves.
        """
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if x.dim() not in (2, 3) or x.shape[0] != self.tasks:
            raise ValueError(f"SAC.act: expected [tasks={self.tasks}, (N,) obs_dim], got shape {tuple(x.shape)}")
        one_per_task = x.dim() == 2
        threads = torch.get_num_threads()
        one_thread = one_per_task and threads > 1 and self.device.type == "cpu"
        if one_thread:
            torch.set_num_threads(1)
        try:  # [tasks, obs] → [tasks, 1, obs]: a 2-D input would be one batch shared by every task's network
            sample = self.actor.sample(x[:, None] if one_per_task else x, self.generators, deterministic,
                                       with_log_prob=False)
            action = sample.action[:, 0] if one_per_task else sample.action
            return action.cpu().numpy()
        finally:
            if one_thread:
                torch.set_num_threads(threads)

    # ---------------------------------------------------------------- initialisation by MBML (Alg. 9 line 1)
    def _per_task(self, states: dict | Sequence[dict]) -> list[dict]:
        states = [states] * self.tasks if isinstance(states, dict) else list(states)
        if len(states) != self.tasks:
            raise ValueError(f"expected one state per task ({self.tasks}), got {len(states)}")
        return states

    @torch.no_grad()
    def init_actor_from(self, actor_states: dict | Sequence[dict]) -> None:
        """Load single-network `TanhGaussianActor` states (e.g. the policies fitted by `imitate`; one per task,
        or one for all) into the actor and the target policy. Call before the first update: the optimiser
        state is not reset."""
        states = [{k.removeprefix("net."): v for k, v in state.items()} for state in self._per_task(actor_states)]
        load_mlps(self.actor.net.layers, [(t,) for t in range(self.tasks)], states)
        if self.actor_target is not None:
            self.actor_target.load_state_dict(self.actor.state_dict())

    @torch.no_grad()
    def init_critics_from(self, q_states: dict | Sequence[dict]) -> None:
        """Copy the weights of `mtrl.nn.mlp` critics (their `state_dict()`; e.g. the distilled Q_D with input
        [s, a, z]; one per task, or one for all) into both critics and both target critics of each task. Call
        before the first update."""
        states = [state for state in self._per_task(q_states) for _ in range(2)]
        load_mlps(self.critic.layers, [(t, i) for t in range(self.tasks) for i in range(2)], states)
        self.critic_target.load_state_dict(self.critic.state_dict())


def soft_bellman_target(rewards: torch.Tensor, terminals: torch.Tensor, next_q1: torch.Tensor, next_q2: torch.Tensor,
                        next_log_prob: torch.Tensor, alpha: torch.Tensor | float, gamma: float) -> torch.Tensor:
    """SAC's critic target: y = r + γ(1 − d)(min_j Q'_j(s', ã') − α log π(ã' | s')), element-wise.

    `next_q1`, `next_q2`: the twin target critics on the next action ã' drawn from the (target) policy,
    `next_log_prob` its log-probability; all shaped like `rewards` (`alpha` broadcasts). A pure function of its
    inputs (the arithmetic of `SAC.update`, unchanged)."""
    return rewards + gamma * (1.0 - terminals) * (torch.minimum(next_q1, next_q2) - alpha * next_log_prob)


@torch.no_grad()
def load_mlps(layers: Sequence[nn.Module], members: Sequence[tuple[int, ...]], states: Sequence[dict]) -> None:
    """Copy `mtrl.nn.mlp` states (Sequential keys "0.weight" [out, in], ...) into ensemble layers (`layers` with
    `weight` [..., in, out] and `bias` [..., 1, out]): state m into member `members[m]`, an index into the
    leading axes of the ensemble's weights."""
    for m, state in zip(members, states, strict=True):
        weights = sorted((k for k in state if k.endswith(".weight")), key=lambda k: int(k.split(".")[0]))
        if len(weights) != len(layers):
            raise ValueError(f"state has {len(weights)} linear layers, the network has {len(layers)}")
        for key, layer in zip(weights, layers, strict=True):
            weight, bias = state[key], state[key[: -len("weight")] + "bias"]
            if tuple(weight.shape) != (layer.out_dim, layer.in_dim):
                raise ValueError(
                    f"state {key} has shape {tuple(weight.shape)}, expected {(layer.out_dim, layer.in_dim)}"
                )
            layer.weight[m] = weight.t()
            layer.bias[m] = bias.view(1, -1)


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

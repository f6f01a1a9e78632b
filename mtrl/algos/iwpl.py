"""Importance Weighted Policy Learning and Adaptation (IWPL / IWPA, Galashov et al., seed 003).

No parametric task policy: task i acts by the non-parametric policy q̂_i of Eq. 5-6 — K actions drawn from the
behaviour prior π₀(a|s), one resampled with weights ∝ exp(Q_i(s, a_k)/α). Learning (Alg. 1) fits the per-task
soft Q functions to the importance-weighted backup (Eq. 9-10), the prior to the weighted samples by maximum
likelihood (Eq. 11), and the temperature α to the KL bound ε of Eq. 8 by its Lagrangian dual (as MPO's E-step).
With `shared_features`, Q_i(s, a) = ψ_θ(s, a)ᵀ w_i (Eq. 12): the features IWPA transfers.

Two couplings of the task axis (`coupled`):
- IWPL on the training tasks (coupled): the prior, the features ψ and α are shared by every task (one network,
  one α: Eq. 1 and 8 have one), each task owns its Q (or w_i). Tasks are not independent runs here.
- IWPA on test tasks (not coupled): `tasks` independent adaptations computed as one (`mtrl.nn.TaskBatchedState`):
  each test task has its own copy of every part, loaded from the pretrained prior and features
  (`load_pretrained`); `learn_prior` / `learn_features` choose what adapts (Alg. 2's variants).

Readings of the paper and deviations (docs/algorithms.md, "IWPL / IWPA"):
- The KL term of the backup (Eq. 7, 10) is estimated as Σ_k q̂_k log(K·q̂_k): the KL of the weighted sample set
  from the prior's own K samples, whose limit for K → ∞ is KL[q‖π₀]. Eq. 10 writes log(q̂_k / π₀(a_k|s)), a
  probability mass over a density, which has no such limit.
- The dual: g(α) = α·ε + α·Σ_i E_s[log (1/K) Σ_k exp(Q_i(s, a_k)/α)], whose derivative is ε minus the summed
  KL of the q̂_i from the prior; α is learned as log α by Adam. Weights, backup and dual use the target
  networks' Q (Alg. 1: q̂' from θ', φ').
- A terminal transition (never the case in the point and cheetah families) stops the bootstrap.
- Networks are ReLU MLPs without the input layer normalisation of App. A (the project's `EnsembleMLP`).
- Before its first update the agent acts by the prior alone (App. A.2's exploration episodes with the prior);
  deterministic acting takes the sample of highest Q among K from the prior (the mode of q̂ as α → 0).
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
    EnsembleMLP,
    TanhGaussianActor,
    TaskBatchedState,
    gaussian_log_prob,
    split_tasks,
    stack_tasks,
    tanh_log_det,
    task_adam,
    task_generators,
    task_randn,
)


@dataclass(frozen=True)
class IWPLConfig:
    """Hyper-parameters of IWPL / IWPA; defaults are seed 003's (App. A) where it gives them, else chosen
    (marked "chosen" in the help)."""

    prior_hidden: tuple[int, ...] = field(default=(256, 256), metadata={"help": "hidden widths of the prior π₀ "
                                                                                "(App. A: 2 layers; width chosen)"})
    critic_hidden: tuple[int, ...] = field(default=(256, 256), metadata={"help": "hidden widths of Q (or of the "
                                                                                 "features ψ); width chosen"})
    shared_features: bool = field(default=True, metadata={"help": "Q_i = ψ(s, a)ᵀ w_i with shared ψ (Eq. 12); "
                                                                  "false: one MLP per task"})
    feature_dim: int = field(default=64, metadata={"min": 1, "help": "d, the width of ψ (chosen)"})
    num_actions: int = field(default=32, metadata={"min": 2, "help": "K, actions drawn from π₀ per state (chosen)"})
    batch_size: int = field(default=512, metadata={"min": 1, "help": "transitions per task per update (App. A)"})
    gamma: float = field(default=0.99, metadata={"min": 0.0, "max": 1.0, "help": "discount factor"})
    lr: float = field(default=5e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of Q, ψ, w and π₀ "
                                                                              "(App. A)"})
    alpha_lr: float = field(default=5e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of log α "
                                                                                    "(chosen; 0: α stays fixed)"})
    epsilon: float = field(default=50.0, metadata={"min": 0.0, "help": "KL bound ε of Eq. 8, summed over the "
                                                                      "coupled tasks (App. A: 50; adaptation 30)"})
    init_alpha: float = field(default=1.0, metadata={"min": 1e-8, "help": "initial temperature α"})
    target_period: int = field(default=100, metadata={"min": 1, "help": "updates between target network copies "
                                                                        "(T of Alg. 1; chosen)"})
    utd: int = field(default=1, metadata={"min": 1, "help": "updates per environment step (chosen: App. A.2 "
                                                            "updates per sub-trajectory and per episode)"})


class TaskVectors(nn.Module):
    """The task vectors w_i of Eq. 12, [tasks, d], drawn from N(0, I/d) (Alg. 2), task t's from generators[t]."""

    def __init__(self, dim: int, generators: Sequence[torch.Generator]):
        super().__init__()
        self.weight = nn.Parameter(task_randn(generators, (len(generators), dim), generators[0].device)
                                   / math.sqrt(dim))


class IWPL(TaskBatchedState):
    """The prior π₀, per-task Q (or shared ψ with task vectors w), their targets and α; see the module doc.

    `coupled`: π₀, ψ and α shared by the tasks (IWPL); otherwise each task has its own (IWPA). `learn_prior`,
    `learn_features`: whether Eq. 11 updates π₀ and the critic loss updates ψ (frozen parts get no optimiser).
    Batches and acting have a leading task axis, as `mtrl.algos.sac.SAC`.
    """

    NETWORKS = ("prior", "features", "critic")
    TRAINING_PARTS = ("prior_target", "features_target", "critic_target", "log_alpha", "updates", "prior_opt",
                      "feature_opt", "critic_opt", "alpha_opt")
    SHARED = ("prior", "features", "prior_target", "features_target", "log_alpha", "prior_opt", "feature_opt",
              "alpha_opt")  # with `coupled`: one copy for every task
    METRICS = ("q_loss", "prior_loss", "alpha", "kl", "q_mean")

    def __init__(self, cfg: IWPLConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device | str,
                 tasks: int = 1, seeds: Sequence[int] | None = None, coupled: bool = False, learn_prior: bool = True,
                 learn_features: bool = True):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.tasks, self.coupled = tasks, coupled
        self.device = torch.device(device)
        self.generators = task_generators(self.device, tasks, seeds)
        gens = self.generators[:1] if coupled else self.generators  # shared networks start from task 0's stream
        self.prior = TanhGaussianActor(obs_dim, act_dim, cfg.prior_hidden, self.max_action, generators=gens)
        self.prior = self.prior.to(self.device)
        in_dim = obs_dim + act_dim
        self.features = None
        if cfg.shared_features:
            self.features = EnsembleMLP(len(gens), in_dim, cfg.critic_hidden, cfg.feature_dim, gens).to(self.device)
            self.critic: nn.Module = TaskVectors(cfg.feature_dim, self.generators).to(self.device)
        else:
            self.critic = EnsembleMLP(tasks, in_dim, cfg.critic_hidden, 1, self.generators).to(self.device)
        self.prior_target = copy.deepcopy(self.prior).requires_grad_(False)
        self.features_target = None if self.features is None else copy.deepcopy(self.features).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.full((1 if coupled else tasks,), math.log(cfg.init_alpha), device=self.device,
                                    requires_grad=True)
        self.updates = torch.zeros(tasks, dtype=torch.long)  # per task (all equal): the target period's clock

        learn_features = learn_features and self.features is not None
        self.prior.requires_grad_(learn_prior)
        if self.features is not None:
            self.features.requires_grad_(learn_features)
        self.prior_opt = task_adam(self.prior.parameters(), cfg.lr) if learn_prior else None
        self.feature_opt = task_adam(self.features.parameters(), cfg.lr) if learn_features else None
        self.critic_opt = task_adam(self.critic.parameters(), cfg.lr)
        self.alpha_opt = task_adam([self.log_alpha], cfg.alpha_lr)

    # ---------------------------------------------------------------- the task axis
    def _shared(self, net: nn.Module, x: torch.Tensor, apply) -> torch.Tensor:
        """`apply(net, x)` for x [tasks, ...]: a coupled (one-member) network sees all tasks as one batch."""
        if self.coupled:
            out = apply(net, x.unsqueeze(0))
            return tuple(o[0] for o in out) if isinstance(out, tuple) else out[0]
        return apply(net, x)

    def task_states(self) -> list[dict]:
        """Per-task checkpoints; coupled, the shared parts are in every task's (identical copies)."""
        if not self.coupled:
            return super().task_states()
        state = self.state_dict()
        shared = {k: state.pop(k) for k in self.SHARED if k in state}
        return [s | {"shared": shared} for s in split_tasks(state, self.tasks)]

    def load_task_states(self, states: Sequence[dict]) -> None:
        if not self.coupled:
            return super().load_task_states(states)
        shared = states[0]["shared"]
        self.load_state_dict(stack_tasks([{k: v for k, v in s.items() if k != "shared"} for s in states]) | shared)

    @torch.no_grad()
    def load_pretrained(self, prior: dict | None, features: dict | None = None) -> None:
        """Start every task from a pretrained prior and/or features ψ (None: keep the fresh one): the one-member
        networks of a coupled IWPL's `policy_state_dict`, copied into each task's member and into the targets
        (IWPA, Alg. 2)."""
        if features is not None and self.features is None:
            raise ValueError("IWPL.load_pretrained: features given but this agent has no shared features")
        members = 1 if self.coupled else self.tasks
        for net, target, state in ((self.prior, self.prior_target, prior),
                                   (self.features, self.features_target, features)):
            if state is not None:
                net.load_state_dict({k: torch.as_tensor(v).expand(members, *v.shape[1:]) for k, v in state.items()})
                target.load_state_dict(net.state_dict())

    # ---------------------------------------------------------------- π₀ and Q
    def sample_prior(self, states: torch.Tensor, num: int, target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 5: `num` actions per state from π₀ (φ' with `target`): states [tasks, N, obs] → actions and their
        pre-tanh values (what Eq. 11 scores) [tasks, N, num, act]; noise from the task generators."""
        net = self.prior_target if target else self.prior
        mean, std = self._shared(net, states, lambda n, x: n.distribution(x))
        mean, std = mean.unsqueeze(2), std.unsqueeze(2)
        noise = task_randn(self.generators, (*mean.shape[:2], num, mean.shape[-1]), mean.device, mean.dtype)
        pre_tanh = mean + std * noise
        return torch.tanh(pre_tanh) * self.max_action, pre_tanh

    def prior_log_prob(self, states: torch.Tensor, pre_tanh: torch.Tensor) -> torch.Tensor:
        """log π₀(a|s) under the online prior of actions given by their pre-tanh values [tasks, N, K, act]."""
        mean, std = self._shared(self.prior, states, lambda n, x: n.distribution(x))
        return gaussian_log_prob(pre_tanh, mean.unsqueeze(2), std.unsqueeze(2)) - tanh_log_det(pre_tanh)

    def q_values(self, states: torch.Tensor, actions: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Q_i(s, a): states [tasks, N, obs], actions [tasks, N, act] or [tasks, N, K, act] → [tasks, N(, K)]."""
        if actions.dim() == 4:
            states = states.unsqueeze(2).expand(*actions.shape[:3], states.shape[-1])
        x = torch.cat([states, actions], -1)
        critic = self.critic_target if target else self.critic
        if self.features is None:
            return critic(x).squeeze(-1)
        features = self._shared(self.features_target if target else self.features, x, lambda n, y: n(y))
        w = critic.weight.view(self.tasks, *([1] * (x.dim() - 2)), -1)
        return (features * w).sum(-1)

    def alpha(self) -> torch.Tensor:
        """α per task, [tasks, 1] (one value repeated when coupled)."""
        return self.log_alpha.exp().expand(self.tasks).unsqueeze(1)

    # ---------------------------------------------------------------- learning
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step of Alg. 1's learner on every task: Q by Eq. 9-10, π₀ by Eq. 11 (if learned), α by the dual,
        targets copied every `target_period` updates. Batch keys as `SAC.update` ([tasks, B, ...])."""
        cfg, T = self.cfg, self.tasks
        obs, actions, rewards, next_obs, terminals = (batch[k] for k in ("observations", "actions", "rewards",
                                                                         "next_observations", "terminals"))
        if obs.shape[0] != T:
            raise ValueError(f"IWPL.update: batches need a leading task axis of {T}, got shape {tuple(obs.shape)}")
        B, K = obs.shape[1], cfg.num_actions
        alpha = self.alpha().detach()  # [T, 1]
        with torch.no_grad():  # q̂' from the target networks, at s_t (prior, dual) and s_{t+1} (backup)
            states = torch.cat([obs, next_obs], 1)
            sampled, pre_tanh = self.sample_prior(states, K, target=True)
            q_k = self.q_values(states, sampled, target=True)  # [T, 2B, K]
            log_w = F.log_softmax(q_k / alpha.unsqueeze(-1), -1)
            w = log_w.exp()
            v_next = backup_value(q_k[:, B:], log_w[:, B:], alpha)
            y = rewards + cfg.gamma * (1.0 - terminals) * v_next
            kl = (w[:, :B] * (log_w[:, :B] + math.log(K))).sum(-1).mean(1)  # [T]: KL of q̂ from π₀ at s_t

        q = self.q_values(obs, actions)
        q_loss = 0.5 * (q - y).pow(2).mean(1)  # [T]
        self.critic_opt.zero_grad(set_to_none=True)
        if self.feature_opt is not None:
            self.feature_opt.zero_grad(set_to_none=True)
        q_loss.sum().backward()
        self.critic_opt.step()
        if self.feature_opt is not None:
            self.feature_opt.step()

        prior_loss = torch.zeros(T, device=self.device)
        if self.prior_opt is not None:
            log_prob = self.prior_log_prob(obs, pre_tanh[:, :B])
            prior_loss = -(w[:, :B] * log_prob).sum(-1).mean(1)
            self.prior_opt.zero_grad(set_to_none=True)
            prior_loss.sum().backward()
            self.prior_opt.step()

        dual = temperature_dual(self.log_alpha, q_k[:, :B], cfg.epsilon)
        self.alpha_opt.zero_grad(set_to_none=True)
        dual.backward()
        self.alpha_opt.step()

        self.updates += 1
        if int(self.updates[0]) % cfg.target_period == 0:
            self.copy_targets()
        values = (q_loss.detach(), prior_loss.detach(), alpha[:, 0], kl, q.detach().mean(1))
        return dict(zip(self.METRICS, values, strict=True))

    @torch.no_grad()
    def copy_targets(self) -> None:
        """θ' ← θ, φ' ← φ (Alg. 1, every T updates)."""
        for net, target in ((self.prior, self.prior_target), (self.features, self.features_target),
                            (self.critic, self.critic_target)):
            if net is not None:
                target.load_state_dict(net.state_dict())

    @property
    def batches_per_update(self) -> int:
        return 1

    # ---------------------------------------------------------------- acting
    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One action per task, obs [tasks, obs_dim] → [tasks, act_dim]: q̂ of Eq. 5-6 with the online networks
        (resampled, or its highest-Q sample if `deterministic`); before the first update, π₀ alone."""
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if x.dim() != 2 or x.shape[0] != self.tasks:
            raise ValueError(f"IWPL.act: expected [tasks={self.tasks}, obs_dim], got shape {tuple(x.shape)}")
        x = x.unsqueeze(1)
        if int(self.updates[0]) == 0:
            if deterministic:
                mean, _ = self._shared(self.prior, x, lambda n, y: n.distribution(y))
                return (torch.tanh(mean[:, 0]) * self.max_action).cpu().numpy()
            return self.sample_prior(x, 1)[0][:, 0, 0].cpu().numpy()
        sampled, _ = self.sample_prior(x, self.cfg.num_actions)
        q_k = self.q_values(x, sampled)[:, 0]  # [T, K]
        if deterministic:
            index = q_k.argmax(-1)
        else:
            index = resample(F.log_softmax(q_k / self.alpha(), -1), self.generators)
        return sampled[torch.arange(self.tasks), 0, index].cpu().numpy()


def backup_value(q_k: torch.Tensor, log_w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The bootstrap of Eq. 7/10: Σ_k q̂_k (Q(s', a_k) − α log(K q̂_k)), over the last axis (K); `alpha`
    broadcasts against the result."""
    K = q_k.shape[-1]
    return (log_w.exp() * (q_k - alpha.unsqueeze(-1) * (log_w + math.log(K)))).sum(-1)


def temperature_dual(log_alpha: torch.Tensor, q_k: torch.Tensor, epsilon: float) -> torch.Tensor:
    """g(α) = α·ε + α·Σ_i E_s[log (1/K) Σ_k exp(Q_i(s, a_k)/α)] (the dual of Eq. 8, one α per entry of
    `log_alpha`: one shared by all tasks, or one per task); q_k [tasks, N, K] from prior samples, no gradient."""
    alpha = log_alpha.exp()
    per_task = alpha.expand(q_k.shape[0]).unsqueeze(1)
    log_mean = torch.logsumexp(q_k.detach() / per_task.unsqueeze(-1), -1) - math.log(q_k.shape[-1])
    return (alpha * epsilon).sum() + (per_task * log_mean).mean(1).sum()


def resample(log_w: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Eq. 6: one index per task from Cat(q̂), log_w [tasks, K]; task t's draw from generators[t]."""
    return torch.stack([torch.multinomial(row.exp(), 1, generator=g)[0]
                        for row, g in zip(log_w, generators, strict=True)])

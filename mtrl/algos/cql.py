"""The CQL family of HCSAC (Bu, Wang and Xue, seed 004): CSAC, MTCSAC, HCSAC and behaviour cloning.

- `CSAC`: conservative Q-learning (Kumar et al. 2020) on SAC, the CQL(H) critic loss of Eq. 8:
  α·E_s[log Σ_a exp Q(s, a) − E_{a~D} Q(s, a)] + ½·E[(Q − B^π Q')²], the log-sum-exp estimated by Eq. 9's
  importance sampling with `cql_samples` uniform and as many policy actions per state. Everything else is
  `mtrl.algos.sac.SAC` (twin critics and targets, tanh-Gaussian actor, automatic entropy tuning), of which
  CSAC only replaces the critic loss. With `tasks` > 1 it is that many independent per-task CSACs (the task
  axis of `SAC`), which is how the stage trains the paper's single-task baseline on every task at once.
- `MTCSAC`: one CSAC with `task_ids` > 0 over the union of the tasks' data; the observation carries the task id
  as one extra column, replaced by a learned embedding in the actor's and the critics' inputs (Sec. 2.4).
- `HCSAC`: MTCSAC plus Alg. 1's heuristic relabelling, whose rule is `relabel_masks` (the stage rebuilds the
  active data with it every `relabel_every` epochs).
- `BC`: behaviour cloning (the paper's weak baseline), per task or with the task embedding.

Readings of the paper and deviations (also in docs/algorithms.md, "The CQL family"):
- Eq. 9's estimate is log((1/2N)·Σ exp(Q(s, a_k) − log p(a_k))) over the 2N samples, p the uniform density
  (2·max_action)^−d or the policy's density of its action max_action·tanh(u) (the actor's log-probability, of
  tanh(u), minus d·log max_action; the same at max_action 1); the constant −log 2N is kept (the CQL code drops it;
  it changes no gradient). The policy samples come from the current actor without gradient (only Q learns from
  the term), at s (the paper says nothing of CQL's extra samples at s', so there are none).
- The TD term has Eq. 8's ½ (SAC's own loss has none), so `cql_weight` 10 weighs as in Eq. 8.
- "The task embedding e ... added onto the state s" (Sec. 2.4) is read as concatenation (the issue's wording;
  adding would need the embedding as wide as the state). Fig. 3 draws one embedding layer for actor and
  critic; here each has its own table, trained by its own loss (one table would take gradients from two
  optimisers), and the target critics average theirs with the rest.
- The paper does not say which Q of the twins Alg. 1 compares: the minimum, the value the actor maximises.
- BC regresses tanh(f(s))·max_action onto the dataset action by mean squared error; the paper does not say which
  BC loss it used. Its optimum is the data's noise variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mtrl.algos.sac import SAC, SACConfig
from mtrl.errors import ConfigError
from mtrl.nn import EnsembleMLP, TaskBatchedState, TaskIdEmbedding, task_adam, task_generators, task_randn


@dataclass(frozen=True)
class FamilyMethod:
    """One method of the family: which agent, trained per task or on the union with task ids, relabelled or not."""

    agent: type
    section: str  # its config section, cql.<section>
    multi_task: bool
    relabel: bool = False


def _paper_sac() -> SACConfig:
    """Sec. 3.1: 3 × 1024 networks, critic lr 3e-4, actor lr 1e-4, τ 0.01, γ 0.99, batch 1024."""
    return SACConfig(actor_hidden=(1024,) * 3, critic_hidden=(1024,) * 3, actor_lr=1e-4, critic_lr=3e-4, tau=0.01,
                     gamma=0.99, batch_size=1024)


@dataclass(frozen=True)
class CSACConfig:
    """CSAC's hyper-parameters (seed 004 Sec. 3.1); `sac` holds the SAC part (its collection-only keys, random_steps
    and utd, are not read)."""

    sac: SACConfig = field(default_factory=_paper_sac)
    cql_weight: float = field(default=10.0, metadata={"min": 0.0, "max": 1e6, "help": "weight α of the CQL term"})
    cql_samples: int = field(default=10, metadata={"min": 1, "max": 1000, "help": "uniform actions, and as many "
                                                                                 "policy actions, per state"})
    embedding_dim: int = field(default=16, metadata={"min": 1, "max": 4096, "help": "task embedding width "
                                                                                   "(MTCSAC, HCSAC; not in the "
                                                                                   "paper)"})

    @property
    def batch_size(self) -> int:
        return self.sac.batch_size

    def __post_init__(self):
        if self.sac.separate_critic_batches or self.sac.target_policy:
            raise ConfigError("CSAC: set sac.separate_critic_batches and sac.target_policy to false (MBML's App. J "
                              "options are not part of CQL)")


def cql_logsumexp(q: torch.Tensor, log_density: torch.Tensor) -> torch.Tensor:
    """Eq. 9: log ∫ exp Q(s, a) da estimated from samples a_k with densities p(a_k), over the last axis:
    log((1/K)·Σ_k exp(Q(s, a_k) − log p(a_k))), K the number of samples (of both proposals together)."""
    return torch.logsumexp(q - log_density, -1) - math.log(q.shape[-1])


class CSAC(SAC):
    """SAC whose critics minimise Eq. 8 (see the module docstring); `task_ids` > 0 makes it MTCSAC/HCSAC's
    multi-task agent (observations with the task id as last column). `update` adds the metric `cql`, the
    conservative gap log Σ exp Q − Q(data) per task (mean of the twins)."""

    SIZES = SAC.SIZES | {"task_ids": int}

    def __init__(self, cfg: CSACConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device | str,
                 tasks: int = 1, seeds: Sequence[int] | None = None, task_ids: int = 0):
        super().__init__(cfg.sac, obs_dim, act_dim, max_action, device, tasks=tasks, seeds=seeds, task_ids=task_ids,
                         embedding_dim=cfg.embedding_dim)
        self.cql_cfg = cfg
        self._gap: torch.Tensor | None = None

    def conservative_logsumexp(self, obs: torch.Tensor) -> torch.Tensor:
        """log Σ_a exp Q_i(s, a) [T, 2, B] for states `obs` [T, B, ·] by Eq. 9, N uniform and N policy actions."""
        T, B, width = obs.shape
        N, A = self.cql_cfg.cql_samples, self.act_dim
        with torch.no_grad():
            states = obs[:, :, None].expand(T, B, N, width)
            policy = self.actor.sample(obs, self.generators, samples=N)  # one actor pass per state
            uniform = task_randn(self.generators, (T, B, N, A), obs.device, obs.dtype, sampler=torch.rand)
            actions = torch.cat([(2 * uniform - 1) * self.max_action, policy.action], 2)  # [T, B, 2N, A]
            uniform_log_density = torch.full_like(policy.log_prob, -A * math.log(2 * self.max_action))
            # the actor's log_prob is the density of tanh(u) in (−1, 1)^A; the action max_action·tanh(u) has
            # max_action^A times less (nothing changes at max_action 1, the pipeline's)
            policy_log_density = policy.log_prob - A * math.log(self.max_action)
            log_density = torch.cat([uniform_log_density, policy_log_density], 2)  # [T, B, 2N]
        states = torch.cat([states, states], 2)
        q = self.critic(self._critic_input(states, actions).flatten(1, 2)).view(T, 2, B, 2 * N)
        return cql_logsumexp(q, log_density[:, None])

    def _critic_losses(self, q: torch.Tensor, y: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        gap = (self.conservative_logsumexp(obs) - q).mean(-1)  # [T, 2]: E_s[log Σ exp Q − Q(s, a_data)]
        self._gap = gap.detach()
        return 0.5 * (q - y).pow(2).mean(-1) + self.cql_cfg.cql_weight * gap

    def update(self, batch: dict[str, torch.Tensor], batch2: None = None) -> dict[str, torch.Tensor]:
        metrics = super().update(batch, batch2)
        metrics["cql"] = self._gap.mean(1)
        return metrics

    @torch.no_grad()
    def q_min(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min(Q_1, Q_2) [T, N] of the online critics at obs [T, N, ·], actions [T, N, act_dim]."""
        return self.critic(self._critic_input(obs, actions)).min(1).values


def relabel_masks(q: Callable[[int, int], np.ndarray], tasks: int, quantile: float) -> list[list[np.ndarray | None]]:
    """Alg. 1 lines 4-9: masks[i][j] (j ≠ i) marks the transitions of D_j that join task i's active data,
    Q_i(s, a) ≥ τ(D_i), τ(D_i) the `quantile` of Q_i over D_i (Eq. 10-11); masks[i][i] is None (D_i is always in).
    `q(i, j)` gives Q_i over the rows of D_j."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"relabel quantile must be in [0, 1], got {quantile}")
    masks: list[list[np.ndarray | None]] = []
    for i in range(tasks):
        threshold = np.quantile(q(i, i), quantile)
        masks.append([None if j == i else q(i, j) >= threshold for j in range(tasks)])
    return masks


@dataclass(frozen=True)
class BCConfig:
    """Behaviour cloning (the paper's weak baseline; its settings are not given: the actor's size and rate)."""

    hidden: tuple[int, ...] = field(default=(1024,) * 3, metadata={"help": "hidden widths of the policy MLP"})
    lr: float = field(default=1e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size"})
    batch_size: int = field(default=1024, metadata={"min": 1, "help": "transitions per mini-batch"})
    embedding_dim: int = field(default=16, metadata={"min": 1, "max": 4096, "help": "task embedding width "
                                                                                   "(multi-task BC)"})


class BC(TaskBatchedState):
    """A deterministic policy tanh(f(s))·max_action fitted to the dataset's actions by mean squared error; `tasks`
    independent ones (task axis), and with `task_ids` > 0 the task id column embedded as in `CSAC`."""

    NETWORKS = ("actor",)
    TRAINING_PARTS = ("actor_opt",)
    SIZES = TaskBatchedState.SIZES | {"task_ids": int}

    def __init__(self, cfg: BCConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device | str,
                 tasks: int = 1, seeds: Sequence[int] | None = None, task_ids: int = 0):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.tasks, self.task_ids = tasks, task_ids
        self.device = torch.device(device)
        self.generators = task_generators(self.device, tasks, seeds)
        embed = cfg.embedding_dim if task_ids else 0
        net: nn.Module = EnsembleMLP(tasks, obs_dim + embed, cfg.hidden, act_dim, self.generators)
        if task_ids:
            net = nn.Sequential(TaskIdEmbedding(tasks, task_ids, embed, obs_dim, self.generators), net)
        self.actor = net.to(self.device)
        self.actor_opt = task_adam(self.actor.parameters(), cfg.lr)

    def policy(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.actor(obs)) * self.max_action

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step on `observations` [T, B, ·] and `actions` [T, B, act_dim]; metric `bc_loss` [T], each task's
        mean squared error per action dimension."""
        losses = (self.policy(batch["observations"]) - batch["actions"]).pow(2).mean((1, 2))
        self.actor_opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.actor_opt.step()
        return {"bc_loss": losses.detach()}

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions [tasks, act_dim] for obs [tasks, ·], or [tasks, N, act_dim] for [tasks, N, ·] (`SAC.act`'s face;
        the policy is deterministic)."""
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if x.dim() not in (2, 3) or x.shape[0] != self.tasks:
            raise ValueError(f"BC.act: expected [tasks={self.tasks}, (N,) obs], got shape {tuple(x.shape)}")
        action = self.policy(x[:, None] if x.dim() == 2 else x)
        return (action[:, 0] if x.dim() == 2 else action).cpu().numpy()


# Table 1's columns, in its order (mt-bc: the issue's multi-task BC with the task embedding, not in the paper)
METHODS = {"bc": FamilyMethod(BC, "bc", False), "csac": FamilyMethod(CSAC, "csac", False),
           "mt-bc": FamilyMethod(BC, "bc", True), "mtcsac": FamilyMethod(CSAC, "csac", True),
           "hcsac": FamilyMethod(CSAC, "csac", True, relabel=True)}
CQL_METHODS = tuple(METHODS)

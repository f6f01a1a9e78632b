"""Batch PEARL (MBML, seed 000, Sec. 5.1, App. C.3 and H.2, Alg. 6): a baseline of Fig. 4.

PEARL (Rakelly et al., 2019) trained from the fixed task datasets only: its data collection (lines 1-10 of
PEARL's Alg. 1) is skipped, and for every task i both the context c^i and the RL batch b^i are drawn
uniformly from that task's dataset (there is no "recent data" in a batch). Otherwise it is PEARL's
soft actor-critic with the probabilistic context encoder q_φ(z | c) (`mtrl.algos.context`):
- one reparameterised z_i ~ q_φ(z | c^i) per task, shared by the rows of b^i;
- the SAC of PEARL's code (SAC v1): a tanh-Gaussian policy π(a | s, z), twin critics Q(s, z, a), a state
  value V(s, z) with a Polyak-averaged target V'; rewards multiplied by `reward_scale` and no learned
  temperature (the scale sets the weight of the entropy); Q target r·scale + γ(1 − d)·V'(s', z);
  V target min_j Q_j(s, z, ã) − log π(ã | s, z); policy loss log π − min_j Q_j plus PEARL's 1e-3 penalties
  on the pre-tanh mean and log-std;
- q_φ learns from the critic loss and β·KL(q_φ(z | c^i) ‖ N(0, I)) only (Alg. 6 line 11): the policy and V see
  z detached.

Choices and deviations:
- Hyper-parameters are those of PEARL's official code for its MuJoCo experiments (configs/default.py):
  3 × 300 networks, Adam 3e-4 for all, β = 0.1, reward scale 5, RL batch 256 per task, τ = 0.005, γ = 0.99,
  z of width 5, q_φ 3 × 200. Context sets of 100 rows: PEARL's per-environment configs use 64 (default),
  100 (walker-rand-params) or 256 (ant-dir, cheetah-dir, humanoid-dir); its point-robot config scales rewards
  by 100, not 5. Both are per-distribution settings in the YAML.
- Context rows are [s, a, s', r] as for MBML and Contextual BCQ (one evaluation protocol for all methods);
  PEARL drops s' unless tasks differ in dynamics.
- Alg. 6 takes every training task in every update (PEARL samples a meta-batch of 16 tasks) and sums the
  per-task losses; here they are averaged over tasks, the same step for Adam. PEARL's code sums the KL over
  tasks but averages the critic loss, which weights the KL K times more than Alg. 6: Alg. 6 is followed.
- Acting uses the policy's mean (PEARL evaluates deterministically); `deterministic_acting=False` samples.
- All randomness (z draws, policy noise) comes from the agent's own `torch.Generator`, seeded from torch's
  global generator and saved in `state_dict`, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mtrl.algos.context import ContextEncoder, InfersTasks, context_dim, kl_to_standard_normal, rsample
from mtrl.nn import AgentState, EnsembleMLP, TanhGaussianActor, adam, mlp, seeded_generator, soft_update


@dataclass(frozen=True)
class BatchPEARLConfig:
    """Hyper-parameters of Batch PEARL; defaults are those of PEARL's official code for MuJoCo."""

    z_dim: int = field(default=5, metadata={"min": 1, "max": 4096, "help": "task embedding width (PEARL latent_size)"})
    encoder_hidden: tuple[int, ...] = field(
        default=(200, 200, 200), metadata={"help": "hidden widths of the context encoder q_phi (Table 4)"}
    )
    hidden: tuple[int, ...] = field(
        default=(300, 300, 300), metadata={"help": "hidden widths of the policy, of each Q and of V (net_size)"}
    )
    lr: float = field(default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of every network"})
    kl_beta: float = field(
        default=0.1, metadata={"min": 0.0, "max": 1e6, "help": "weight beta of KL(q(z|c) || N(0, I)) (kl_lambda)"}
    )
    reward_scale: float = field(
        default=5.0, metadata={"min": 0.0, "max": 1e6, "help": "reward multiplier in the Q target (entropy weight)"}
    )
    batch_size: int = field(
        default=256, metadata={"min": 1, "max": 1_000_000, "help": "RL batch transitions per task and update"}
    )
    context_size: int = field(
        default=100, metadata={"min": 1, "max": 1_000_000, "help": "context rows per task and update"}
    )
    gamma: float = field(default=0.99, metadata={"min": 0.0, "max": 1.0, "help": "discount factor"})
    tau: float = field(default=0.005, metadata={"min": 0.0, "max": 1.0, "help": "Polyak rate of V' (new weight)"})
    policy_reg: float = field(
        default=1e-3, metadata={"min": 0.0, "max": 1e6, "help": "weight of the policy's mean² and log-std² penalties"}
    )
    deterministic_acting: bool = field(
        default=True, metadata={"help": "act with the policy's mean (PEARL's evaluation) rather than a sample"}
    )


def pearl_sac_networks(obs_dim: int, z_dim: int, act_dim: int, hidden: tuple[int, ...], max_action: float,
                       device: torch.device) -> tuple[TanhGaussianActor, EnsembleMLP, nn.Module, nn.Module]:
    """PEARL's soft actor-critic (v1) on the task-augmented state [s, z]: a tanh-Gaussian policy π(a | s, z), twin
    critics Q(s, z, a) as one ensemble, a state value V(s, z) and its Polyak-averaged target V' (no gradients)."""
    actor = TanhGaussianActor(obs_dim, act_dim, hidden, max_action, cond_dim=z_dim).to(device)
    critic = EnsembleMLP(2, obs_dim + z_dim + act_dim, hidden, 1).to(device)  # input [s, z, a]
    value = mlp(obs_dim + z_dim, hidden, 1).to(device)
    return actor, critic, value, copy.deepcopy(value).requires_grad_(False)


class BatchPEARL(InfersTasks, AgentState):
    """The Batch PEARL learner and multi-task policy.

    `update(batch)` takes float32 tensors on `device`, with D = 2·obs_dim + act_dim + 1 (rows [s, a, s', r],
    `mtrl.algos.context.context_rows`):
      observations, next_observations [K, batch_size, obs_dim]; actions [K, batch_size, act_dim]
      rewards, terminals [K, batch_size] (terminals 0/1, 1 only for a true termination)
      context [K, context_size, D]: c^i, drawn from the same task's dataset
    """

    NETWORKS = ("encoder", "actor", "critic", "value")
    TRAINING_PARTS = ("value_target", "actor_opt", "critic_opt", "value_opt")

    def __init__(self, cfg: BatchPEARLConfig, obs_dim: int, act_dim: int, max_action: float,
                 device: torch.device | str):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.device = torch.device(device)
        self.generator = seeded_generator(self.device)
        self.context_dim = context_dim(obs_dim, act_dim)
        z = cfg.z_dim
        self.encoder = ContextEncoder(self.context_dim, z, cfg.encoder_hidden).to(self.device)
        self.actor, self.critic, self.value, self.value_target = pearl_sac_networks(
            obs_dim, z, act_dim, cfg.hidden, self.max_action, self.device)
        self.actor_opt = adam(self.actor.parameters(), cfg.lr)
        # The critic loss trains θ_Q and, with β·KL, the encoder φ (Alg. 6 lines 11 and 13).
        self.critic_opt = adam([*self.critic.parameters(), *self.encoder.parameters()], cfg.lr)
        self.value_opt = adam(self.value.parameters(), cfg.lr)

    # ---------------------------------------------------------------- learning
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One step of the critics and q_φ, of V (and V'), and of the policy, as PEARL's; float metrics."""
        cfg = self.cfg
        k, b = batch["observations"].shape[:2]

        # Alg. 6 lines 5-6: q_φ(z | c^i) and one reparameterised z_i per task for the rows of b^i.
        mean, var = self.encoder(batch["context"])
        z = rsample(mean, var, self.generator)[:, None].expand(k, b, -1)
        state = torch.cat([batch["observations"], z], -1).flatten(0, 1)  # [K·N, obs + z]; φ's gradient path
        fixed_state = state.detach()
        actions = batch["actions"].flatten(0, 1)

        with torch.no_grad():
            next_v = self.value_target(torch.cat([batch["next_observations"], z], -1)).flatten()
            y = pearl_q_target(batch["rewards"].flatten(), batch["terminals"].flatten(), next_v, cfg.reward_scale,
                               cfg.gamma)
        q = self.critic(torch.cat([state, actions], -1)).squeeze(-1)  # [2, K·N]
        critic_loss = (q - y).pow(2).mean(1).sum()
        kl = kl_to_standard_normal(mean, var).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        (critic_loss + cfg.kl_beta * kl).backward()
        self.critic_opt.step()

        # V and the policy see z detached; Q's weights are frozen while they read the updated critics.
        pi_actions, log_pi, pi_mean, pi_std = self.actor.sample(fixed_state, self.generator)  # noise: ours
        self.critic.requires_grad_(False)
        min_q = self.critic(torch.cat([fixed_state, pi_actions], -1)).squeeze(-1).min(0).values
        self.critic.requires_grad_(True)

        value_loss = F.mse_loss(self.value(fixed_state).squeeze(-1), (min_q - log_pi).detach())
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()
        soft_update(self.value_target, self.value, cfg.tau)

        actor_loss = (log_pi - min_q).mean() + cfg.policy_reg * (pi_mean.pow(2).mean() + pi_std.log().pow(2).mean())
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        names = ("critic_loss", "kl", "value_loss", "actor_loss", "q_mean", "entropy")
        values = (critic_loss, kl, value_loss, actor_loss, q.mean(), -log_pi.mean())
        return dict(zip(names, torch.stack(values).detach().tolist(), strict=True))  # one device sync

    # ---------------------------------------------------------------- acting
    @torch.inference_mode()
    def act(self, obs, z, generator: torch.Generator | None = None) -> np.ndarray:
        """π(a | s, z) for one observation [obs_dim] or a batch [B, obs_dim] with z [z_dim] or [B, z_dim]:
        the mean action, or a sample drawn with `generator` (default: the agent's) if not `deterministic_acting`."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        s = obs_t.reshape(-1, self.obs_dim)
        z_t = torch.as_tensor(z, dtype=torch.float32, device=self.device).reshape(-1, self.cfg.z_dim)
        action = self.actor.sample(torch.cat([s, z_t.expand(len(s), -1)], -1),
                                   self.generator if generator is None else generator,
                                   deterministic=self.cfg.deterministic_acting, with_log_prob=False).action
        return action.reshape(*obs_t.shape[:-1], self.act_dim).cpu().numpy()


def pearl_q_target(rewards: torch.Tensor, terminals: torch.Tensor, next_v: torch.Tensor, reward_scale: float,
                   gamma: float) -> torch.Tensor:
    """PEARL's critic target: y = scale·r + γ(1 − d)·V'(s', z), element-wise (a pure function)."""
    return reward_scale * rewards + gamma * (1 - terminals) * next_v

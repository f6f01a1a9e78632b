"""FOCAL (seed 002): fully-offline meta-RL with distance metric learning and behaviour regularisation.

Three parts, trained together from the fixed task datasets (Alg. 1):
- a deterministic context encoder q_φ: an MLP with a tanh output maps each transition row [s, a, s', r] into
  (−1, 1)^z_dim, and a set's embedding z is the mean over its rows (Sec. 4.1). It learns only from the distance
  metric loss of Eq. 13 over pairs of context sets: the same task, ‖z_i − z_j‖²; different tasks, a repulsion
  β / (‖z_i − z_j‖ⁿ + ε) (`dml_power = −n`; the paper's best is the inverse square, n = 2). The actor and critic
  see z detached (the decoupled training of Sec. 5.2.3); `coupled: true` lets the critic's Bellman gradients
  reach the encoder too (the ablation of Fig. 5/9).
- BRAC (Wu et al., 2019) on the task-augmented state [s, z] (Eq. 6-9, 27-28): PEARL's soft actor-critic (twin
  Q, a state value V with a Polyak-averaged target, rewards times `reward_scale`, a tanh-Gaussian policy with
  PEARL's 1e-3 penalties) plus a divergence D(π(·|s, z), π_b(·|s)) to the behaviour policy, weighted by α,
  either in the value target (`regularisation: value`, value penalty: y = r + γ(1 − d)(V'(s', z) − α·D)) or in
  the actor's loss (`regularisation: policy`, policy regularisation: + α·D).
- D is the dual form of the KL divergence (Nowozin et al., 2016, as BRAC implements it): a discriminator
  g(s, z, a) gives a positive density-ratio estimate softplus(g), and D(s) = log softplus(g(s, z, a_π)) −
  softplus(g(s, z, a_b)) + 1 for a policy action a_π and the dataset's action a_b; g maximises E[D] with BRAC's
  interpolated gradient penalty (weight 5, slopes above 1), `discriminator_steps` times per update.

Choices where the paper is silent, and deviations (also in docs/algorithms.md):
- The paper's tables of per-family α, β and learning rates did not survive in our copy of it; the defaults
  below (α = 1 with policy regularisation, β = 1, ε = 0.1) are our choice and every one is a config key.
- Positive pairs: every update draws two independent context sets per task (the batch's `context` is
  [K, 2, C, D]): set 0 conditions the actor-critic, the pair is Eq. 13's same-task pair, and the negative pairs
  are the set-0 embeddings of every pair of different tasks. FOCAL's code instead draws a meta-batch of tasks
  with replacement, so same-task pairs occur by chance. Each half of Eq. 13 is averaged over its pairs.
- The divergence is estimated at the current state s with one policy sample (as FOCAL's code does; BRAC uses
  s'), and the discriminator is trained on the update's batch (FOCAL's code draws a fresh one per extra step).
  The gradient penalty follows BRAC (the slope of g with respect to the interpolated action); FOCAL's PyTorch
  port penalises the norm of g's output instead.
- Acting: z of the context rows seen so far (zeros, the centre of the latent cube, before any), the policy's
  mean action unless `deterministic_acting` is off. `posterior` reports z with zero variance (a point mass).
- All randomness comes from the agent's own generator, saved in `state_dict` (bit-identical resume).

Options that follow FOCAL's official code (docs/algorithms.md, "FOCAL in the reference code, audited"; every
default keeps the behaviour above): `train_alpha` (α adapted by BRAC's dual step towards `target_divergence`,
used clipped to [0, `alpha_max`]), `regularisation: none` (no BRAC), `context_next_obs: false` (rows [s, a, r]),
`dml_form: reference` (its root-mean-square distances and sqrt same-task term), `discriminator_lr`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from mtrl.algos.batch_pearl import BatchPEARL, pearl_q_target, pearl_sac_networks
from mtrl.algos.context import InfersTasks, context_dim
from mtrl.errors import ConfigError
from mtrl.nn import AgentState, adam, mlp, seeded_generator, soft_update

RATIO_EPS = 1e-8  # inside the log of the density-ratio estimate (BRAC's EPS)
REFERENCE_SAME_EPS = 1e-3  # under the square root of FOCAL's code's same-task term


@dataclass(frozen=True)
class FOCALConfig:
    """Hyper-parameters of FOCAL; sizes and rates of FOCAL's code (REFERENCE), the rest our documented choice."""

    z_dim: int = field(default=20, metadata={"min": 1, "max": 4096, "help": "task embedding width (in (-1, 1))"})
    encoder_hidden: tuple[int, ...] = field(
        default=(200, 200, 200), metadata={"help": "hidden widths of the deterministic context encoder"})
    hidden: tuple[int, ...] = field(
        default=(256, 256, 256), metadata={"help": "hidden widths of the policy, of each Q and of V"})
    discriminator_hidden: tuple[int, ...] = field(
        default=(256, 256), metadata={"help": "hidden widths of the KL-dual discriminator g(s, z, a)"})
    lr: float = field(default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of the actor-critic "
                                                                              "(and of the discriminator unless "
                                                                              "discriminator_lr)"})
    discriminator_lr: float | None = field(
        default=None, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of the discriminator (default: lr; "
                                                                "FOCAL's code: 1e-4, c_lr)"})
    encoder_lr: float = field(default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of the "
                                                                                      "encoder"})
    batch_size: int = field(
        default=256, metadata={"min": 1, "max": 1_000_000, "help": "RL batch transitions per task and update"})
    context_size: int = field(
        default=64, metadata={"min": 1, "max": 1_000_000, "help": "rows per context set (two sets per task)"})
    context_next_obs: bool = field(
        default=True, metadata={"help": "the encoder reads rows [s, a, s', r]; false: [s, a, r] (FOCAL's code "
                                        "unless use_next_obs_in_context, which its dynamics families set)"})
    dml_power: float = field(
        default=-2.0, metadata={"min": -8.0, "max": 8.0,
                                "help": "power of the different-task term: -n repels by beta/(d^n + eps) (Eq. 13; "
                                        "-2 inverse square, -1 inverse); +n attracts apart by -beta*d^n (the L1/L2 "
                                        "variants of Fig. 2); 0 is not allowed"})
    dml_beta: float = field(default=1.0, metadata={"min": 0.0, "max": 1e6, "help": "weight beta of the different-"
                                                                                   "task term"})
    dml_epsilon: float = field(default=0.1, metadata={"min": 1e-12, "max": 1e6, "help": "epsilon in beta/(d^n + "
                                                                                        "epsilon)"})
    dml_form: Literal["eq13", "reference"] = field(
        default="eq13", metadata={"help": "eq13: squared Euclidean distance for the same task, Euclidean d in the "
                                          "different-task term; reference (FOCAL's code): d is the root mean square "
                                          "over z's dimensions and the same-task term sqrt(d^2 + 1e-3)"})
    dml_weight: float = field(default=1.0, metadata={"min": 0.0, "max": 1e6, "help": "weight of the distance "
                                                                                    "metric loss"})
    coupled: bool = field(default=False, metadata={"help": "also train the encoder with the critic's Bellman "
                                                           "gradients (ablation; the paper decouples)"})
    regularisation: Literal["policy", "value", "none"] = field(
        default="policy", metadata={"help": "where alpha*D goes: the actor's loss (policy), the value target "
                                            "(value penalty) or nowhere (none: no BRAC, FOCAL's use_brac 0)"})
    alpha: float = field(default=1.0, metadata={"min": 0.0, "max": 1e9, "help": "weight alpha of the divergence "
                                                                                "to the behaviour policy (its "
                                                                                "initial value if train_alpha)"})
    train_alpha: bool = field(
        default=False, metadata={"help": "adapt alpha after every update by alpha += alpha_lr * (mean D - "
                                         "target_divergence), used clipped to [0, alpha_max] (FOCAL's code, BRAC)"})
    alpha_max: float = field(default=2000.0, metadata={"min": 0.0, "max": 1e9, "help": "upper clip of a trained "
                                                                                       "alpha"})
    target_divergence: float = field(
        default=0.05, metadata={"min": -1e6, "max": 1e6, "help": "the divergence a trained alpha steers towards"})
    alpha_lr: float = field(default=1.0, metadata={"min": 0.0, "max": 1e9, "help": "step size of a trained alpha"})
    discriminator_steps: int = field(
        default=3, metadata={"min": 1, "max": 100, "help": "discriminator updates per update (BRAC c_iter)"})
    gradient_penalty: float = field(
        default=5.0, metadata={"min": 0.0, "max": 1e6, "help": "weight of the discriminator's gradient penalty"})
    reward_scale: float = field(default=5.0, metadata={"min": 0.0, "max": 1e6, "help": "reward multiplier in the "
                                                                                       "Q target"})
    gamma: float = field(default=0.99, metadata={"min": 0.0, "max": 1.0, "help": "discount factor"})
    tau: float = field(default=0.005, metadata={"min": 0.0, "max": 1.0, "help": "Polyak rate of V'"})
    policy_reg: float = field(
        default=1e-3, metadata={"min": 0.0, "max": 1e6, "help": "weight of the policy's mean² and log-std² penalties"})
    deterministic_acting: bool = field(default=True, metadata={"help": "act with the policy's mean"})

    def __post_init__(self):
        if self.dml_power == 0:
            raise ConfigError("FOCAL dml_power: 0 has no distance term; use -2 (inverse square, the paper's) or "
                              "another nonzero power")


def row_columns(obs_dim: int, act_dim: int, next_obs: bool) -> list[int]:
    """The columns of a context row [s, a, s', r] the encoder reads: all of them, or [s, a, r] without s'."""
    width = context_dim(obs_dim, act_dim)
    return list(range(width)) if next_obs else [*range(obs_dim + act_dim), width - 1]


class DeterministicEncoder(nn.Module):
    """q_φ: tanh(MLP(row)) per row, averaged over a set's rows (no rows: zeros). It takes full rows [s, a, s', r]
    and reads `columns` of them (default: all)."""

    def __init__(self, row_dim: int, z_dim: int, hidden: tuple[int, ...], columns: list[int] | None = None):
        super().__init__()
        self.columns = None if columns is None or columns == list(range(row_dim)) else torch.tensor(columns)
        self.net = mlp(row_dim if self.columns is None else len(columns), hidden, z_dim)
        self.row_dim, self.z_dim = row_dim, z_dim

    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        """z [..., z_dim] of the sets rows [..., N, D]."""
        if rows.shape[-2] == 0:
            return rows.new_zeros(*rows.shape[:-2], self.z_dim)
        if self.columns is not None:
            rows = rows.index_select(-1, self.columns.to(rows.device))
        return torch.tanh(self.net(rows)).mean(-2)

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, zero variance): the `InfersTasks` face of a point-mass posterior."""
        z = self.embed(rows)
        return z, torch.zeros_like(z)


def distance_metric_loss(z: torch.Tensor, z_same: torch.Tensor, power: float, beta: float, epsilon: float,
                         form: str = "eq13") -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 13 for K tasks: `z` [K, z_dim] and `z_same` (another set of each task). Returns the loss and the mean
    Euclidean distance between different tasks' embeddings. Same-task pairs: d(z_i, z'_i)², averaged over K;
    different tasks (i < j): β/(d(z_i, z_j)ⁿ + ε) for power −n, −β·d(z_i, z_j)ⁿ for power +n, averaged over the
    pairs. `form` eq13: d is the Euclidean distance; reference (FOCAL's code, `z_loss`): d is the root mean square
    over the z_dim coordinates and a same-task pair costs sqrt(d² + REFERENCE_SAME_EPS) instead of d²."""
    per_coordinate = 1.0 / z.shape[-1] if form == "reference" else 1.0
    same = (z - z_same).pow(2).sum(-1).mul(per_coordinate)
    if form == "reference":
        same = (same + REFERENCE_SAME_EPS).sqrt()
    i, j = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    euclidean = (z[i] - z[j]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    distance = euclidean * per_coordinate ** 0.5
    if power < 0:
        different = beta / (distance.pow(-power) + epsilon)
    else:
        different = -beta * distance.pow(power)
    mean = torch.mean if len(i) else torch.sum  # no pairs (one task): 0
    return same.mean() + mean(different), mean(euclidean)


def kl_dual(logits_policy: torch.Tensor, logits_behaviour: torch.Tensor) -> torch.Tensor:
    """BRAC's dual estimate of KL(π ‖ π_b) per state: log r(a_π) − r(a_b) + 1 with r = softplus(logit) > 0."""
    return torch.log(F.softplus(logits_policy) + RATIO_EPS) - F.softplus(logits_behaviour) + 1.0


class FOCAL(InfersTasks, AgentState):
    """The FOCAL learner and multi-task policy.

    `update(batch)` takes float32 tensors on `device`, with D = 2·obs_dim + act_dim + 1 (rows [s, a, s', r]):
      observations, next_observations [K, batch_size, obs_dim]; actions [K, batch_size, act_dim]
      rewards, terminals [K, batch_size]
      context [K, 2, context_size, D]: two independent context sets of each task (`mtrl.rl.batches.focal_sampler`)
    """

    NETWORKS = ("encoder", "actor")
    TRAINING_PARTS = ("critic", "value", "value_target", "discriminator", "encoder_opt", "actor_opt", "critic_opt",
                      "value_opt", "discriminator_opt", "alpha_var")  # alpha_var: only with train_alpha

    def __init__(self, cfg: FOCALConfig, obs_dim: int, act_dim: int, max_action: float,
                 device: torch.device | str):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.device = torch.device(device)
        self.generator = seeded_generator(self.device)
        self.context_dim = context_dim(obs_dim, act_dim)
        z = cfg.z_dim
        self.encoder = DeterministicEncoder(self.context_dim, z, cfg.encoder_hidden,
                                            row_columns(obs_dim, act_dim, cfg.context_next_obs)).to(self.device)
        self.actor, self.critic, self.value, self.value_target = pearl_sac_networks(
            obs_dim, z, act_dim, cfg.hidden, self.max_action, self.device)
        self.discriminator = mlp(obs_dim + z + act_dim, cfg.discriminator_hidden, 1).to(self.device)
        self.encoder_opt = adam(self.encoder.parameters(), cfg.encoder_lr)
        self.actor_opt = adam(self.actor.parameters(), cfg.lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.lr)
        self.value_opt = adam(self.value.parameters(), cfg.lr)
        self.discriminator_opt = adam(self.discriminator.parameters(),
                                      cfg.lr if cfg.discriminator_lr is None else cfg.discriminator_lr)
        # a trained α, unclipped (FOCAL's code clips where it is used); a fixed α is cfg.alpha
        self.alpha_var = torch.tensor(float(cfg.alpha), device=self.device) if cfg.train_alpha else None

    @property
    def alpha(self) -> torch.Tensor | float:
        """The weight of D now: cfg.alpha, or the trained α clipped to [0, alpha_max]."""
        if self.alpha_var is None:
            return self.cfg.alpha
        return self.alpha_var.clamp(0.0, self.cfg.alpha_max)

    # ---------------------------------------------------------------- learning
    def divergence(self, state: torch.Tensor, policy_actions: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """D(s) per row of `state` [N, obs + z] (BRAC's dual KL with the discriminator)."""
        logits_policy = self.discriminator(torch.cat([state, policy_actions], -1)).squeeze(-1)
        logits_behaviour = self.discriminator(torch.cat([state, actions], -1)).squeeze(-1)
        return kl_dual(logits_policy, logits_behaviour)

    def _gradient_penalty(self, state: torch.Tensor, policy_actions: torch.Tensor,
                          actions: torch.Tensor) -> torch.Tensor:
        """BRAC: the discriminator's slope in the action, at random points between a_π and a_b, kept ≤ 1."""
        mix = torch.rand(len(state), 1, generator=self.generator, device=self.device)
        between = (policy_actions + mix * (actions - policy_actions)).requires_grad_(True)
        logits = self.discriminator(torch.cat([state, between], -1)).sum()
        (grad,) = torch.autograd.grad(logits, between, create_graph=True)
        slope = (grad.pow(2).sum(-1) + RATIO_EPS).sqrt()
        return self.cfg.gradient_penalty * F.relu(slope - 1.0).pow(2).mean()

    def _train_discriminator(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        for _ in range(self.cfg.discriminator_steps):
            with torch.no_grad():
                policy_actions = self.actor.sample(state, self.generator, with_log_prob=False).action
            loss = -self.divergence(state, policy_actions, actions).mean() + self._gradient_penalty(
                state, policy_actions, actions)
            self.discriminator_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.discriminator_opt.step()
        return loss.detach()

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One step of the encoder (Eq. 13) and critics, of the discriminator, of V (and V'), and of the policy."""
        cfg = self.cfg
        k, b = batch["observations"].shape[:2]
        z_sets = self.encoder.embed(batch["context"])  # [K, 2, z]
        dml, spread = distance_metric_loss(z_sets[:, 0], z_sets[:, 1], cfg.dml_power, cfg.dml_beta, cfg.dml_epsilon,
                                           cfg.dml_form)
        z = z_sets[:, 0, None].expand(k, b, -1)
        critic_z = z if cfg.coupled else z.detach()
        state = torch.cat([batch["observations"], z.detach()], -1).flatten(0, 1)  # [K·N, obs + z], no path to φ
        next_state = torch.cat([batch["next_observations"], z.detach()], -1).flatten(0, 1)
        actions = batch["actions"].flatten(0, 1)

        discriminator_loss = self._train_discriminator(state, actions)
        with torch.no_grad():
            policy_actions = self.actor.sample(state, self.generator, with_log_prob=False).action
            divergence = self.divergence(state, policy_actions, actions)
            next_v = self.value_target(next_state).squeeze(-1)
            if cfg.regularisation == "value":
                next_v = next_v - self.alpha * divergence
            y = pearl_q_target(batch["rewards"].flatten(), batch["terminals"].flatten(), next_v, cfg.reward_scale,
                               cfg.gamma)
        critic_state = torch.cat([batch["observations"], critic_z], -1).flatten(0, 1)
        q = self.critic(torch.cat([critic_state, actions], -1)).squeeze(-1)  # [2, K·N]
        critic_loss = (q - y).pow(2).mean(1).sum()
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        (cfg.dml_weight * dml + critic_loss).backward()  # decoupled: the critic's loss has no path to φ
        self.encoder_opt.step()
        self.critic_opt.step()

        pi_actions, log_pi, pi_mean, pi_std = self.actor.sample(state, self.generator)
        frozen = (self.critic, self.discriminator)
        for net in frozen:
            net.requires_grad_(False)
        min_q = self.critic(torch.cat([state, pi_actions], -1)).squeeze(-1).min(0).values
        actor_divergence = self.divergence(state, pi_actions, actions)
        for net in frozen:
            net.requires_grad_(True)

        value_loss = F.mse_loss(self.value(state).squeeze(-1), (min_q - log_pi).detach())
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()
        soft_update(self.value_target, self.value, cfg.tau)

        actor_loss = (log_pi - min_q).mean() + cfg.policy_reg * (pi_mean.pow(2).mean() + pi_std.log().pow(2).mean())
        if cfg.regularisation == "policy":
            actor_loss = actor_loss + self.alpha * actor_divergence.mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        alpha = torch.as_tensor(self.alpha, device=self.device)  # the α this update used
        if self.alpha_var is not None:  # BRAC's dual step: raise α while D is above its target, lower it below
            self.alpha_var += cfg.alpha_lr * (divergence.mean() - cfg.target_divergence)

        names = ("dml", "task_distance", "critic_loss", "discriminator_loss", "divergence", "value_loss",
                 "actor_loss", "q_mean", "entropy", "alpha")
        values = (dml, spread, critic_loss, discriminator_loss, divergence.mean(), value_loss, actor_loss, q.mean(),
                  -log_pi.mean(), alpha)
        return dict(zip(names, torch.stack([v.detach() for v in values]).tolist(), strict=True))  # one sync

    # ---------------------------------------------------------------- acting
    act = BatchPEARL.act  # the same acting: π(a | s, z), its mean action unless `deterministic_acting` is off

"""MBML: Multi-task Batch RL with Metric Learning (Li et al., 2020; seed 000), the distillation phase.

K frozen per-task BCQ policies (Q_i, G_i, ξ_i) are distilled into one task-conditioned policy: a context
encoder q_φ(z | c) (`mtrl.algos.context`) infers the task embedding z, and three networks regress onto the
teachers given z: Q_D(s, a, z) ≈ Q_i(s, a) (Eq. 3/14), G_D(s, ν, z) ≈ G_i(s, ν) (Eq. 4/15) and
ξ_D(s, â, z) ≈ ξ_i(s, â) for candidates â = G_i(s, ν) (Eq. 5/16). A triplet loss over transitions relabelled
by the other tasks' reward (and dynamics) models makes q_φ read the rewards rather than only the state-action
pairs (Eq. 8-9 with the sets of Alg. 4, Eq. 12-13). One `update` minimises Eq. 10 for all K tasks at once.

Variants (Sec. 5.2, Tables 5-7):
- `mbml`: q_φ sees c_i ∪ c̃_i (c̃_i: relabelled rows from the other tasks); loss = triplet + distillation.
- `no-triplet`: the same encoder input, distillation only (q_φ learns from L_Q and the KL term).
- `no-relabel`: N context sets per task of the larger size; triplet over the hardest pairs (Eq. 11).
- `neither`: one context set per task of the larger size; distillation only.

Choices where the paper leaves room (and deviations), all following the reference code where it speaks:
- G_D's noise ν is the teacher VAE's latent (its width: 2·act_dim in BCQ), drawn N(0, 1) clipped to ±0.5 as
  BCQ decodes, in training and in acting alike. G_D's output is max_action·tanh(·), like the BCQ decoder.
- ξ_D outputs the correction itself, bounded like BCQ's: Φ·max_action·tanh(·). Its target is the teacher's
  effective correction ξ_i(s, â) − â (the teacher's corrected action, clipped to the bounds, minus â), so
  Eq. 17's a_m + ξ_D(s, a_m, z) imitates the teacher's action; the sum is clipped to the action bounds.
- The teachers are fixed targets: they run under no_grad ("the gradient of L_ξ also updates G_i" in Sec. 3.1
  is not followed; the reference code does not train G_i here either).
- One reparameterised z_i per task and update (Alg. 4 line 13), shared by that task's N batch rows. G_D and
  ξ_D see z detached (the bars of Eq. 4-5), so q_φ learns from L_Q, β·KL and the triplet loss only.
- L_Q is the mean squared error; L_G and L_ξ are squared norms over the action (‖·‖²) averaged over rows;
  every loss is a mean over tasks (Alg. 4 lines 21-24). β·KL uses the posterior z_i was drawn from.
- Calibration (issue 32; defaults are the paper's): `kl_scale: q_target_variance` multiplies β by the variance
  of the batch's teacher Q targets (no gradient), so β means the same against L_Q, whose size grows with the
  square of the reward scale, on a 20-step toy and on MuJoCo; `heads_z: mean` trains Q_D, G_D and ξ_D on the
  posterior mean instead of a sample, so they are not trained on a z that is mostly noise while the
  posterior is wide.
- The divergence d(a, b) of Eq. 8, 11, 13 is KL(q(a) ‖ q(b)), the anchor first.
- Alg. 4 sets: c̃_i is a uniform draw without replacement of `relabelled_context_size` rows among the
  confident rows of ∪_{j≠i} c_{j→i} (all of them when there are fewer); x_{j→i} are its rows from task j, x_j
  the same rows of c_j before relabelling, and c_{i,j} a uniform draw of |x_j| rows of c_i (all of c_i if
  |x_j| > |c_i|). `triplet_sets: reference` uses instead every confident row of c_{j→i} as x_{j→i} (the
  official code: up to `context_size` rows per pair rather than ≈ relabelled_context_size/(K−1)). A pair (i, j)
  with no row in its x_{j→i} has no triplet: it adds exactly zero loss and gradient, L^i
  averages Eq. 13 over the pairs that have one, and L_triplet over the tasks that have any (0 if none does).
- `no-relabel`: distillation conditions on the first of the N sets of each task; all N feed Eq. 11.
- All randomness comes from the agent's own `torch.Generator` (seeded from torch's global generator), whose
  state is part of `state_dict`, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mtrl.algos.bcq import DECODE_LATENT_CLIP, BCQPolicy
from mtrl.algos.context import (
    ContextEncoder,
    InfersTasks,
    context_dim,
    gaussian_kl,
    kl_to_standard_normal,
    product_of_gaussians,
    rsample,
)
from mtrl.nn import AgentState, adam, mlp, seeded_generator

Variant = Literal["mbml", "no-triplet", "no-relabel", "neither"]
VARIANTS: tuple[str, ...] = typing.get_args(Variant)
RELABEL_VARIANTS = ("mbml", "no-triplet")


@dataclass(frozen=True)
class MBMLConfig:
    """Hyper-parameters of the distillation phase; defaults are the paper's (App. C, Tables 2, 5-7)."""

    z_dim: int = field(default=20, metadata={"min": 1, "max": 4096, "help": "task embedding width"})
    encoder_hidden: tuple[int, ...] = field(
        default=(200, 200, 200), metadata={"help": "hidden widths of the context encoder q_phi (per row)"}
    )
    q_hidden: tuple[int, ...] = field(
        default=(1024,) * 9, metadata={"help": "hidden widths of the distilled critic Q_D(s, a, z)"}
    )
    g_hidden: tuple[int, ...] = field(
        default=(1024,) * 7, metadata={"help": "hidden widths of the distilled candidate generator G_D"}
    )
    xi_hidden: tuple[int, ...] = field(
        default=(1024,) * 8, metadata={"help": "hidden widths of the distilled perturbation model xi_D"}
    )
    lr: float = field(
        default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size of all networks"}
    )
    batch_size: int = field(
        default=128, metadata={"min": 1, "max": 1_000_000, "help": "training transitions per task and update"}
    )
    context_size: int = field(
        default=64,
        metadata={"min": 1, "max": 1_000_000, "help": "own context rows per task (mbml, no-triplet)"},
    )
    relabelled_context_size: int = field(
        default=64,
        metadata={"min": 1, "max": 1_000_000, "help": "relabelled rows per context (mbml, no-triplet)"},
    )
    no_relabel_context_size: int = field(
        default=128, metadata={"min": 1, "max": 1_000_000, "help": "rows per context set of no-relabel"}
    )
    neither_context_size: int = field(
        default=128, metadata={"min": 1, "max": 1_000_000, "help": "rows per context set of neither"}
    )
    hard_negative_sets: int = field(
        default=10, metadata={"min": 2, "max": 10_000, "help": "context sets per task in Eq. 11 (no-relabel)"}
    )
    kl_beta: float = field(
        default=0.1, metadata={"min": 0.0, "max": 1e6, "help": "weight of KL(q(z|c) || N(0, I)) in L_Q"}
    )
    kl_scale: Literal["absolute", "q_target_variance"] = field(
        default="absolute",
        metadata={"help": "what kl_beta is relative to: absolute (the paper: beta itself weighs the KL) or "
                          "q_target_variance (beta x the variance of the batch's teacher Q targets, so the KL "
                          "weighs the same against L_Q at every reward scale)"},
    )
    heads_z: Literal["sample", "mean"] = field(
        default="sample",
        metadata={"help": "the z that Q_D, G_D and xi_D are trained on: a sample of q(z|c) (the paper, Alg. 4) "
                          "or its mean"},
    )
    triplet_margin: float = field(default=2.0, metadata={"min": 0.0, "max": 1e6, "help": "triplet margin m"})
    triplet_sets: Literal["alg4", "reference"] = field(
        default="alg4",
        metadata={"help": "anchor sets x_{j->i}: alg4 (the rows of the drawn c~_i from task j, the paper) or "
                          "reference (every confident row of c_{j->i}, the official code)"},
    )
    num_candidates: int = field(
        default=10, metadata={"min": 1, "max": 10_000, "help": "candidate actions per state (Eq. 17)"}
    )
    phi: float = field(
        default=0.05, metadata={"min": 0.0, "max": 1.0, "help": "bound of xi_D's correction, x max_action"}
    )


class TeacherTargets(NamedTuple):
    """What the frozen BCQ teachers say about one batch, each [K, N, ...]."""

    latent: torch.Tensor  # ν fed to G_i and G_D
    q: torch.Tensor  # Q_i(s, a)
    candidate: torch.Tensor  # â = G_i(s, ν)
    correction: torch.Tensor  # ξ_i(s, â) − â


class MBML(InfersTasks, AgentState):
    """The multi-task policy of MBML and its distillation update.

    `teachers`: the frozen BCQ networks of the K training tasks as one task-batched `BCQPolicy` (tasks = K, in
    task order; `BCQPolicy.stack_policy_states`), evaluated in one batched pass per network. Without teachers the
    instance can only act (pass `latent_dim`, or build it with `from_policy_state`).

    `update(batch)` takes a dict of float32 tensors on `device` (`batch_shapes()` gives the exact shapes),
    with D = 2·obs_dim + act_dim + 1 and rows [s, a, s', r] (`mtrl.algos.context.context_rows`):
      observations        [K, batch_size, obs_dim]     training batch of each task (Alg. 4 line 14)
      actions             [K, batch_size, act_dim]
      context             mbml / no-triplet: [K, context_size, D]               c_i
                          no-relabel:        [K, hard_negative_sets, no_relabel_context_size, D]   c_i^n
                          neither:           [K, neither_context_size, D]
      relabelled_context  [K, K, context_size, D]  (mbml / no-triplet): [i, j, t] is context[j, t] with its
                          reward (and, for dynamics families, next state) predicted by task i's ensemble
      relabel_mask        [K, K, context_size] bool (mbml / no-triplet): task i's ensemble is confident on
                          context[j, t] (Alg. 3); the diagonal i == j is ignored, and relabelled rows that
                          are not confident are ignored (they may hold anything, NaN included)
    """

    NETWORKS = ("encoder", "q_d", "g_d", "xi_d")  # checkpoints (`AgentState`); Q_D under "q_d"
    TRAINING_PARTS = ("optimizer",)
    SIZES = {"obs_dim": int, "act_dim": int, "max_action": float, "latent_dim": int}

    def __init__(
        self,
        cfg: MBMLConfig,
        obs_dim: int,
        act_dim: int,
        max_action: float,
        teachers: BCQPolicy | None,
        device: torch.device | str,
        latent_dim: int | None = None,
        variant: Variant = "mbml",
    ):
        if variant not in VARIANTS:
            raise ValueError(f"MBML variant must be one of {VARIANTS}, got {variant!r}")
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
        self.variant = variant
        self.device = torch.device(device)
        self.generator = seeded_generator(self.device)
        self.teachers = teachers
        self.tasks = 0 if teachers is None else teachers.tasks
        # G_D's noise input has the teachers' VAE latent width; without teachers, latent_dim must say it.
        latents = ({teachers.vae.latent_dim} if teachers is not None else set()) | ({latent_dim} - {None})
        if len(latents) != 1:
            raise ValueError(
                f"G_D's noise width is undetermined: teacher VAE latents / latent_dim give {latents}"
            )
        (self.latent_dim,) = latents

        z = cfg.z_dim
        self.context_dim = context_dim(obs_dim, act_dim)
        self.encoder = ContextEncoder(self.context_dim, z, cfg.encoder_hidden)
        self.q_d = mlp(obs_dim + act_dim + z, cfg.q_hidden, 1)  # input [s, a, z]: loadable into SAC critics
        self.g_d = mlp(obs_dim + self.latent_dim + z, cfg.g_hidden, act_dim)
        self.xi_d = mlp(obs_dim + act_dim + z, cfg.xi_hidden, act_dim)
        self.networks = nn.ModuleDict(
            {"encoder": self.encoder, "q_d": self.q_d, "g_d": self.g_d, "xi_d": self.xi_d}
        ).to(self.device)
        self.optimizer = adam(self.networks.parameters(), cfg.lr)

    @classmethod
    def from_policy_state(cls, cfg: MBMLConfig, state: dict, device: torch.device | str = "cpu") -> MBML:
        """An acting-only MBML (no teachers) from `policy_state_dict()`."""
        algo = cls(cfg, teachers=None, device=device, **cls.policy_sizes(state))
        algo.load_policy_state(state)
        return algo

    def batch_shapes(self) -> dict[str, tuple[int, ...]]:
        """The keys `update` reads for this variant and their exact shapes (see the class docstring)."""
        cfg, k, d = self.cfg, self.tasks, self.context_dim
        shapes = {
            "observations": (k, cfg.batch_size, self.obs_dim),
            "actions": (k, cfg.batch_size, self.act_dim),
        }
        if self.variant in RELABEL_VARIANTS:
            shapes["context"] = (k, cfg.context_size, d)
            shapes["relabelled_context"] = (k, k, cfg.context_size, d)
            shapes["relabel_mask"] = (k, k, cfg.context_size)
        elif self.variant == "no-relabel":
            shapes["context"] = (k, cfg.hard_negative_sets, cfg.no_relabel_context_size, d)
        else:
            shapes["context"] = (k, cfg.neither_context_size, d)
        return shapes

    # ---------------------------------------------------------------- distilled functions
    def _candidates(self, obs: torch.Tensor, latent: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """G_D(s, ν, z): a candidate action in the bounds."""
        return self.max_action * torch.tanh(self.g_d(torch.cat([obs, latent, z], -1)))

    def _corrections(self, obs: torch.Tensor, action: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """ξ_D(s, a, z): a correction of at most Φ·max_action per dimension."""
        return self.cfg.phi * self.max_action * torch.tanh(self.xi_d(torch.cat([obs, action, z], -1)))

    def _latent(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """ν ~ N(0, 1) clipped as BCQ clips the latent it decodes."""
        noise = torch.randn(*shape, self.latent_dim, generator=generator, device=self.device)
        return noise.clamp(-DECODE_LATENT_CLIP, DECODE_LATENT_CLIP)

    # ---------------------------------------------------------------- learning
    @torch.no_grad()
    def _teacher_targets(self, obs: torch.Tensor, actions: torch.Tensor) -> TeacherTargets:
        latent = self._latent(obs.shape[:2], self.generator)
        teachers = self.teachers  # task i's rows go through teacher i: one batched matmul per layer
        candidate = teachers.vae.decode(obs, latent)
        correction = teachers.actor(obs, candidate) - candidate
        return TeacherTargets(latent, teachers.critic.q1(obs, actions), candidate, correction)

    def _infer_tasks(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Posterior (mean, var) [K, z] that z_i is drawn from, plus the triplet loss and its statistics."""
        cfg = self.cfg
        if self.variant == "neither":
            mean, var = self.encoder(batch["context"])
            return mean, var, {}
        if self.variant == "no-relabel":
            mean, var = self.encoder(batch["context"])  # [K, sets, z]
            triplet, active = hard_negative_triplet_loss(mean, var, cfg.triplet_margin)
            return mean[:, 0], var[:, 0], {"triplet": triplet, "triplet_active": active}

        context, relabelled = batch["context"], batch["relabelled_context"]
        k, n_context = context.shape[:2]
        tasks = torch.arange(k, device=self.device)
        source, row, chosen = sample_relabelled_subset(
            batch["relabel_mask"], cfg.relabelled_context_size, self.generator
        )
        drawn = relabelled[tasks[:, None], source, row]  # c̃_i; unused slots may hold unconfident garbage
        drawn = torch.where(chosen[..., None], drawn, 0.0)
        # One encoder pass over c_i and c̃_i; every set below is a mask over these per-row factors.
        mean, var = self.encoder.factors(torch.cat([context, drawn], 1))
        union = torch.cat([torch.ones(k, n_context, dtype=torch.bool, device=self.device), chosen], 1)
        post_mean, post_var = product_of_gaussians(mean, var, union)  # q(z | {c_i, c̃_i}), Alg. 4 line 12
        stats = {"relabelled_rows": chosen.sum(1).float().mean()}
        if self.variant == "no-triplet":
            return post_mean, post_var, stats

        own_mean, own_var = mean[:, :n_context], var[:, :n_context]
        if cfg.triplet_sets == "alg4":  # x_{j→i}: the rows of c̃_i that came from task j
            rel_mean, rel_var = mean[:, n_context:], var[:, n_context:]
            from_task = (source[:, None, :] == tasks[None, :, None]) & chosen[:, None, :]  # [i, j, ·]
            anchor = product_of_gaussians(rel_mean[:, None], rel_var[:, None], from_task)  # q(x_{j→i})
            negative = product_of_gaussians(  # q(x_j): the same rows of c_j with their own rewards
                own_mean[source, row][:, None], own_var[source, row][:, None], from_task
            )
        else:  # reference code: x_{j→i} is every confident row of c_{j→i}
            off_diagonal = ~torch.eye(k, dtype=torch.bool, device=self.device)[:, :, None]
            from_task = batch["relabel_mask"] & off_diagonal  # [i, j, t]
            confident_rows = torch.where(from_task[..., None], relabelled, 0.0)  # the others may hold NaN
            anchor = self.encoder(confident_rows, from_task)
            negative = product_of_gaussians(own_mean[None], own_var[None], from_task)
        sizes = from_task.sum(-1)  # |x_j| for every (i, j)
        positive_rows = random_subset_mask(sizes, n_context, self.generator)  # c_{i,j} ⊂ c_i
        positive = product_of_gaussians(own_mean[:, None], own_var[:, None], positive_rows)  # q(c_{i,j})
        triplet, active = triplet_loss(anchor, positive, negative, cfg.triplet_margin, sizes > 0)
        coverage = (sizes > 0).sum() / max(k * (k - 1), 1)  # fraction of ordered pairs with a triplet
        stats |= {"triplet": triplet, "triplet_active": active, "pair_coverage": coverage}
        return post_mean, post_var, stats

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every term of Eq. 10 (scalars): q, kl (unweighted), g, xi, triplet, total, plus statistics."""
        if self.teachers is None:
            raise ValueError("MBML.update needs the per-task BCQ teachers")
        for key, shape in self.batch_shapes().items():
            if key not in batch:
                raise ValueError(f"MBML ({self.variant}) needs batch[{key!r}] of shape {shape}")
            if tuple(batch[key].shape) != shape:
                raise ValueError(f"batch[{key!r}] has shape {tuple(batch[key].shape)}, expected {shape}")
            if (batch[key].dtype == torch.bool) != (key == "relabel_mask"):
                raise ValueError(f"batch[{key!r}] has dtype {batch[key].dtype}")
        obs, actions = batch["observations"], batch["actions"]
        target = self._teacher_targets(obs, actions)
        mean, var, terms = self._infer_tasks(batch)
        triplet = terms.pop("triplet", torch.zeros((), device=self.device))

        z = mean if self.cfg.heads_z == "mean" else rsample(mean, var, self.generator)
        z = z[:, None].expand(-1, obs.shape[1], -1)  # z_i for all of task i
        q = (self.q_d(torch.cat([obs, actions, z], -1)).squeeze(-1) - target.q).pow(2).mean()
        kl = kl_to_standard_normal(mean, var).mean()
        z_bar = z.detach()
        g = (self._candidates(obs, target.latent, z_bar) - target.candidate).pow(2).sum(-1).mean()
        xi = (self._corrections(obs, target.candidate, z_bar) - target.correction).pow(2).sum(-1).mean()
        kl_weight = self.cfg.kl_beta * (target.q.var() if self.cfg.kl_scale == "q_target_variance" else 1.0)
        total = triplet + q + kl_weight * kl + g + xi
        return {"total": total, "q": q, "kl": kl, "g": g, "xi": xi, "triplet": triplet,
                "kl_weight": torch.as_tensor(kl_weight, device=self.device), **terms}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One Adam step on Eq. 10 over all K tasks; returns every entry of `losses` as a float."""
        losses = self.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        values = torch.stack([v.detach().float() for v in losses.values()])
        return dict(zip(losses, values.tolist(), strict=True))  # one device sync for all metrics

    # ---------------------------------------------------------------- acting
    @torch.inference_mode()
    def act(self, obs, z, generator: torch.Generator | None = None) -> np.ndarray:
        """Eq. 17 for one observation [obs_dim] or a batch [B, obs_dim], with z [z_dim] or [B, z_dim].

        `num_candidates` candidates from G_D, each corrected by ξ_D and clipped to the bounds; the one Q_D
        values most is returned, as an array shaped like `obs` with act_dim on the last axis.
        """
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        m, generator = self.cfg.num_candidates, self.generator if generator is None else generator
        s = obs_t.reshape(-1, 1, self.obs_dim).expand(-1, m, -1)  # [B, M, obs]
        z_t = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        z_t = z_t.reshape(-1, 1, self.cfg.z_dim).expand(s.shape[0], m, -1)
        candidates = self._candidates(s, self._latent(s.shape[:2], generator), z_t)
        actions = (candidates + self._corrections(s, candidates, z_t)).clamp(
            -self.max_action, self.max_action
        )
        best = self.q_d(torch.cat([s, actions, z_t], -1)).squeeze(-1).argmax(-1)
        chosen = actions[torch.arange(s.shape[0], device=self.device), best]
        return chosen.reshape(*obs_t.shape[:-1], self.act_dim).cpu().numpy()


# ---------------------------------------------------------------- set sampling (Alg. 4) and triplet losses
def sample_relabelled_subset(
    confident: torch.Tensor, size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """c̃_i (Alg. 4 line 6): for each task i, `size` rows drawn uniformly without replacement among the
    confident rows of ∪_{j≠i} c_{j→i}, given `confident` [K_i, K_j, Nc].

    Returns (source task j, row t, chosen), each [K, S] with S = min(size, K·Nc); `chosen` is False in the
    slots left over when task i has fewer than `size` confident rows.
    """
    k, _, n = confident.shape
    eligible = (confident & ~torch.eye(k, dtype=torch.bool, device=confident.device)[:, :, None]).flatten(1)
    scores = torch.rand(eligible.shape, generator=generator, device=confident.device)
    scores = scores.masked_fill(~eligible, -1.0)
    top, index = scores.topk(min(size, k * n), dim=1)  # the eligible rows in random order come first
    return index // n, index % n, top >= 0


def random_subset_mask(sizes: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform random subset of min(size, n) of n rows for every entry of `sizes`, as a mask [..., n]."""
    scores = torch.rand(*sizes.shape, n, generator=generator, device=sizes.device)
    ranks = scores.argsort(-1).argsort(-1)
    return ranks < sizes.unsqueeze(-1)


def triplet_loss(
    anchor: tuple[torch.Tensor, torch.Tensor],
    positive: tuple[torch.Tensor, torch.Tensor],
    negative: tuple[torch.Tensor, torch.Tensor],
    margin: float,
    valid: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 13 and 9 with d = KL: mean over i of the mean over j of [d(a, p) − d(a, n) + m]_+.

    anchor/positive/negative are posteriors (mean, var) [K_i, K_j, z]; `valid` [K_i, K_j] marks the pairs
    that have a triplet. Other pairs contribute exactly zero loss and gradient, and the means run over valid
    pairs only (over tasks with at least one). Returns (loss, fraction of valid pairs with a positive hinge).
    """
    hinge = F.relu(gaussian_kl(*anchor, *positive) - gaussian_kl(*anchor, *negative) + margin)
    hinge = torch.where(valid, hinge, 0.0)
    pairs = valid.sum(1)
    per_task = hinge.sum(1) / pairs.clamp_min(1)
    loss = per_task.sum() / (pairs > 0).sum().clamp_min(1)
    active = ((hinge > 0) & valid).sum() / valid.sum().clamp_min(1)
    return loss, active


def hard_negative_triplet_loss(
    mean: torch.Tensor, var: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 11 (the `no-relabel` ablation): posteriors [K, N, z] of N context sets per task.

    For every task i: the hardest positive is the largest d(q(c_i^n), q(c_i^n')) within task i, the hardest
    negative the smallest d(q(c_i^n), q(c_j^n')) over j ≠ i; the loss is the mean over i of
    [hardest positive − hardest negative + m]_+. Returns (loss, fraction of tasks with a positive hinge).
    """
    k, n, z = mean.shape
    flat_mean, flat_var = mean.reshape(k * n, z), var.reshape(k * n, z)
    d = gaussian_kl(flat_mean[:, None], flat_var[:, None], flat_mean[None], flat_var[None]).view(k, n, k, n)
    same_task = torch.eye(k, dtype=torch.bool, device=mean.device)[:, None, :, None]
    hardest_positive = d.masked_fill(~same_task, -torch.inf).amax((1, 2, 3))
    hardest_negative = d.masked_fill(same_task, torch.inf).amin((1, 2, 3))
    hinge = F.relu(hardest_positive - hardest_negative + margin)
    return hinge.mean(), (hinge > 0).float().mean()

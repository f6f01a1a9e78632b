"""SAC speed on CPU: `mtrl.algos.sac.SAC` against a plain, straightforward SAC written here (CleanRL style).

Both use the same sizes (obs 27 / act 8 as Ant, 2×256 actor and critics, batch 256) and the same threads.
The plain version has separate critic modules, `torch.optim.Adam` (not fused), a soft update looping over
parameters and `.item()` per metric. Rounds of the two alternate and the ratio is the median of the per-round
ratios, so a machine shared with other jobs disturbs both alike. Ours is also timed under bf16 autocast
against fp32 (`collect.precision: bf16`), at the paper's sizes and at the HalfCheetahVel `cpu` profile's (2×128,
batch 64), and so is CSAC (`cql.precision: bf16`; seed 004's 3×1024, batch 1024, and WalkerWalkRun's `cpu`
3×128, batch 128). Prints; asserts nothing.

    .venv/bin/python benchmarks/bench_sac.py
"""

from __future__ import annotations

import copy
import os
import statistics
import time

import numpy as np
import torch
from torch.nn import functional as F

from mtrl.algos.cql import CSAC, CSACConfig
from mtrl.algos.sac import SAC, SACConfig
from mtrl.nn import TanhGaussianActor, mlp, precision

OBS_DIM, ACT_DIM, ROUNDS = 27, 8, 5


class PlainSAC:
    """The textbook update: two critic modules, plain Adam, parameter-loop soft updates."""

    def __init__(self, cfg: SACConfig, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM):
        self.cfg, self.act_dim = cfg, act_dim
        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.actor_hidden)
        self.q1 = mlp(obs_dim + act_dim, cfg.critic_hidden, 1)
        self.q2 = mlp(obs_dim + act_dim, cfg.critic_hidden, 1)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.critic_lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)

    def target(self, b: dict[str, torch.Tensor], alpha: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            next_a, next_logp = self.actor(b["next_observations"])
            x = torch.cat([b["next_observations"], next_a], -1)
            next_q = torch.min(self.q1_target(x), self.q2_target(x)).squeeze(-1) - alpha * next_logp
            return b["rewards"] + self.cfg.gamma * (1 - b["terminals"]) * next_q

    def critic_losses(self, b: dict[str, torch.Tensor], alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = torch.cat([b["observations"], b["actions"]], -1), self.target(b, alpha)
        return F.mse_loss(self.q1(x).squeeze(-1), y), F.mse_loss(self.q2(x).squeeze(-1), y)

    def update(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        alpha = self.log_alpha.exp().detach()
        q1_loss, q2_loss = self.critic_losses(b, alpha)
        self.q_opt.zero_grad()
        (q1_loss + q2_loss).backward()
        self.q_opt.step()

        a, logp = self.actor(b["observations"])
        xa = torch.cat([b["observations"], a], -1)
        actor_loss = (alpha * logp - torch.min(self.q1(xa), self.q2(xa)).squeeze(-1)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (logp.detach() - self.act_dim)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for net, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                for p, tp in zip(net.parameters(), target.parameters(), strict=True):
                    tp.data.copy_(self.cfg.tau * p.data + (1 - self.cfg.tau) * tp.data)
        losses = {"q1_loss": q1_loss, "q2_loss": q2_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss}
        return {
            **{k: v.item() for k, v in losses.items()},
            "alpha": alpha.item(),
            "entropy": -logp.mean().item(),
        }

    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        with torch.no_grad():
            a, _ = self.actor(torch.tensor(obs, dtype=torch.float32).unsqueeze(0), deterministic)
        return a.squeeze(0).numpy()


def make_batch(batch_size: int) -> dict[str, torch.Tensor]:
    return {
        "observations": torch.randn(batch_size, OBS_DIM),
        "actions": torch.rand(batch_size, ACT_DIM) * 2 - 1,
        "rewards": torch.randn(batch_size),
        "next_observations": torch.randn(batch_size, OBS_DIM),
        "terminals": (torch.rand(batch_size) < 0.05).float(),
    }


def rate(fn, calls: int, budget_s: float = 0.8) -> float:
    """Calls per second of fn() over `calls` calls or `budget_s` seconds (at least 3 calls), whichever ends
    first, so a machine crowded by other jobs gives noisier numbers rather than an endless run."""
    start, done = time.perf_counter(), 0
    while done < calls and (done < 3 or time.perf_counter() - start < budget_s):
        fn()
        done += 1
    return done / (time.perf_counter() - start)


def compare(name: str, ours, plain, calls: int, labels: tuple[str, str] = ("ours", "plain")) -> None:
    """Alternate rounds of the two, print median rates and the median of per-round ratios."""
    for fn in (ours, plain):  # warm-up
        rate(fn, max(calls // 10, 3))
    r_ours, r_plain = [], []
    for _ in range(ROUNDS):
        r_ours.append(rate(ours, calls))
        r_plain.append(rate(plain, calls))
    ratio = statistics.median(o / p for o, p in zip(r_ours, r_plain, strict=True))
    print(f"{name:<44} {labels[0]} {statistics.median(r_ours):9.1f}/s   {labels[1]} "
          f"{statistics.median(r_plain):9.1f}/s   ratio {ratio:5.2f}x")  # fmt: skip


def bf16(update):
    """`update` under `collect.precision: bf16` (autocast)."""
    def run():
        with precision("bf16", "cpu"):
            update()
    return run


def main() -> None:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, obs {OBS_DIM}, act {ACT_DIM}, median of {ROUNDS} alternating rounds")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (above 1 per CPU: noisy numbers)")
    cfg = SACConfig()
    ours, plain = SAC(cfg, OBS_DIM, ACT_DIM, 1.0, "cpu"), PlainSAC(cfg)
    ours_bf16 = SAC(cfg, OBS_DIM, ACT_DIM, 1.0, "cpu")
    small = SACConfig(actor_hidden=(128, 128), critic_hidden=(128, 128), batch_size=64)  # HalfCheetahVel `cpu`
    small_fp32, small_bf16 = SAC(small, OBS_DIM, ACT_DIM, 1.0, "cpu"), SAC(small, OBS_DIM, ACT_DIM, 1.0, "cpu")
    small_batch = {k: v[None] for k, v in make_batch(small.batch_size).items()}
    batch = make_batch(cfg.batch_size)
    task_batch = {k: v[None] for k, v in batch.items()}  # ours: one task on the task axis
    obs = np.random.default_rng(0).standard_normal(OBS_DIM).astype(np.float32)
    csac_sizes = {"CSAC update, 3x1024, batch 1024 (seed 004)": (CSACConfig(), 3),
                  "CSAC update, 3x128, batch 128 (cpu profile)": (
                      CSACConfig(sac=SACConfig(actor_hidden=(128,) * 3, critic_hidden=(128,) * 3, batch_size=128)), 20)}
    csacs = {name: ([CSAC(c, OBS_DIM, ACT_DIM, 1.0, "cpu") for _ in range(2)],
                    {k: v[None] for k, v in make_batch(c.batch_size).items()}, calls)
             for name, (c, calls) in csac_sizes.items()}
    for n in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(n)
        print(f"-- {n} torch thread(s)")
        compare("update, 2x256, batch 256", lambda: ours.update(task_batch), lambda: plain.update(batch), 20)
        compare("update, 2x256, batch 256, ours", bf16(lambda: ours_bf16.update(task_batch)),
                lambda: ours.update(task_batch), 20, labels=("bf16", "fp32"))
        compare("update, 2x128, batch 64 (cpu profile), ours", bf16(lambda: small_bf16.update(small_batch)),
                lambda: small_fp32.update(small_batch), 40, labels=("bf16", "fp32"))
        for name, ((csac_bf16, csac_fp32), csac_batch, calls) in csacs.items():
            compare(name, bf16(lambda a=csac_bf16, b=csac_batch: a.update(b)),
                    lambda a=csac_fp32, b=csac_batch: a.update(b), calls, labels=("bf16", "fp32"))
        for det in (True, False):
            compare(
                f"act, batch 1, deterministic={det}",
                lambda d=det: ours.act(obs[None], d),
                lambda d=det: plain.act(obs, d),
                500,
            )
    torch.set_num_threads(threads)

    app_j = SACConfig(separate_critic_batches=True, identical_critic_init=True, target_policy=True)
    j_sac = SAC(app_j, OBS_DIM, ACT_DIM, 1.0, "cpu")
    batch2 = {k: v[None] for k, v in make_batch(cfg.batch_size).items()}
    rate(lambda: j_sac.update(task_batch, batch2), 5)
    j_rate = statistics.median(rate(lambda: j_sac.update(task_batch, batch2), 20) for _ in range(ROUNDS))
    print(f"{'update, App. J options on (2 batches)':<44} ours {j_rate:9.1f}/s")


if __name__ == "__main__":
    main()

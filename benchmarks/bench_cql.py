"""CSAC speed on CPU: `mtrl.algos.cql.CSAC` against a plain CQL-SAC written here in one file (the textbook update).

Both use the same sizes (obs 24 / act 6 as the Walker tasks; 3 hidden layers for actor and critics; 10 uniform and 10
policy actions per state; CQL weight 10) and the same threads. The plain version has two critic modules, repeats
each state 10 times for the policy samples, uses `torch.optim.Adam` (not fused), a soft update looping over
parameters and `.item()` per metric. Rounds alternate and the ratio is the median of per-round ratios
(`bench_sac.compare`). The last line runs ours under `cql.precision: bf16` (autocast; not the plain version's
arithmetic, so not a like-for-like ratio). Prints; asserts nothing.

    .venv/bin/python benchmarks/bench_cql.py
"""

from __future__ import annotations

import math
import os
import statistics

import torch
from bench_sac import ROUNDS, PlainSAC, compare, rate
from torch.nn import functional as F

from mtrl.algos.cql import CSAC, CSACConfig
from mtrl.algos.sac import SACConfig
from mtrl.nn import precision

OBS_DIM, ACT_DIM, SAMPLES, WEIGHT = 24, 6, 10, 10.0


class PlainCQLSAC(PlainSAC):
    """CQL(H) on SAC as one would write it from the papers: Eq. 8 with Eq. 9's log-sum-exp in the critic losses,
    the rest of the plain SAC update unchanged."""

    def __init__(self, cfg: SACConfig):
        super().__init__(cfg, OBS_DIM, ACT_DIM)

    def critic_losses(self, b: dict[str, torch.Tensor], alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs, batch = b["observations"], len(b["observations"])
        y = self.target(b, alpha)
        with torch.no_grad():
            repeated = obs.repeat_interleave(SAMPLES, 0)
            pi_a, pi_logp = self.actor(repeated)
            uniform = torch.rand(batch * SAMPLES, ACT_DIM) * 2 - 1
            log_density = torch.cat([torch.full((batch, SAMPLES), -ACT_DIM * math.log(2)),
                                     pi_logp.view(batch, SAMPLES)], 1)
        x = torch.cat([obs, b["actions"]], -1)
        sampled = torch.cat([torch.cat([repeated, uniform], -1), torch.cat([repeated, pi_a], -1)])
        losses = []
        for q in (self.q1, self.q2):
            q_data = q(x).squeeze(-1)
            q_s = q(sampled).view(2, batch, SAMPLES).permute(1, 0, 2).reshape(batch, 2 * SAMPLES)
            lse = torch.logsumexp(q_s - log_density, 1) - math.log(2 * SAMPLES)
            losses.append(0.5 * F.mse_loss(q_data, y) + WEIGHT * (lse - q_data).mean())
        return losses[0], losses[1]


def make_batch(batch_size: int) -> dict[str, torch.Tensor]:
    return {"observations": torch.randn(batch_size, OBS_DIM), "actions": torch.rand(batch_size, ACT_DIM) * 2 - 1,
            "rewards": torch.randn(batch_size), "next_observations": torch.randn(batch_size, OBS_DIM),
            "terminals": torch.zeros(batch_size)}


def bench(width: int, batch_size: int, threads: int) -> None:
    sac = SACConfig(actor_hidden=(width,) * 3, critic_hidden=(width,) * 3, batch_size=batch_size)
    ours, plain = CSAC(CSACConfig(sac=sac), OBS_DIM, ACT_DIM, 1.0, "cpu"), PlainCQLSAC(sac)
    batch = make_batch(batch_size)
    task_batch = {k: v[None] for k, v in batch.items()}  # ours: one task on the task axis
    for n in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(n)
        compare(f"CSAC update, 3x{width}, batch {batch_size}, {n} thread(s)", lambda: ours.update(task_batch),
                lambda: plain.update(batch), 10)
    torch.set_num_threads(threads)

    def bf16_update():
        with precision("bf16", "cpu"):
            ours.update(task_batch)

    bf16 = statistics.median(rate(bf16_update, 10) for _ in range(ROUNDS))
    print(f"{f'  ours under bf16 autocast, {threads} thread(s)':<44} ours {bf16:9.1f}/s")


def main() -> None:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, obs {OBS_DIM}, act {ACT_DIM}, {SAMPLES}+{SAMPLES} CQL actions per state, "
          f"median of {ROUNDS} alternating rounds")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (above 1 per CPU: noisy numbers)")
    for width, batch_size in ((128, 128), (256, 256)):
        bench(width, batch_size, threads)


if __name__ == "__main__":
    main()

"""Reward-ensemble speed: vectorised training against a loop over modules, and relabelling throughput.

1. Training steps per second of a 20-member reward ensemble (MLP (s, a) → r, one hidden layer of 128, batch
   128, obs 27, act 8): `EnsembleRegressor.update` (one batched matmul per layer, one fused Adam) against the
   straightforward loop over 20 `nn.Sequential` modules, each with its own Adam. Both see the same mini-batch.
   Rounds of each alternate and the best round of each counts, so other load disturbs the ratio little.
2. The task axis: `--tasks` T reward ensembles trained as one task-batched `EnsembleRegressor` against T
   single-task ones stepped one after another (what `fit-rewards --group-size T` and `--group-size 1` do).
   On one CPU thread, T = 2, 5, 10: 0.6-0.8x with glibc's default malloc (the group's multi-MB activations are
   returned to the OS and page-faulted back every step), 1.04x with MALLOC_MMAP_THRESHOLD_=1000000000
   MALLOC_TRIM_THRESHOLD_=1000000000 in the environment.
3. `relabel_with_ensemble` throughput in transitions × members per second, for the reward ensemble and for a
   next-state ensemble of the same size (6 × 256, predicting s').
Prints; asserts nothing.

    .venv/bin/python benchmarks/bench_ensemble.py [--threads N] [--rounds R] [--steps S] [--tasks T]
                                                  [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from torch import nn

from mtrl.algos.ensemble import EnsembleConfig, EnsembleRegressor, relabel_with_ensemble

OBS, ACT = 27, 8


def looped_step(members: list[nn.Module], optimizers: list[torch.optim.Optimizer], inputs, targets) -> None:
    for net, optimizer in zip(members, optimizers, strict=True):
        loss = (net(inputs).squeeze(-1) - targets).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def bench_training(cfg: EnsembleConfig, rounds: int, steps: int, clock) -> None:
    in_dim = OBS + ACT
    batches = [(torch.randn(cfg.batch_size, in_dim), torch.randn(cfg.batch_size)) for _ in range(steps)]
    ensemble = EnsembleRegressor(cfg, in_dim, 1, "cpu")
    members = [
        nn.Sequential(nn.Linear(in_dim, cfg.hidden[0]), nn.ReLU(), nn.Linear(cfg.hidden[0], 1))
        for _ in range(cfg.members)
    ]
    optimizers = [torch.optim.Adam(net.parameters(), lr=cfg.lr) for net in members]
    runs = {
        "vectorised": lambda x, y: ensemble.update(x[None], y[None]),  # a task axis of 1
        "loop": lambda x, y: looped_step(members, optimizers, x, y),
    }
    best = best_seconds(runs, batches, rounds, clock)
    print(f"{cfg.members}-member reward ensemble {in_dim}-{cfg.hidden[0]}-1, batch {cfg.batch_size}, training:")
    for name, seconds in best.items():
        print(f"  {name:10s} {1 / seconds:8.1f} steps/s")
    print(f"  speed-up   {best['loop'] / best['vectorised']:.2f}x")


def bench_task_batched(cfg: EnsembleConfig, tasks: int, rounds: int, steps: int, clock) -> None:
    in_dim = OBS + ACT
    batches = [(torch.randn(tasks, cfg.batch_size, in_dim), torch.randn(tasks, cfg.batch_size)) for _ in range(steps)]
    batched = EnsembleRegressor(cfg, in_dim, 1, "cpu", tasks, list(range(tasks)))
    singles = [EnsembleRegressor(cfg, in_dim, 1, "cpu", seeds=[t]) for t in range(tasks)]

    def one_by_one(x, y):
        for t, single in enumerate(singles):
            single.update(x[t : t + 1], y[t : t + 1])

    runs = {"task-batched": batched.update, "one by one": one_by_one}
    best = best_seconds(runs, batches, rounds, clock)
    print(f"{tasks} tasks' {cfg.members}-member reward ensembles, training steps of every task:")
    for name, seconds in best.items():
        print(f"  {name:12s} {1 / seconds:8.1f} steps/s")
    print(f"  speed-up     {best['one by one'] / best['task-batched']:.2f}x")


def best_seconds(runs: dict, batches: list, rounds: int, clock) -> dict[str, float]:
    """Best seconds per step of each `step(x, y)` over `rounds` alternating rounds (after a warm-up round)."""
    best = dict.fromkeys(runs, float("inf"))
    for round_ in range(rounds + 1):
        for name, step in runs.items():
            start = clock()
            for x, y in batches:
                step(x, y)
            if round_:
                best[name] = min(best[name], (clock() - start) / len(batches))
    return best


def bench_relabel(cfg: EnsembleConfig, out_dim: int, n: int, label: str, clock) -> None:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32)
    ensemble = EnsembleRegressor(cfg, OBS + ACT, out_dim, "cpu")
    relabel_with_ensemble(ensemble, (obs[:4096], act[:4096]), threshold=0.1)  # warm-up
    start = clock()
    _, _, mask = relabel_with_ensemble(ensemble, (obs, act), threshold=0.1)
    seconds = clock() - start
    print(
        f"relabel, {label}: {n} transitions in {seconds:.2f} s = {n / seconds:,.0f} transitions/s "
        f"= {n * cfg.members / seconds:,.0f} transitions × members/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="training steps per round")
    parser.add_argument("--tasks", type=int, default=5, help="tasks of the task-batched training benchmark")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="cpu: process time, steadier on a busy machine"
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.threads} thread(s), best of {args.rounds} rounds, {args.clock} clock")

    reward = EnsembleConfig()
    bench_training(reward, args.rounds, args.steps, clock)
    bench_task_batched(reward, args.tasks, args.rounds, args.steps, clock)
    bench_relabel(reward, 1, 200_000, "reward ensemble 20 × (128), obs 27 + act 8 → r", clock)
    dynamics = dataclasses.replace(reward, hidden=(256,) * 6, predict_delta=True)
    bench_relabel(dynamics, OBS, 20_000, "next-state ensemble 20 × (256 × 6), obs 27 + act 8 → s'", clock)


if __name__ == "__main__":
    main()

"""The collection loop's speed against the raw environment, in the same run.

`mtrl.rl.online.train_online` (the loop of `mtrl collect`) steps the env, stores every transition with its
infos, keeps episode bookkeeping and progress; here it runs with no gradient updates (all steps random, as
during SAC's warm-up) and then acting with the SAC policy but still without updates. The baseline is a bare
`env.step(random action)` loop over the same env. Prints steps/s and ratios (goal: loop ≥ 0.8× raw env);
SAC's update speed against a plain SAC is `benchmarks/bench_sac.py`.

    .venv/bin/python benchmarks/bench_collect.py
"""

from __future__ import annotations

import logging
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from mtrl.algos.sac import SAC, SACConfig
from mtrl.data import TransitionBuffer
from mtrl.envs import make_distribution
from mtrl.rl import online
from mtrl.rl.online import Schedule, train_online

STEPS, ROUNDS = {"PointGoalArc": 20_000, "HalfCheetahVel": 5_000, "AntDir": 2_000}, 3


class NoCheckpoints:
    def load(self):
        return None

    def save(self, state):
        pass


def unit_context() -> SimpleNamespace:
    """The parts of a stage's UnitContext that the loop uses, without a run directory."""
    return SimpleNamespace(checkpointer=NoCheckpoints(), seed=0, device=torch.device("cpu"),
                           log=logging.getLogger("bench"), stage=SimpleNamespace(name="bench"),
                           unit=SimpleNamespace(key="task_00"),
                           progress=lambda total, unit, initial, name=None: _NullBar())


class _NullBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def raw_env_rate(env, steps: int) -> float:
    rng = np.random.default_rng(0)
    high = env.action_space.high  # same sampling as the loop: uniform in the symmetric box
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-high, high, len(high)))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def loop_rate(dist, steps: int, act: bool) -> float:
    spec = dist.spec
    cfg = SACConfig(batch_size=10**9)  # a batch larger than the buffer: the loop never updates
    agent = SAC(cfg, spec.obs_dim, spec.act_dim, spec.max_action, "cpu")
    buffer = TransitionBuffer(steps, spec.obs_dim, spec.act_dim, spec.info_keys)
    env, eval_env = dist.make_env(dist.train_tasks[0]), dist.make_env(dist.train_tasks[0])
    schedule = Schedule(steps, 0 if act else steps, eval_every=10**9, eval_episodes=1, checkpoint_every=10**9)
    start = time.perf_counter()
    train_online([unit_context()], agent, [env], [eval_env], [buffer], schedule)
    return steps / (time.perf_counter() - start)


def main() -> None:
    torch.set_num_threads(1)
    online.evaluate_lockstep = lambda envs, *args: np.zeros((len(envs), 1))  # time the loop, not its evaluation
    print(f"{'family':16s} {'raw env':>10s} {'loop random':>12s} {'ratio':>6s} {'loop + act':>11s} {'ratio':>6s}")
    for family, steps in STEPS.items():
        dist = make_distribution(family, 1, 1, 0)
        raw, random_loop, acting_loop = [], [], []
        for _ in range(ROUNDS):  # alternate, so a busy machine slows all three alike
            raw.append(raw_env_rate(dist.make_env(dist.train_tasks[0]), steps))
            random_loop.append(loop_rate(dist, steps, act=False))
            acting_loop.append(loop_rate(dist, steps, act=True))
        r, lr, la = (statistics.median(x) for x in (raw, random_loop, acting_loop))
        print(f"{family:16s} {r:10.0f} {lr:12.0f} {lr / r:6.2f} {la:11.0f} {la / r:6.2f}")


if __name__ == "__main__":
    main()

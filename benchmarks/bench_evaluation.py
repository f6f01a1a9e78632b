"""What one evaluation during training costs, and how much of it is the simulator.

MBML's protocol (Alg. 5) on every training and test task of HalfCheetahVel (10 + 8 envs stepped in lockstep,
`evaluate.episodes` episodes of 1 000 steps each) is what distill and train-baseline run every `eval_every`
epochs. This times, in one run:
- *env only*: the same number of env steps with zero actions, no policy, no protocol;
- *protocol, zero policy*: the full protocol (lockstep loop, context rows) with a policy that returns zeros;
- *protocol, MBML*: the full protocol with an MBML policy at the `cpu` profile's sizes (untrained weights: the
  cost does not depend on them).
The env share says whether stepping envs in parallel processes would pay (it pays at most the env share).

    .venv/bin/python benchmarks/bench_evaluation.py --threads 1
    .venv/bin/python benchmarks/bench_evaluation.py --threads 1 --episodes 1 --profile paper
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mtrl.algos.bcq import BCQPolicy
from mtrl.algos.mbml import MBML
from mtrl.config import load_config
from mtrl.envs.registry import make_distribution
from mtrl.rl.evaluation import run_protocol
from mtrl.rl.policies import ContextFreePolicy, EmbeddingPolicy

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "half_cheetah_vel.yaml"


def env_only(envs, episodes: int, act_dim: int) -> None:
    zeros = np.zeros(act_dim, np.float32)
    for episode in range(episodes):
        for env in envs:
            env.reset(seed=episode)
            done = False
            while not done:
                _, _, terminated, truncated, _ = env.step(zeros)
                done = terminated or truncated


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help="profile of configs/half_cheetah_vel.yaml for the sizes")
    parser.add_argument("--episodes", type=int, default=None, help="default: the profile's evaluate.episodes")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = load_config(CONFIG, args.profile)
    episodes = args.episodes or config.evaluate.episodes
    dist = make_distribution(config.env.family, config.env.n_train, config.env.n_test, config.env.task_seed)
    spec = dist.spec
    envs = [dist.make_env(task) for task in (*dist.train_tasks, *dist.test_tasks)]
    tasks = len(dist.train_tasks)
    teachers = BCQPolicy(config.bcq.algo, spec.obs_dim, spec.act_dim, 1.0, "cpu", tasks=tasks, seeds=range(tasks))
    mbml = MBML(config.distill.algo, spec.obs_dim, spec.act_dim, 1.0, teachers, "cpu")
    zero = ContextFreePolicy(lambda obs: np.zeros((len(obs), spec.act_dim), np.float32))

    steps = len(envs) * episodes * spec.horizon
    seconds = {
        "env only": timed(lambda: env_only(envs, episodes, spec.act_dim)),
        "protocol, zero policy": timed(lambda: run_protocol(envs, zero, episodes, 0)),
        "protocol, MBML": timed(lambda: run_protocol(envs, EmbeddingPolicy(mbml, 0), episodes, 0)),
    }
    print(f"HalfCheetahVel, profile {args.profile}: {len(envs)} envs × {episodes} episodes × {spec.horizon} steps "
          f"= {steps} env steps per evaluation")
    for name, s in seconds.items():
        print(f"{name:24s} {s:7.2f} s  {1e6 * s / steps:6.1f} µs/env step  "
              f"env share {seconds['env only'] / s:4.0%}")


if __name__ == "__main__":
    main()

"""The best task-agnostic policy of a run, to read its multi-task numbers against (any family).

Each training task's collection SAC (`sac/task_NN.h5`, deterministic) is run unchanged in every training task
through MBML's evaluation protocol (Alg. 5, the run's `evaluate` settings and seeds); the one with the highest
mean training-task score is then scored on the test tasks the same way. It ignores the task, and it is chosen
on the training tasks only: a multi-task policy that does not beat it on the test tasks has not used the task.
The zero-action policy (do nothing: on HalfCheetahVel, stand still) is scored on both splits too, the floor a
method must clear before it has learned anything.

Usage: python scripts/task_agnostic_reference.py runs/cheetah_s0
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from mtrl.algos.sac import SAC
from mtrl.artifacts import open_artifact
from mtrl.config import load_run_config
from mtrl.nn import to_torch_tree
from mtrl.pipeline import layout
from mtrl.pipeline.run_data import read_distribution
from mtrl.rl.evaluation import evaluate_tasks, evaluation_seed
from mtrl.rl.policies import ContextFreePolicy


def collected_policy(config, spec, run_dir: Path, task: int) -> ContextFreePolicy:
    with open_artifact(layout.sac(run_dir, task), "sac") as art:
        weights = to_torch_tree(art.tree("weights"))
    agent = SAC(config.collect.sac, spec.obs_dim, spec.act_dim, spec.max_action, "cpu")
    agent.load_state_dict(weights)
    return ContextFreePolicy(lambda obs: agent.act(obs[None], deterministic=True)[0])  # all tasks' rows at once


def main(run_dir: Path) -> None:
    torch.set_num_threads(1)  # small networks, one row per task: more threads only contend (badly, on a busy machine)
    config = load_run_config(run_dir)
    dist = read_distribution(layout.tasks(run_dir))
    seed, cfg = evaluation_seed(config), config.evaluate
    train_envs = [dist.make_env(task) for task in dist.train_tasks]
    test_envs = [dist.make_env(task) for task in dist.test_tasks]
    zero = ContextFreePolicy(lambda obs: np.zeros((len(obs), dist.spec.act_dim), np.float32))
    zero_scores = [evaluate_tasks(envs, zero, cfg, seed, 1)[1].mean() for envs in (train_envs, test_envs)]
    print(f"zero-action policy: train {zero_scores[0]:.1f}, test {zero_scores[1]:.1f}", flush=True)
    train_scores = {}
    for i in range(len(dist.train_tasks)):
        _, scores, _ = evaluate_tasks(train_envs, collected_policy(config, dist.spec, run_dir, i), cfg, seed, 1)
        train_scores[i] = float(scores.mean())
        print(f"SAC of training task {i}: mean over the training tasks {train_scores[i]:.1f}", flush=True)
    best = max(train_scores, key=train_scores.get)
    _, scores, _ = evaluate_tasks(test_envs, collected_policy(config, dist.spec, run_dir, best), cfg, seed, cfg.repeats)
    print(f"task-agnostic reference (SAC of training task {best}, chosen on the training tasks): "
          f"train {train_scores[best]:.1f}, test {scores.mean():.1f} ({cfg.repeats} repeats of the protocol)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

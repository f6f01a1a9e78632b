"""Reference returns on the point-goal families (PointGoalArc, PointRobot, SparsePointRobot), to read a run's
numbers against: what is achievable, and what a policy that ignores the task gets.

- optimum per training task (families that start at the origin): straight to the goal at the fastest speed the
  action box allows, then stay; `collect`'s final SAC evaluation is compared with it;
- oracle: that policy run through MBML's evaluation protocol (Alg. 5) with the run's evaluation settings;
- task-agnostic: the best single point to head for (grid search over the training goals' bounding box, chosen
  on the training tasks), ignoring the task, through the same protocol. A multi-task policy that does not beat
  it has not used the task at all.

Usage: python scripts/point_references.py runs/toy_s0
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mtrl.artifacts import open_artifact
from mtrl.config import load_run_config
from mtrl.pipeline.run_data import read_distribution
from mtrl.rl.evaluation import evaluate_tasks, evaluation_seed


def optimal_return(dist, goal: np.ndarray) -> float:
    """Return of heading straight for `goal` from the origin at the box's top speed in that direction."""
    env, policy = dist.make_env(goal), HeadFor(goal[None], dist.spec.raw_max_action)
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs[None], None)[0])
        total, done = total + reward, terminated or truncated
    return total


class HeadFor:
    """Context-free policy moving towards a fixed target per task row (the protocol runs tasks in lockstep), as
    fast as the raw box allows; it acts in [-1, 1] like every agent (the env scales by `raw_max_action`)."""

    def __init__(self, targets: np.ndarray, raw_max_action: float):
        self.targets, self.scale = np.asarray(targets, np.float32), raw_max_action

    def infer(self, context: np.ndarray | None, explore: bool = False) -> np.ndarray:
        return np.zeros(0, np.float32)

    def act(self, obs: np.ndarray, beliefs: np.ndarray) -> np.ndarray:
        return np.clip((self.targets - obs) / self.scale, -1.0, 1.0)


def protocol_score(dist, config, tasks, targets) -> float:
    envs = [dist.make_env(task) for task in tasks]
    policy = HeadFor(targets, dist.spec.raw_max_action)
    _, scores, _ = evaluate_tasks(envs, policy, config.evaluate, evaluation_seed(config), config.evaluate.repeats)
    return float(scores.mean())


def main(run_dir: Path) -> None:
    config = load_run_config(run_dir)
    dist = read_distribution(run_dir / "tasks.h5")
    train, test = np.asarray(dist.train_tasks), np.asarray(dist.test_tasks)

    env = dist.make_env(train[0])
    if env.reset(seed=0)[0].any() or env.reset(seed=1)[0].any():
        print("optimum per task: none (episodes start at random points); see the oracle")
    else:
        sac, optimum = [], []
        for i, goal in enumerate(train):
            with open_artifact(run_dir / "sac" / f"task_{i:02d}.h5", "sac") as art:
                sac.append(float(art.tree("curve")["return_mean"][-1]))
            optimum.append(optimal_return(dist, goal))
            print(f"task {i}: goal {np.round(goal, 3)}  SAC final {sac[-1]:.2f}  optimum {optimum[-1]:.2f}")
        print(f"mean over training tasks: SAC final {np.mean(sac):.2f}, optimum {np.mean(optimum):.2f}")

    print(f"oracle (protocol): train {protocol_score(dist, config, train, train):.2f}, "
          f"test {protocol_score(dist, config, test, test):.2f}")
    low, high = np.floor(train.min(0) * 10) / 10, np.ceil(train.max(0) * 10) / 10
    grid = [np.array([x, y]) for x in np.arange(low[0], high[0] + 0.05, 0.1)
            for y in np.arange(low[1], high[1] + 0.05, 0.1)]
    point = max(grid, key=lambda p: protocol_score(dist, config, train, np.tile(p, (len(train), 1))))
    print(f"task-agnostic, heading for {np.round(point, 2)} (protocol): "
          f"train {protocol_score(dist, config, train, np.tile(point, (len(train), 1))):.2f}, "
          f"test {protocol_score(dist, config, test, np.tile(point, (len(test), 1))):.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/point_references.py RUN_DIR")
    main(Path(sys.argv[1]))

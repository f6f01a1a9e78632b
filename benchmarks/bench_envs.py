"""Steps per second of every task family's env against its plain Gymnasium base env, in the same run.

    .venv/bin/python benchmarks/bench_envs.py [--steps 2000] [--repeats 3] [FAMILY ...]

Both envs are built the way users build them (ours: `dist.make_env`, the base: `gymnasium.make`),
replay the same uniform random actions, and reset when an episode ends. Each pair is timed
`--repeats` times, alternating, and the best rate of each is kept (the machine is shared). The ratio
is ours / base: the wrapper overhead, goal >= 0.9. The point robots have no Gymnasium base env.
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np

from mtrl.envs import FAMILIES, make_distribution

# family -> (Gymnasium id, make kwargs) of the same model stepped the same number of MuJoCo substeps
BASE_ENVS = {
    "AntDir": ("Ant-v5", {}),
    "AntGoal": ("Ant-v5", {}),
    "AntFwdBack": ("Ant-v5", {}),
    "HalfCheetahVel": ("HalfCheetah-v5", {}),
    "HalfCheetahFwdBack": ("HalfCheetah-v5", {}),
    "HumanoidDir-M": ("Humanoid-v5", {}),
    "WalkerParam": ("Walker2d-v5", {}),
    "WalkerWalk": ("Walker2d-v5", {"frame_skip": 10}),
    "WalkerRun": ("Walker2d-v5", {"frame_skip": 10}),
    "WalkerWalkRun": ("Walker2d-v5", {"frame_skip": 10}),
    "UmazeGoal-M": ("PointMaze_UMazeDense-v3", {}),
}
# WalkerParam tasks change the physics (and so the cost of a step): time the unscaled walker.
BENCH_TASKS = {"WalkerParam": np.ones(65)}


def steps_per_second(env, actions: np.ndarray) -> float:
    env.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return len(actions) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if any(family == "UmazeGoal-M" for family in args.families):
        import gymnasium_robotics

        gymnasium.register_envs(gymnasium_robotics)

    print(f"{'family':20s} {'ours steps/s':>13s} {'base env':>24s} {'base steps/s':>13s} {'ratio':>6s}")
    for family in args.families:
        dist = make_distribution(family, n_train=1, n_test=0, seed=0)
        spec = dist.spec
        rng = np.random.default_rng(0)
        actions = rng.uniform(-1.0, 1.0, (args.steps, spec.act_dim)).astype(np.float32) * spec.max_action
        ours = dist.make_env(BENCH_TASKS.get(family, dist.train_tasks[0]))
        base_id, base_kwargs = BASE_ENVS.get(family, (None, {}))
        base = gymnasium.make(base_id, **base_kwargs) if base_id else None
        ours_rate = base_rate = 0.0
        for _ in range(args.repeats):
            ours_rate = max(ours_rate, steps_per_second(ours, actions))
            if base is not None:
                base_rate = max(base_rate, steps_per_second(base, actions))
        if base is None:
            print(f"{family:20s} {ours_rate:13.0f} {'-':>24s} {'-':>13s} {'-':>6s}")
        else:
            base_name = base_id + "".join(f" {k}={v}" for k, v in base_kwargs.items())
            ratio = ours_rate / base_rate
            print(f"{family:20s} {ours_rate:13.0f} {base_name:>24s} {base_rate:13.0f} {ratio:6.2f}")


if __name__ == "__main__":
    main()

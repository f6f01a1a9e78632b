"""Task-batched training vs the per-task path, at the same total work, on this machine.

Two measurements, each printing the per-task path's time, the task-batched time and their ratio (rounds
alternate, medians reported, so other load on the machine slows both alike):

- `update`: U BCQ updates of each of T tasks: T single-task BCQs one after another (the per-task path: what a
  worker process did for each task) vs one T-task BCQ (`mtrl.algos.bcq`, the task axis). Sizes: the toy's
  `cpu` profile (64-64 actor/critic, 128-128 VAE, PointGoalArc) and the reference sizes (400-300 / 750-750,
  HalfCheetahVel's 20-D observations, 6-D actions).
- `stage`: the real stages through the runner on a fresh run directory (short budgets, T tasks of a
  family, the networks of `--profile`): `collect` then `train-bcq` with `--group-size 1` (one model per task,
  env stepped alone) vs `--group-size T` (one model, envs in lockstep), one process, one thread each.
  Evaluation is included.

    .venv/bin/python benchmarks/bench_task_batched.py                     # both, 10 tasks
    .venv/bin/python benchmarks/bench_task_batched.py --level stage --family HalfCheetahVel
    .venv/bin/python benchmarks/bench_task_batched.py --level stage --family PointGoalArc --profile cpu
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mtrl.algos.bcq import BCQ, BCQConfig
from mtrl.launch.local import keep_freed_memory

SIZES = {  # name: (obs_dim, act_dim, BCQ config)
    "toy cpu profile": (2, 2, BCQConfig(actor_hidden=(64, 64), critic_hidden=(64, 64), vae_hidden=(128, 128))),
    "reference (HalfCheetahVel)": (20, 6, BCQConfig()),
}
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"PointGoalArc": "point_goal_arc.yaml", "HalfCheetahVel": "half_cheetah_vel.yaml"}


def batches(tasks: int, obs: int, act: int, batch: int, updates: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"observations": torch.randn(tasks, batch, obs, generator=g),
             "actions": torch.rand(tasks, batch, act, generator=g) * 2 - 1,
             "rewards": torch.randn(tasks, batch, generator=g),
             "next_observations": torch.randn(tasks, batch, obs, generator=g),
             "terminals": (torch.rand(tasks, batch, generator=g) < 0.01).float()} for _ in range(updates)]


def bench_updates(tasks: int, updates: int, rounds: int) -> None:
    for name, (obs, act, cfg) in SIZES.items():
        data = batches(tasks, obs, act, cfg.batch_size, updates)
        singles = [BCQ(cfg, obs, act, 1.0, "cpu", seeds=[t]) for t in range(tasks)]
        batched = BCQ(cfg, obs, act, 1.0, "cpu", tasks=tasks, seeds=list(range(tasks)))
        runs = {"per-task": lambda s=singles, d=data: per_task_updates(s, d),
                "batched": lambda b=batched, d=data: [b.update(batch) for batch in d]}
        per_task_s, batched_s = timed_rounds(runs, rounds).values()
        total = tasks * updates
        print(f"BCQ updates, {name}, {tasks} tasks x {updates} updates, batch {cfg.batch_size}/task, "
              f"{torch.get_num_threads()} thread(s):")
        print(f"  per-task path {total / per_task_s:8.1f} task-updates/s   task-batched {total / batched_s:8.1f}"
              f"   ratio {per_task_s / batched_s:.2f}x")


def per_task_updates(singles: list[BCQ], data: list[dict[str, torch.Tensor]]) -> None:
    """Each single-task BCQ takes all its updates, one task after another (what one process per task did)."""
    for t, agent in enumerate(singles):
        for batch in data:
            agent.update({k: v[t : t + 1] for k, v in batch.items()})


def timed_rounds(runs: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each callable over `rounds` alternating rounds (after one warm-up round)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(rounds + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_stages(family: str, tasks: int, steps: int, profile: str) -> None:
    from mtrl.config import load_config, save_config
    from mtrl.pipeline.base import RunOptions
    from mtrl.pipeline.registry import get_stage
    from mtrl.pipeline.runner import run_stage
    from mtrl.runlog import log

    log.setLevel("WARNING")
    overrides = (f"env.n_train={tasks}", f"collect.steps={steps}", f"collect.eval_every={steps}",
                 f"collect.sac.random_steps={steps // 4}", f"bcq.steps={steps}", f"bcq.eval_every={steps}")
    config = load_config(ROOT / "configs" / CONFIGS[family], profile, overrides)
    times: dict[str, dict[int, float]] = {"collect": {}, "train-bcq": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for group in (1, tasks):
            run_dir = Path(tmp) / f"group{group}"
            save_config(config, run_dir)
            options = RunOptions(run_dir, device="cpu", workers=1, threads=1, group_size=group)
            run_stage(get_stage("tasks"), config, options)
            for stage in times:
                start = time.perf_counter()
                run_stage(get_stage(stage), config, options)
                times[stage][group] = time.perf_counter() - start
    print(f"Stages on {family}, {tasks} tasks, networks of the {profile} profile, {steps} steps per task, "
          "1 process, 1 thread:")
    for stage, t in times.items():
        print(f"  {stage:10s} per-task path {t[1]:6.1f} s   task-batched {t[tasks]:6.1f} s   "
              f"ratio {t[1] / t[tasks]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", choices=("update", "stage", "both"), default="both")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--updates", type=int, default=20, help="updates per task and round (update level)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--family", choices=tuple(CONFIGS), default=None, help="stage level (default: both)")
    parser.add_argument("--steps", type=int, default=1000, help="collect and train-bcq steps per task (stage level)")
    parser.add_argument("--profile", default="smoke", help="profile whose network sizes the stage level uses")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the stage runner does: large activations are reused, not returned to the OS
    if args.level in ("update", "both"):
        bench_updates(args.tasks, args.updates, args.rounds)
    if args.level in ("stage", "both"):
        for family in [args.family] if args.family else CONFIGS:
            bench_stages(family, args.tasks, args.steps, args.profile)


if __name__ == "__main__":
    main()

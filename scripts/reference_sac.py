"""Run CleanRL's SAC (`cleanrl/sac_continuous_action.py`, not part of this repo) on one task of an mtrl family,
with the collection settings of the `paper` profile, to set its learning curve beside ours (issue 33, Table 9).

CleanRL is read from a checkout you provide (e.g. `git clone https://github.com/vwxyzjn/cleanrl`); it needs `tyro`
(`pip install --target /tmp/ref/site tyro` and PYTHONPATH=/tmp/ref/site keeps it out of the project's venv). Its
script runs unmodified except for one inserted line at the top of its training loop that calls this driver's hook:
a deterministic evaluation (the tanh of the mean action, as ours) every `--eval-every` interactions over
`--eval-episodes` episodes, and a record of every training episode's return. Its arguments are set to ours: 10 000
random steps, batch 256, both learning rates 3e-4, the policy and targets updated every step, automatic entropy.
CleanRL was written for Gymnasium 0.29's vector API; the vector env is built with Gymnasium 1.x's same-step
autoreset and its infos are given the 0.29 names it reads (`final_observation`, a per-env `final_info` list).

Usage (one task, one seed; the curve is written as JSON):
  PYTHONPATH=/tmp/ref/site python scripts/reference_sac.py --cleanrl /tmp/ref/cleanrl --family HalfCheetahVel \
    --task 1.4144 --seed 1 --steps 60000 --out runs/t9/ref/v1.414_s1.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from mtrl.envs import FAMILIES  # importing mtrl.envs registers mtrl/<Family>-v0

HOOK_MARKER = "# ALGO LOGIC: training."  # the comment that opens the update block of CleanRL's loop
EVAL_SEED = 10_000  # evaluation episode k resets with EVAL_SEED + k, the same episodes at every evaluation


class OldVectorApi(gym.vector.SyncVectorEnv):
    """A SyncVectorEnv that resets finished envs within the step and reports them as Gymnasium 0.29 did."""

    def __init__(self, env_fns, **kwargs):
        super().__init__(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **kwargs)

    def step(self, actions):
        obs, rewards, terminations, truncations, infos = super().step(actions)
        if "final_obs" in infos:
            final = infos.pop("final_info")
            infos["final_observation"] = infos.pop("final_obs")
            episode, done = final.get("episode", {}), final.get("_episode", np.zeros(self.num_envs, bool))
            infos["final_info"] = [{"episode": {k: v[i] for k, v in episode.items()}} if done[i] else None
                                   for i in range(self.num_envs)]
        return obs, rewards, terminations, truncations, infos


class Recorder:
    """The hook CleanRL's loop calls at every step: training returns as they finish, evaluations on schedule."""

    def __init__(self, env_id: str, eval_every: int, eval_episodes: int):
        self.eval_env = gym.make(env_id)
        self.eval_every, self.eval_episodes = eval_every, eval_episodes
        self.curve: list[tuple[int, float]] = []
        self.train_returns: list[tuple[int, float]] = []
        self.started = time.time()

    def __call__(self, global_step: int, actor, infos: dict) -> None:
        for info in infos.get("final_info", []) or []:
            if info is not None:
                self.train_returns.append((global_step + 1, float(info["episode"]["r"])))
        interactions = global_step + 1
        if interactions % self.eval_every == 0:
            score = self.evaluate(actor)
            self.curve.append((interactions, score))
            print(f"{interactions} interactions: evaluation {score:.1f} ({time.time() - self.started:.0f} s)",
                  flush=True)

    @torch.no_grad()
    def evaluate(self, actor) -> float:
        returns = []
        for k in range(self.eval_episodes):
            obs, _ = self.eval_env.reset(seed=EVAL_SEED + k)
            total, done = 0.0, False
            while not done:
                _, _, mean = actor.get_action(torch.as_tensor(obs, dtype=torch.float32)[None])
                obs, reward, terminated, truncated, _ = self.eval_env.step(mean[0].numpy())
                total, done = total + float(reward), terminated or truncated
            returns.append(total)
        return float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cleanrl", type=Path, required=True, help="CleanRL checkout (holds cleanrl/, cleanrl_utils/)")
    parser.add_argument("--family", default="HalfCheetahVel", choices=sorted(FAMILIES))
    parser.add_argument("--task", type=float, nargs="+", required=True, help="the task vector, e.g. 1.4144")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    script = args.cleanrl / "cleanrl" / "sac_continuous_action.py"
    source = script.read_text()
    if HOOK_MARKER not in source:
        sys.exit(f"error: {script} has no line '{HOOK_MARKER}' to hook the evaluation on; use a CleanRL checkout "
                 "whose sac_continuous_action.py has it (tested: commit fe8d8a0)")
    indent = source.split(HOOK_MARKER)[0].rsplit("\n", 1)[1]
    source = source.replace(HOOK_MARKER, f"_mtrl_hook(global_step, actor, infos)\n{indent}{HOOK_MARKER}", 1)

    family = gym.spec(f"mtrl/{args.family}-v0")  # the family's env, registered at its default task
    env_id = f"mtrl/{args.family}Task-v0"
    gym.register(env_id, entry_point=family.entry_point, max_episode_steps=family.max_episode_steps,
                 kwargs={**family.kwargs, "task": list(args.task)})
    recorder = Recorder(env_id, args.eval_every, args.eval_episodes)
    gym.vector.SyncVectorEnv = OldVectorApi
    torch.set_num_threads(1)
    sys.path.insert(0, str(args.cleanrl))
    sys.argv = [str(script), "--env-id", env_id, "--seed", str(args.seed), "--total-timesteps", str(args.steps),
                "--learning-starts", "10000", "--batch-size", "256", "--q-lr", "3e-4", "--policy-lr", "3e-4",
                "--policy-frequency", "1", "--target-network-frequency", "1", "--no-cuda"]
    exec(compile(source, str(script), "exec"), {"__name__": "__main__", "__file__": str(script),
                                               "_mtrl_hook": recorder})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"family": args.family, "task": args.task, "seed": args.seed,
                                    "eval_episodes": args.eval_episodes, "curve": recorder.curve,
                                    "train_returns": recorder.train_returns,
                                    "seconds": time.time() - recorder.started}, indent=1))


if __name__ == "__main__":
    main()

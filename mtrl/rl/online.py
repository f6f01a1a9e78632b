"""Online SAC in one task: the loop shared by `collect` (whose replay buffer becomes the dataset) and
`sac-init` (SAC from the multi-task policy on an unseen task, and its baselines).

Checkpoints are taken between episodes (so no simulator state needs saving) and hold the agent, the replay
buffer, the NumPy generator and the loop's counters: a killed run resumes and produces exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mtrl.data import TransitionBuffer, to_torch
from mtrl.nn import to_numpy_tree, to_torch_tree
from mtrl.pipeline.base import UnitContext
from mtrl.rl.episodes import evaluate_returns
from mtrl.seeding import ONLINE_SAC_EVAL_SEED


@dataclass
class OnlineState:
    step: int = 0
    episode: int = 0
    curve: list[list[float]] = field(default_factory=list)  # [step, mean return, std] per evaluation
    episode_returns: list[float] = field(default_factory=list)

    def curve_tree(self) -> dict[str, np.ndarray]:
        curve = np.array(self.curve, dtype=np.float64).reshape(-1, 3)
        return {"steps": curve[:, 0], "return_mean": curve[:, 1], "return_std": curve[:, 2],
                "episode_returns": np.array(self.episode_returns)}


@dataclass(frozen=True)
class Schedule:
    steps: int  # environment interactions
    warmup_steps: int  # initial interactions without updates
    eval_every: int
    eval_episodes: int
    checkpoint_every: int
    random_warmup: bool = True  # warm up with uniform random actions (else with the agent's own policy)


def train_online(ctx: UnitContext, agent, env, eval_env, buffer: TransitionBuffer, schedule: Schedule,
                 extra: dict[str, Any] | None = None) -> OnlineState:
    """Run (or resume) SAC for `schedule.steps` interactions, evaluating deterministically along the way.

    `extra` is stored in every checkpoint beside the loop state (e.g. how the agent was initialised); resume
    it from `ctx.checkpointer.load()["extra"]` before building the agent.
    """
    spec_max, act_dim = agent.max_action, agent.act_dim
    batch_size, utd = agent.cfg.batch_size, agent.cfg.utd
    rng = np.random.default_rng(ctx.seed)
    run = OnlineState()
    saved = ctx.checkpointer.load()
    if saved is not None:
        agent.load_state_dict(to_torch_tree(saved["agent"], ctx.device))
        buffer.load_state(saved["buffer"])
        rng.bit_generator.state = saved["rng"]
        run = OnlineState(**saved["run"])
        ctx.log.info(f"{ctx.stage.name} {ctx.unit.key}: resuming at step {run.step}")

    bar = ctx.progress(schedule.steps, unit="step", initial=run.step)
    obs, _ = env.reset(seed=ctx.seed + run.episode)
    episode_return, last_checkpoint = 0.0, run.step
    while run.step < schedule.steps:
        if run.step < schedule.warmup_steps and schedule.random_warmup:
            action = rng.uniform(-spec_max, spec_max, act_dim)
        else:
            action = agent.act(obs, deterministic=False)
        next_obs, reward, terminated, truncated, info = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated, truncated, info)
        obs, episode_return, run.step = next_obs, episode_return + reward, run.step + 1
        if run.step >= schedule.warmup_steps and buffer.size >= batch_size:
            for _ in range(utd):
                agent.update(*(to_torch(buffer.sample(batch_size, rng), ctx.device)
                               for _ in range(agent.batches_per_update)))
        if run.step % schedule.eval_every == 0 or run.step == schedule.steps:
            returns = evaluate_returns(eval_env, lambda o: agent.act(o, deterministic=True),
                                       schedule.eval_episodes, ONLINE_SAC_EVAL_SEED)
            run.curve.append([run.step, float(returns.mean()), float(returns.std())])
            bar.set_postfix(eval_return=f"{returns.mean():.1f}")
        bar.update(1)
        if terminated or truncated:
            run.episode_returns.append(episode_return)
            run.episode += 1
            obs, _ = env.reset(seed=ctx.seed + run.episode)
            episode_return = 0.0
            if run.step - last_checkpoint >= schedule.checkpoint_every and run.step < schedule.steps:
                ctx.checkpointer.save({"agent": to_numpy_tree(agent.state_dict()), "buffer": buffer.state(),
                                       "rng": rng.bit_generator.state, "run": asdict(run), "extra": extra})
                last_checkpoint = run.step
    bar.close()
    return run

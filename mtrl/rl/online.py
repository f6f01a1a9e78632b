"""Online SAC in a group of tasks: the loop shared by `collect` (whose replay buffers become the datasets) and
`sac-init` (SAC from the multi-task policy on unseen tasks, and its baselines).

Task axis: one task-batched `SAC` (`mtrl.algos.sac`) learns every task of the group, each in its own env,
stepped in lockstep: at every step each task acts, steps its env, stores the transition in its own buffer, then
one batched update takes mini-batches [tasks, B, ...] drawn from the tasks' buffers with the tasks' own NumPy
generators. All tasks are at the same step, so the warm-up, update, evaluation and checkpoint schedule is the
same for every task; only episode boundaries differ. Task t's generator is seeded with its unit's seed and its
episode k resets with seed + k, so each task gets exactly what it would get alone (up to float rounding of the
batched networks, see `mtrl.algos.sac`).

Resume: checkpoints are taken every `checkpoint_every` steps, one per task (`UnitContext.checkpointer`, with a
top-level "step"), holding the task's agent slice, replay buffer, NumPy generator and loop state, including where
its current episode started in its buffer. Episodes of different tasks end at different steps, so most tasks
are mid-episode at a checkpoint; no simulator state is saved: on resume each env is reset with its current
episode's seed and the episode's actions, read back from the buffer, are replayed (the envs are deterministic
given the reset seed and the actions; every replayed observation is checked against the buffer). A killed run
thus resumes and produces exactly what the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mtrl.data import TransitionBuffer, stack_task_batches
from mtrl.nn import precision, to_numpy_tree, to_torch_tree
from mtrl.pipeline.base import UnitContext, group_key
from mtrl.rl.episodes import evaluate_lockstep
from mtrl.seeding import ONLINE_SAC_EVAL_SEED


@dataclass
class OnlineState:
    """Where one task's online run stands (checkpointed)."""

    step: int = 0
    episode: int = 0  # episodes finished; the current one reset with seed + episode
    episode_start: int = 0  # buffer row of the current episode's first transition
    curve: list[list[float]] = field(default_factory=list)  # [step, mean return, std] per evaluation
    episode_returns: list[float] = field(default_factory=list)
    # step -> the task's policy state (`SAC.task_policy_states`) at step 0 and at every evaluation, with
    # `Schedule.keep_policies`: what `mtrl datasets` rolls out later (random, medium, expert, mixed kinds)
    policies: dict[int, Any] = field(default_factory=dict)

    def write_curve(self, writer, name: str) -> None:
        """The evaluations (also as CSV: steps, return_mean, return_std) and the training episodes' returns."""
        curve = np.array(self.curve, dtype=np.float64).reshape(-1, 3)
        writer.curve(name, {"steps": curve[:, 0], "return_mean": curve[:, 1], "return_std": curve[:, 2]}, "steps",
                     also={"episode_returns": np.array(self.episode_returns)})


@dataclass(frozen=True)
class Schedule:
    steps: int  # environment interactions
    warmup_steps: int  # initial interactions without updates
    eval_every: int
    eval_episodes: int
    checkpoint_every: int
    random_warmup: bool = True  # warm up with uniform random actions (else with the agent's own policy)
    precision: str = "fp32"  # of the updates (`mtrl.nn.precision`)
    keep_policies: bool = False  # snapshot each task's actor at step 0 and at every evaluation (`OnlineState`)
    rewards: str = "rewards"  # the buffer array SAC learns from (`EnvSpec.behaviour_reward`: a shaped reward)


def train_online(ctxs: Sequence[UnitContext], agent, envs: Sequence, eval_envs: Sequence,
                 buffers: Sequence[TransitionBuffer], schedule: Schedule, saved: Sequence[dict] | None = None,
                 extras: Sequence[dict[str, Any] | None] | None = None) -> list[OnlineState]:
    """Run (or resume) a task-batched SAC for `schedule.steps` interactions in every task, evaluating
    deterministically along the way; returns each task's `OnlineState`.

    Task t (ctxs[t], envs[t], eval_envs[t], buffers[t], slice t of `agent`) must start with an empty buffer.
    `saved`: the group's checkpoints (`mtrl.pipeline.base.load_group_checkpoints`), None to start afresh.
    `extras[t]` is stored in task t's checkpoints beside the loop state (e.g. how its agent was initialised):
    read it back from `saved[t]["extra"]` before building the agent.
    """
    tasks = len(ctxs)
    if not len(envs) == len(eval_envs) == len(buffers) == tasks == agent.tasks:
        raise ValueError(f"train_online: {tasks} units, {agent.tasks} agent tasks, {len(envs)} envs, "
                         f"{len(eval_envs)} evaluation envs and {len(buffers)} buffers")
    extras = [None] * tasks if extras is None else list(extras)
    ctx0, name = ctxs[0], group_key([ctx.unit for ctx in ctxs])
    spec_max, act_dim = agent.max_action, agent.act_dim
    batch_size, utd = agent.cfg.batch_size, agent.cfg.utd
    rngs = [np.random.default_rng(ctx.seed) for ctx in ctxs]
    runs = [OnlineState() for _ in ctxs]
    if saved is not None:
        agent.load_task_states([to_torch_tree(s["agent"], ctx0.device) for s in saved])
        for buffer, rng, s in zip(buffers, rngs, saved, strict=True):
            buffer.load_state(s["buffer"])
            rng.bit_generator.state = s["rng"]
        runs = [OnlineState(**s["run"]) for s in saved]
        ctx0.log.info(f"{ctx0.stage.name} {name}: resuming at step {runs[0].step}")
    step = runs[0].step
    if any(run.step != step for run in runs) or any(buffer.size != step for buffer in buffers):
        raise ValueError(f"train_online: tasks at steps {[r.step for r in runs]} with buffers of "
                         f"{[b.size for b in buffers]} transitions; a group runs in lockstep from empty buffers")

    if schedule.keep_policies and step == 0:
        keep_policies(agent, runs, step)
    starts = [resume_episode(env, ctx.seed + run.episode, buffer, run.episode_start)
              for env, ctx, buffer, run in zip(envs, ctxs, buffers, runs, strict=True)]
    obs, episode_returns = [s[0] for s in starts], [s[1] for s in starts]
    bar = ctx0.progress(schedule.steps, unit="step", initial=step, name=name)
    while step < schedule.steps:
        if step < schedule.warmup_steps and schedule.random_warmup:
            # float32, as stored: the env receives exactly the action in the dataset (and a resume replays it)
            actions = [rng.uniform(-spec_max, spec_max, act_dim).astype(np.float32) for rng in rngs]
        else:
            actions = list(agent.act(np.stack(obs).astype(np.float32), deterministic=False))
        step += 1
        ended = []
        for t, (env, buffer, action) in enumerate(zip(envs, buffers, actions, strict=True)):
            next_obs, reward, terminated, truncated, info = env.step(action)
            buffer.add(obs[t], action, reward, next_obs, terminated, truncated, info)
            obs[t], episode_returns[t] = next_obs, episode_returns[t] + reward
            if terminated or truncated:
                ended.append(t)
        if step >= schedule.warmup_steps and buffers[0].size >= batch_size:  # every buffer holds `step` rows
            for _ in range(utd):
                batches = [stacked_batch(buffers, rngs, batch_size, ctx0.device, schedule.rewards)
                           for _ in range(agent.batches_per_update)]
                with precision(schedule.precision, ctx0.device):
                    agent.update(*batches)
        if step % schedule.eval_every == 0 or step == schedule.steps:
            with UnitContext.evaluating(ctxs):
                returns = evaluate_lockstep(eval_envs, lambda _: lambda o: agent.act(o, deterministic=True),
                                            schedule.eval_episodes, ONLINE_SAC_EVAL_SEED)
            for run, task_returns in zip(runs, returns, strict=True):
                run.curve.append([step, float(task_returns.mean()), float(task_returns.std())])
            if schedule.keep_policies:
                keep_policies(agent, runs, step)
            bar.set_postfix(eval_return=f"{returns.mean():.1f}")
        bar.update(1)
        for t in ended:
            run = runs[t]
            run.episode_returns.append(episode_returns[t])
            run.episode, run.episode_start = run.episode + 1, buffers[t].size
            obs[t], _ = envs[t].reset(seed=ctxs[t].seed + run.episode)
            episode_returns[t] = 0.0
        if step % schedule.checkpoint_every == 0 and step < schedule.steps:
            states = agent.task_states()
            for ctx, run, state, buffer, rng, extra in zip(ctxs, runs, states, buffers, rngs, extras, strict=True):
                run.step = step
                ctx.checkpointer.save({"step": step, "agent": to_numpy_tree(state), "buffer": buffer.state(),
                                       "rng": rng.bit_generator.state, "run": asdict(run), "extra": extra})
    bar.close()
    for run in runs:
        run.step = step
    return runs


def keep_policies(agent, runs: Sequence[OnlineState], step: int) -> None:
    """Snapshot every task's actor (the policy part of its state, as NumPy) into its run under `step`."""
    for run, state in zip(runs, agent.task_policy_states(), strict=True):
        run.policies[step] = to_numpy_tree(state)


def stacked_batch(buffers: Sequence[TransitionBuffer], rngs: Sequence[np.random.Generator], batch_size: int,
                  device, rewards: str = "rewards") -> dict:
    """One mini-batch per task, buffer t sampled with rngs[t], stacked on a leading task axis [tasks, B, ...]."""
    return stack_task_batches([buffer.sample(batch_size, rng, rewards)
                               for buffer, rng in zip(buffers, rngs, strict=True)], device)


def resume_episode(env, seed: int, buffer: TransitionBuffer, start: int) -> tuple[np.ndarray, float]:
    """Bring `env` to where the episode that reset with `seed` and whose transitions are the buffer's rows
    `start:` left it: reset, replay the stored actions, check every observation against the buffer. Returns the
    current observation and the episode's return so far (summed as the uninterrupted run summed it)."""
    obs, _ = env.reset(seed=seed)
    episode_return, data = 0.0, buffer.data
    for i in range(start, buffer.size):
        if not np.array_equal(np.asarray(obs, np.float32), data["observations"][i]):
            raise RuntimeError(f"resume: replaying the current episode diverged from the buffer at row {i}; the "
                               "environment is not deterministic given its reset seed and actions")
        obs, reward, terminated, truncated, _ = env.step(data["actions"][i])
        episode_return += reward
        if terminated or truncated:
            raise RuntimeError(f"resume: the replayed episode ended at buffer row {i}, before its recorded end")
    last = buffer.size - 1
    if last >= start and not np.array_equal(np.asarray(obs, np.float32), data["next_observations"][last]):
        raise RuntimeError(f"resume: replaying the current episode diverged from the buffer at row {last}")
    return obs, episode_return

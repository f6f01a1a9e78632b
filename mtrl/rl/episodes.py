"""The one episode runner: episodes in several envs stepped together, and evaluation returns built on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def run_lockstep(envs: Sequence, act, seed: int, on_step: Callable | None = None) -> list[tuple[np.ndarray, ...]]:
    """One episode in every env, stepped together; `act(obs[active], active)` gives the active rows' actions.

    Every env resets with `seed`. Returns per env (observations, actions, rewards, next_observations) of its
    episode (float32, float32, float64, float32). `on_step(b, obs, action, reward, next_obs, terminated,
    truncated, info)`, if given, sees every transition of env b as it happens (what a dataset stores).
    """
    n = len(envs)
    obs = [env.reset(seed=seed)[0] for env in envs]
    traces: list[list[tuple]] = [[] for _ in range(n)]
    active = np.ones(n, bool)
    while active.any():
        idx = np.flatnonzero(active)
        actions = act(np.stack([obs[b] for b in idx]).astype(np.float32), idx)
        for b, action in zip(idx, actions, strict=True):
            next_obs, reward, terminated, truncated, info = envs[b].step(action)
            traces[b].append((obs[b], action, reward, next_obs))
            if on_step is not None:
                on_step(b, obs[b], action, reward, next_obs, terminated, truncated, info)
            obs[b] = next_obs
            if terminated or truncated:
                active[b] = False
    episodes = []
    for trace in traces:
        obs_, act_, rew_, next_obs_ = zip(*trace, strict=True)
        episodes.append((np.asarray(obs_, np.float32), np.asarray(act_, np.float32), np.asarray(rew_, np.float64),
                         np.asarray(next_obs_, np.float32)))
    return episodes


def evaluate_lockstep(envs: Sequence, make_act: Callable[[int], Callable[[np.ndarray], np.ndarray]], episodes: int,
                      seed: int) -> np.ndarray:
    """Returns [len(envs), episodes] of a task-batched policy, env t being task t: episode k of every env resets
    with seed + k (the same for every evaluation of a run) and all envs step together. `make_act(k)` gives
    episode k's policy, act(obs [tasks, obs_dim]) -> [tasks, act_dim]; rows of finished episodes hold their
    last observation and their actions are dropped."""
    returns = np.empty((len(envs), episodes))
    for k in range(episodes):
        for t, episode in enumerate(run_lockstep(envs, on_active_rows(make_act(k), len(envs)), seed + k)):
            returns[t, k] = episode[2].sum()
    return returns


def on_active_rows(act: Callable[[np.ndarray], np.ndarray], tasks: int):
    """`run_lockstep`'s act(obs[active], active) from a policy that takes one observation per task."""
    latest: np.ndarray | None = None

    def act_active(obs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        nonlocal latest
        if latest is None:
            latest = np.zeros((tasks, obs.shape[1]), np.float32)
        latest[idx] = obs
        return act(latest)[idx]

    return act_active


def evaluate_returns(env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> np.ndarray:
    """Returns of `episodes` episodes of a single-observation policy `act(obs) -> action`, reset seeds seed,
    seed+1, ... (the same for every evaluation of a run)."""
    return evaluate_lockstep([env], lambda _: lambda obs: act(obs[0])[None], episodes, seed)[0]

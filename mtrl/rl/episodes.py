"""The one episode runner: episodes in several envs stepped together, and evaluation returns built on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def run_lockstep(envs: Sequence, act, seed: int) -> list[tuple[np.ndarray, ...]]:
    """One episode in every env, stepped together; `act(obs[active], active)` gives the active rows' actions.

    Every env resets with `seed`. Returns per env (observations, actions, rewards, next_observations) of its
    episode (float32, float32, float64, float32).
    """
    n = len(envs)
    obs = [env.reset(seed=seed)[0] for env in envs]
    traces: list[list[tuple]] = [[] for _ in range(n)]
    active = np.ones(n, bool)
    while active.any():
        idx = np.flatnonzero(active)
        actions = act(np.stack([obs[b] for b in idx]).astype(np.float32), idx)
        for b, action in zip(idx, actions, strict=True):
            next_obs, reward, terminated, truncated, _ = envs[b].step(action)
            traces[b].append((obs[b], action, reward, next_obs))
            obs[b] = next_obs
            if terminated or truncated:
                active[b] = False
    episodes = []
    for trace in traces:
        obs_, act_, rew_, next_obs_ = zip(*trace, strict=True)
        episodes.append((np.asarray(obs_, np.float32), np.asarray(act_, np.float32), np.asarray(rew_, np.float64),
                         np.asarray(next_obs_, np.float32)))
    return episodes


def evaluate_returns(env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> np.ndarray:
    """Returns of `episodes` episodes of a single-observation policy `act(obs) -> action`, reset seeds seed,
    seed+1, ... (the same for every evaluation of a run)."""
    return np.array([run_lockstep([env], lambda obs, _: act(obs[0])[None], seed + k)[0][2].sum()
                     for k in range(episodes)])

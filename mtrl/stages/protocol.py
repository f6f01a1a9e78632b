"""MBML's evaluation protocol (Alg. 5), shared by every method.

In each task, episode 1 acts with a belief drawn from the prior; before every later episode the belief is
drawn from the posterior over all transitions collected so far in that task. The score of a task is the
mean return of the episodes after the first `skip` (MBML and PEARL do not count the first two).
All tasks run in lockstep so a policy acts on one batch per time step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtrl.algos.context import context_rows
from mtrl.stages.policies import ContextPolicy


def run_protocol(envs: Sequence, policy: ContextPolicy, episodes: int, seed: int) -> np.ndarray:
    """Returns [n_tasks, episodes]; env b is task b; episode e of every task resets with seed + e."""
    n = len(envs)
    contexts: list[np.ndarray | None] = [None] * n
    returns = np.zeros((n, episodes))
    for episode in range(episodes):
        beliefs = np.stack([policy.infer(c) for c in contexts])
        rollouts = run_lockstep(envs, lambda obs, active, b=beliefs: policy.act(obs, b[active]), seed + episode)
        for b, (obs, act, rew, next_obs) in enumerate(rollouts):
            rows = context_rows(obs, act, next_obs, rew)
            contexts[b] = rows if contexts[b] is None else np.concatenate([contexts[b], rows])
            returns[b, episode] = rew.sum()
    return returns


def run_lockstep(envs: Sequence, act, seed: int) -> list[tuple[np.ndarray, ...]]:
    """One episode in every env, stepped together; `act(obs[active], active)` gives the active rows' actions.

    Returns per env (observations, actions, rewards, next_observations) of its episode.
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


def score(returns: np.ndarray, skip: int) -> np.ndarray:
    """Per-task score: mean return of the episodes after the first `skip` ([n_tasks, episodes] → [n_tasks])."""
    if returns.shape[1] <= skip:
        raise ValueError(f"{returns.shape[1]} episodes leave none after skipping {skip}")
    return returns[:, skip:].mean(1)

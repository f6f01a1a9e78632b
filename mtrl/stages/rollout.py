"""Running a policy in an environment: episodes with their transitions, and evaluation returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Episode:
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())

    def __len__(self) -> int:
        return len(self.rewards)


def run_episode(env, act: Callable[[np.ndarray], np.ndarray], seed: int) -> Episode:
    """One episode from `env.reset(seed=seed)` until termination or the time limit."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, next_observations = [], [], [], []
    done = False
    while not done:
        action = act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        next_observations.append(next_obs)
        obs, done = next_obs, terminated or truncated
    return Episode(np.asarray(observations, np.float32), np.asarray(actions, np.float32),
                   np.asarray(rewards, np.float64), np.asarray(next_observations, np.float32))


def evaluate_returns(env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> np.ndarray:
    """Returns of `episodes` episodes with reset seeds seed, seed+1, ... (the same for every evaluation)."""
    return np.array([run_episode(env, act, seed + k).ret for k in range(episodes)])

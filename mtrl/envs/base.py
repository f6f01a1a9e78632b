"""What every task family shares: its spec, the task-vector check, and the distribution object.

A *family* (AntDir, PointRobotWind, ...) is a set of MDPs that share observation and action spaces and
differ in one task vector (a direction, a goal, a wind, physical parameters). A *distribution* is a
family plus a seeded draw of train and test task vectors; it is what the collect stage saves in
`tasks.h5`, and the only way the rest of the pipeline builds environments and ground-truth rewards.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium.wrappers import TimeLimit

from mtrl.errors import ConfigError


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about a family that stages need without building an environment."""

    name: str
    gym_id: str
    obs_dim: int
    act_dim: int
    max_action: float  # the action box is [-max_action, max_action]^act_dim
    horizon: int  # episode length; the TimeLimit truncates there
    varies: str  # "reward" or "dynamics": what differs between tasks
    task_dim: int
    task_meaning: str  # what the task vector holds, in words
    info_keys: dict[str, tuple[int, ...]]  # per-step info entries and their shapes
    reward_std_threshold: float  # relabelling: max std of the reward ensemble to trust a prediction
    next_state_std_threshold: float | None  # same for the next-state ensemble; None where dynamics are shared
    default_n_train: int
    default_n_test: int
    discrete_tasks: bool = False  # finite task set: both splits cycle through it, so they overlap


def check_task(task: Any, shape: tuple[int, ...], owner: str, meaning: str) -> np.ndarray:
    """Return `task` as a float64 array of `shape`, or raise a ConfigError naming the expected shape."""
    try:
        array = np.array(task, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"task for {owner} must be a float array of shape {shape} ({meaning}); got {task!r}"
        ) from None
    if array.shape != shape:
        raise ConfigError(
            f"task for {owner} must have shape {shape} ({meaning}); got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"task for {owner} must be finite; got {array.tolist()}")
    return array


class TaskEnv:
    """Mixin for environments built for one task vector (kept out of the observation)."""

    TASK_SHAPE: tuple[int, ...] = (1,)
    TASK_MEANING: str = ""

    def _set_task(self, task: Any) -> None:
        self.task = check_task(task, self.TASK_SHAPE, type(self).__name__, self.TASK_MEANING)


def squared_norm(x: np.ndarray) -> np.ndarray:
    """Sum of squares over the last axis in float64 (a scalar for one vector, [N] for a batch)."""
    return np.sum(np.square(x, dtype=np.float64), axis=-1)


@dataclass(frozen=True)
class Family:
    """A registered family: its spec, where its env class lives, and how its tasks are drawn.

    `entry_point` is "module:Class" so that importing the registry does not import MuJoCo.
    The env class takes `task=` plus `env_kwargs` and has a classmethod
    `reward_batch(task, obs, act, next_obs, infos)`.
    """

    spec: EnvSpec
    entry_point: str
    sample_tasks: Callable[[np.random.Generator, int], np.ndarray]
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    gym_default_task: tuple[float, ...] | None = None  # what gymnasium.make uses when given no task

    def env_class(self) -> type:
        module_name, _, class_name = self.entry_point.partition(":")
        return getattr(importlib.import_module(module_name), class_name)


class TaskDistribution:
    """Train and test tasks of one family, with a factory for their environments and rewards.

    Build it with `mtrl.envs.make_distribution`.
    """

    def __init__(self, family: Family, train_tasks: np.ndarray, test_tasks: np.ndarray):
        self._family = family
        self.spec = family.spec
        self.name = family.spec.name
        self.train_tasks = train_tasks
        self.test_tasks = test_tasks

    def __repr__(self) -> str:
        return (
            f"TaskDistribution({self.name!r}, n_train={len(self.train_tasks)}, "
            f"n_test={len(self.test_tasks)})"
        )

    def _check_task(self, task: Any) -> np.ndarray:
        return check_task(task, (self.spec.task_dim,), self.name, self.spec.task_meaning)

    def make_env(self, task: Any):
        """A Gymnasium env for `task` (any valid task vector), truncated at the family's horizon."""
        env = self._family.env_class()(task=self._check_task(task), **self._family.env_kwargs)
        return TimeLimit(env, max_episode_steps=self.spec.horizon)

    def reward(
        self,
        task: Any,
        obs: np.ndarray,
        act: np.ndarray,
        next_obs: np.ndarray,
        infos: Mapping[str, np.ndarray],
    ) -> np.ndarray:
        """Ground-truth reward of `task` for a batch of transitions (arrays of N rows); float64 [N].

        Equals the environment's reward for the same transitions. `infos` holds, for every key in
        `spec.info_keys`, the values the environment returned (stacked over the batch).
        """
        missing = sorted(set(self.spec.info_keys) - set(infos))
        if missing:
            raise ValueError(
                f"{self.name} reward needs infos {sorted(self.spec.info_keys)}; missing {missing}"
            )
        batch = {key: np.asarray(infos[key], dtype=np.float64) for key in self.spec.info_keys}
        reward = self._family.env_class().reward_batch(
            self._check_task(task),
            np.asarray(obs, dtype=np.float64),
            np.asarray(act, dtype=np.float64),
            np.asarray(next_obs, dtype=np.float64),
            batch,
        )
        return np.asarray(reward, dtype=np.float64)

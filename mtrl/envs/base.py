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

import gymnasium as gym
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
    raw_max_action: float  # the simulator's action box is [-raw_max_action, raw_max_action]^act_dim
    horizon: int  # episode length; the TimeLimit truncates there
    varies: str  # "reward" or "dynamics": what differs between tasks
    task_dim: int
    task_meaning: str  # what the task vector holds, in words
    info_keys: dict[str, tuple[int, ...]]  # per-step info entries and their shapes
    reward_std_threshold: float  # relabelling: max std of the reward ensemble to trust a prediction
    next_state_std_threshold: float | None  # the same for the next-state ensemble's std averaged over state
    # dimensions (reference rule); None where dynamics are shared
    default_n_train: int
    default_n_test: int
    discrete_tasks: bool = False  # finite task set: both splits cycle through it, so they overlap
    # An info key (of `info_keys`) holding a shaped reward that collect's SAC learns from in place of the task's
    # reward, for tasks whose reward is too sparse for SAC to find (SparsePointRobot: the dense −distance, the
    # reward PEARL's env trains on). Datasets, evaluation and every later stage keep the task's own reward.
    behaviour_reward: str | None = None

    @property
    def max_action(self) -> float:
        """The agent's action bound: every family acts in [-1, 1], as the official MBML code wraps its envs.

        `NormalizedActions` multiplies by `raw_max_action` on the way into the simulator; datasets hold the
        normalised actions. Algorithms see 1.0 whatever the raw box (BCQ's VAE collapses on small raw boxes).
        """
        return 1.0


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


class NormalizedActions(gym.ActionWrapper):
    """The agent acts in [-1, 1]^act_dim; the wrapped env receives the action times `scale` (its raw bound).

    A plain multiplication (not Gymnasium's RescaleAction, whose affine map rounds differently) so that the
    ground-truth reward of a stored action, `TaskDistribution.reward`, repeats the env's reward exactly.
    """

    def __init__(self, env: gym.Env, scale: float):
        super().__init__(env)
        self.scale = float(scale)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=env.action_space.shape, dtype=np.float32)

    def action(self, action):
        return np.asarray(action) * self.scale


def normalized_env(entry_point: str, scale: float, **kwargs) -> NormalizedActions:
    """Gymnasium's creator for mtrl/<family>-v0: the family's env behind `NormalizedActions`."""
    module_name, _, class_name = entry_point.partition(":")
    env_class = getattr(importlib.import_module(module_name), class_name)
    return NormalizedActions(env_class(**kwargs), scale)


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
    sample_test_tasks: Callable[[np.random.Generator, int], np.ndarray] | None = None  # None: as sample_tasks

    def env_class(self) -> type:
        module_name, _, class_name = self.entry_point.partition(":")
        return getattr(importlib.import_module(module_name), class_name)

    def make_env(self, **kwargs) -> NormalizedActions:
        """The env for `kwargs` (task included) with actions in [-1, 1]; no time limit."""
        return normalized_env(self.entry_point, self.spec.raw_max_action, **(dict(self.env_kwargs) | kwargs))


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
        """A Gymnasium env for `task` (any valid task vector), actions in [-1, 1], truncated at the horizon."""
        env = self._family.make_env(task=self._check_task(task))
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

        `act` holds normalised actions in [-1, 1], as the datasets do. Equals the environment's reward for the
        same transitions. `infos` holds, for every key in
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
            np.asarray(act, dtype=np.float64) * self.spec.raw_max_action,
            np.asarray(next_obs, dtype=np.float64),
            batch,
        )
        return np.asarray(reward, dtype=np.float64)

    def dataset_reward(self, task: Any, data: Mapping[str, np.ndarray], rows: Any = slice(None)) -> np.ndarray:
        """`reward` of `task` on `rows` (an index array or slice) of a dataset in the D4RL layout, its
        `infos/<key>` arrays included: what relabelling another task's transitions with true rewards needs."""
        infos = {key.removeprefix("infos/"): v[rows] for key, v in data.items() if key.startswith("infos/")}
        return self.reward(task, data["observations"][rows], data["actions"][rows], data["next_observations"][rows],
                           infos)

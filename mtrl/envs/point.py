"""2-D point robots (PEARL / FOCAL): pure Python scalar math, fast enough for tests and CPU checks.

State and observation are the position (x, y); an action moves it by a ∈ [-0.1, 0.1]^2 (clipped),
plus the task's wind where there is one. The reward is computed from the position after the move.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from mtrl.envs.base import TaskEnv

MAX_ACTION = 0.1
SPARSE_GOAL_RADIUS = 0.2
WIND_GOAL = (1.0, 0.0)


class PointEnv(TaskEnv, gym.Env):
    """Point moved by clipped actions plus a constant drift; reward -distance to a goal.

    start: "origin" (start at (0, 0)) or "square" (uniform in [-1, 1]^2 at every reset, as PEARL).
    """

    metadata = {"render_modes": []}

    def __init__(self, goal, drift=(0.0, 0.0), start: str = "origin"):
        if start not in ("origin", "square"):
            raise ValueError(f"start must be 'origin' or 'square', got {start!r}")
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-MAX_ACTION, MAX_ACTION, shape=(2,), dtype=np.float32)
        self._goal_x, self._goal_y = (float(v) for v in goal)
        self._drift_x, self._drift_y = (float(v) for v in drift)
        self._random_start = start == "square"
        self._x = self._y = 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self._random_start:
            self._x, self._y = (float(v) for v in self.np_random.uniform(-1.0, 1.0, size=2))
        else:
            self._x = self._y = 0.0
        return np.array((self._x, self._y)), {}

    def step(self, action):
        self._x += min(max(float(action[0]), -MAX_ACTION), MAX_ACTION) + self._drift_x
        self._y += min(max(float(action[1]), -MAX_ACTION), MAX_ACTION) + self._drift_y
        distance = math.hypot(self._x - self._goal_x, self._y - self._goal_y)
        return np.array((self._x, self._y)), self._reward(distance), False, False, self._info(distance)

    @staticmethod
    def _reward(distance: float) -> float:
        return -distance

    @staticmethod
    def _info(distance: float) -> dict:
        return {}


class PointGoalEnv(PointEnv):
    """PointRobot / PointGoalArc: the task is the goal; dense reward -||s' - g||."""

    TASK_SHAPE = (2,)
    TASK_MEANING = "goal position (x, y)"

    def __init__(self, task, start: str = "square"):
        self._set_task(task)
        super().__init__(goal=self.task, start=start)

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        return -np.linalg.norm(next_obs - task, axis=-1)


class SparsePointGoalEnv(PointGoalEnv):
    """SparsePointRobot: start at the origin; reward 1 - d within radius 0.2 of the goal, else 0.

    The info's `dense_reward` (−d, PointRobot's reward) is what collect's SAC learns from (`spec.behaviour_reward`):
    from the sparse reward alone it never reaches a goal (0 return after 6000 steps, measured), as PEARL's env,
    which hands its learner the dense reward, anticipates."""

    def __init__(self, task):
        super().__init__(task, start="origin")

    @staticmethod
    def _reward(distance: float) -> float:
        return 1.0 - distance if distance <= SPARSE_GOAL_RADIUS else 0.0

    @staticmethod
    def _info(distance: float) -> dict:
        return {"dense_reward": -distance}

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        distance = np.linalg.norm(next_obs - task, axis=-1)
        return np.where(distance <= SPARSE_GOAL_RADIUS, 1.0 - distance, 0.0)


class PointWindEnv(PointEnv):
    """PointRobotWind: the task is a wind added to every move; fixed goal (1, 0), start at the origin."""

    TASK_SHAPE = (2,)
    TASK_MEANING = "wind (dx, dy) added to the position every step"

    def __init__(self, task):
        self._set_task(task)
        super().__init__(goal=WIND_GOAL, drift=self.task, start="origin")

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        return -np.linalg.norm(next_obs - np.asarray(WIND_GOAL), axis=-1)

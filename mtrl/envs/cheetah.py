"""HalfCheetah families, on Gymnasium's HalfCheetah-v5 model (frame skip 5, dt 0.05 s).

HalfCheetahVel (MBML): run at a target velocity v*. HalfCheetahFwdBack (FOCAL): run forward (+1) or
backward (-1). Both observe what PEARL's rlkit cheetah observes and never terminate.
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.spaces import Box

from mtrl.envs.base import squared_norm
from mtrl.envs.mujoco_task import MujocoTaskEnv

CTRL_COST_WEIGHT = 0.05


class HalfCheetahTaskEnv(MujocoTaskEnv, HalfCheetahEnv):
    """Observation: qpos[1:] (8), qvel (9), torso body position (3) = 20-d; info: x_velocity."""

    def __init__(self, task, **kwargs):
        self._set_task(task)
        super().__init__(**kwargs)
        self._torso = self._body_id("torso")
        self.observation_space = Box(-np.inf, np.inf, shape=(20,), dtype=np.float64)
        self._finish_init(**kwargs)

    def _get_obs(self):
        return np.concatenate((self.data.qpos[1:], self.data.qvel, self.data.xpos[self._torso]))

    def step(self, action):
        x_before = self.data.qpos[0]
        self.do_simulation(action, self.frame_skip)
        x_velocity = (self.data.qpos[0] - x_before) / self.dt
        reward = self.compute_reward(self.task, x_velocity, action)
        return self._get_obs(), reward, False, False, self._state_info(x_velocity=x_velocity)

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        return cls.compute_reward(task, infos["x_velocity"], act)


class HalfCheetahVelEnv(HalfCheetahTaskEnv):
    """Reward -|v_x - v*| - 0.05 ||a||^2."""

    TASK_MEANING = "target forward velocity v*"

    @staticmethod
    def compute_reward(task, x_velocity, action):
        return -np.abs(x_velocity - task[0]) - CTRL_COST_WEIGHT * squared_norm(action)


class HalfCheetahFwdBackEnv(HalfCheetahTaskEnv):
    """Reward dir * v_x - 0.05 ||a||^2 with dir in {+1, -1}."""

    TASK_MEANING = "direction: +1 forward, -1 backward"

    @staticmethod
    def compute_reward(task, x_velocity, action):
        return task[0] * x_velocity - CTRL_COST_WEIGHT * squared_norm(action)

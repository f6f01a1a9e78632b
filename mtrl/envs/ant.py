"""Ant families, on Gymnasium's Ant-v5 model (frame skip 5, dt 0.05 s) with contact forces observed.

AntDir (MBML, direction on the 120° arc) and AntFwdBack (FOCAL, direction 0 or π): run in direction g.
AntGoal (MBML): reach a goal in the 120° disc sector of radius 3. Rewards follow PEARL's ant envs.
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from mtrl.envs.base import squared_norm
from mtrl.envs.mujoco_task import MujocoTaskEnv

CONTACT_COST_WEIGHT = 5e-4
CONTACT_DIM = 13 * 6  # clipped cfrc_ext of the 13 non-world bodies: the last entries of the observation


class AntTaskEnv(MujocoTaskEnv, AntEnv):
    """Shared Ant pieces: torso id, clipped contact forces (the world body's row is always 0, so dropped)."""

    OBSERVES_XY = False

    def __init__(self, task, **kwargs):
        self._set_task(task)
        super().__init__(exclude_current_positions_from_observation=not self.OBSERVES_XY, **kwargs)
        self._torso = self._body_id("torso")
        self._finish_init(**kwargs)

    def _contact_forces(self) -> np.ndarray:
        return np.clip(self.data.cfrc_ext[1:], -1.0, 1.0).ravel()

    def _get_obs(self):
        return self._observation(self._contact_forces())


class AntDirEnv(AntTaskEnv):
    """Observation qpos[2:], qvel, clip(cfrc_ext) (105-d); terminates when torso z leaves [0.2, 1.0].

    Reward: torso xy velocity . (cos g, sin g) - 0.5 ||a||^2 - 5e-4 ||clip(cfrc_ext)||^2 + 1.
    """

    TASK_MEANING = "direction angle g in radians"

    def _observation(self, contact):
        return np.concatenate((self.data.qpos[2:], self.data.qvel, contact))

    def step(self, action):
        xy_before = self.data.xpos[self._torso, :2].copy()
        self.do_simulation(action, self.frame_skip)
        xy_velocity = (self.data.xpos[self._torso, :2] - xy_before) / self.dt
        contact = self._contact_forces()
        reward = self.compute_reward(self.task, xy_velocity, action, contact)
        info = self._state_info(xy_velocity=xy_velocity)
        return self._observation(contact), reward, not self.is_healthy, False, info

    @staticmethod
    def compute_reward(task, xy_velocity, action, contact):
        forward = xy_velocity[..., 0] * np.cos(task[0]) + xy_velocity[..., 1] * np.sin(task[0])
        return forward - 0.5 * squared_norm(action) - CONTACT_COST_WEIGHT * squared_norm(contact) + 1.0

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        return cls.compute_reward(task, infos["xy_velocity"], act, next_obs[:, -CONTACT_DIM:])


class AntGoalEnv(AntTaskEnv):
    """Observation qpos (x, y included), qvel, clip(cfrc_ext) (107-d); never terminates.

    Reward: -||torso_xy - goal||_1 - 0.1 ||a||^2 - 5e-4 ||clip(cfrc_ext)||^2.
    """

    TASK_SHAPE = (2,)
    TASK_MEANING = "goal position (x, y)"
    OBSERVES_XY = True

    def _observation(self, contact):
        return np.concatenate((self.data.qpos, self.data.qvel, contact))

    def step(self, action):
        self.do_simulation(action, self.frame_skip)
        torso_xy = self.data.xpos[self._torso, :2].copy()
        contact = self._contact_forces()
        reward = self.compute_reward(self.task, torso_xy, action, contact)
        return self._observation(contact), reward, False, False, self._state_info(torso_xy=torso_xy)

    @staticmethod
    def compute_reward(task, torso_xy, action, contact):
        goal_distance = np.sum(np.abs(torso_xy - task), axis=-1)
        return -goal_distance - 0.1 * squared_norm(action) - CONTACT_COST_WEIGHT * squared_norm(contact)

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        return cls.compute_reward(task, infos["torso_xy"], act, next_obs[:, -CONTACT_DIM:])

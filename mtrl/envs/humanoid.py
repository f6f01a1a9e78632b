"""HumanoidDir-M (MBML, App. G), on Gymnasium's Humanoid-v5 model (frame skip 5, timestep 0.003 s).

Run in direction g (on the 120° arc). The forward weight is 1.25 (OpenAI's Humanoid) instead of the
0.25 of earlier HumanoidDir versions, and, as in the reference code, the centre-of-mass displacement is
divided by the MuJoCo timestep rather than by dt: the velocity term is 5x (frame skip) the true velocity.
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv, mass_center

from mtrl.envs.base import squared_norm
from mtrl.envs.mujoco_task import MujocoTaskEnv

FRAME_SKIP = 5
FORWARD_WEIGHT = 1.25
ALIVE_BONUS = 5.0
CTRL_COST_WEIGHT = 0.1
CONTACT_COST_WEIGHT = 5e-7
CONTACT_COST_MAX = 10.0
CONTACT_DIM = 13 * 6  # cfrc_ext of the 13 non-world bodies: the last entries of the observation


class HumanoidDirEnv(MujocoTaskEnv, HumanoidEnv):
    """Gymnasium's Humanoid-v5 observation (348-d); terminates when qpos z leaves (1, 2).

    Reward: 1.25 * 5 * v_com . (cos g, sin g) - 0.1 ||a||^2 - min(5e-7 ||cfrc_ext||^2, 10) + 5,
    where v_com (info "xy_velocity") is the true centre-of-mass velocity over the step.
    """

    TASK_MEANING = "direction angle g in radians"

    def __init__(self, task, **kwargs):
        self._set_task(task)
        super().__init__(frame_skip=FRAME_SKIP, **kwargs)
        self._finish_init(**kwargs)

    def step(self, action):
        com_before = mass_center(self.model, self.data)
        self.do_simulation(action, self.frame_skip)
        xy_velocity = (mass_center(self.model, self.data) - com_before) / self.dt
        reward = self.compute_reward(self.task, xy_velocity, action, self.data.cfrc_ext[1:].ravel())
        info = self._state_info(xy_velocity=xy_velocity)
        return self._get_obs(), reward, not self.is_healthy, False, info

    @staticmethod
    def compute_reward(task, xy_velocity, action, contact):
        heading_velocity = xy_velocity[..., 0] * np.cos(task[0]) + xy_velocity[..., 1] * np.sin(task[0])
        impact_cost = np.minimum(CONTACT_COST_WEIGHT * squared_norm(contact), CONTACT_COST_MAX)
        return (
            FORWARD_WEIGHT * FRAME_SKIP * heading_velocity
            - CTRL_COST_WEIGHT * squared_norm(action)
            - impact_cost
            + ALIVE_BONUS
        )

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        return cls.compute_reward(task, infos["xy_velocity"], act, next_obs[:, -CONTACT_DIM:])

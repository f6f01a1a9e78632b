"""Walker families, on Gymnasium's Walker2d-v5 model.

WalkerParam (MBML; FOCAL's Walker-2D-Params): tasks differ in dynamics. Each task multiplies the
model's body masses, inertias, joint dampings and geom frictions, as PEARL's rand_param_envs walker.

WalkerWalk / WalkerRun (HCSAC): the DeepMind Control Suite walker tasks. dm-control does not run on
mujoco 4.0.0, so the DMC observation, initial state, timing and reward are re-implemented here on
Gymnasium's walker model (same 7 bodies, 9 dofs, 6 actuators); tasks differ only in reward.
"""

from __future__ import annotations

import mujoco
import numpy as np
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from gymnasium.spaces import Box

from mtrl.envs.base import squared_norm
from mtrl.envs.mujoco_task import MujocoTaskEnv
from mtrl.envs.sampling import WALKER_PARAM_DIM, WALKER_PARAM_LAYOUT
from mtrl.errors import ConfigError


class WalkerParamEnv(MujocoTaskEnv, Walker2dEnv):
    """Gymnasium's Walker2d-v5 observation qpos[1:], clip(qvel, -10, 10) (17-d), frame skip 4.

    Reward: v_x + 1 - 1e-3 ||a||^2 (task-independent). Terminates unless 0.8 < z < 2 and |angle| < 1.
    """

    TASK_SHAPE = (WALKER_PARAM_DIM,)
    TASK_MEANING = (
        "positive multipliers of body_mass (8), body_inertia (8x3), dof_damping (9), geom_friction (8x3)"
    )

    def __init__(self, task, **kwargs):
        self._set_task(task)
        if np.any(self.task <= 0):
            raise ConfigError(f"task for {type(self).__name__} must be positive ({self.TASK_MEANING})")
        super().__init__(**kwargs)
        self._scale_physics()
        self._finish_init(**kwargs)

    def _scale_physics(self) -> None:
        offset = 0
        for field, size, _ in WALKER_PARAM_LAYOUT:
            values = getattr(self.model, field)
            assert values.size == size, f"Walker2d model has {values.size} {field} entries, expected {size}"
            values *= self.task[offset : offset + size].reshape(values.shape)
            offset += size
        # Derived constants (subtree masses, actuator and dof inverse weights, ...) follow mass and inertia.
        mujoco.mj_setConst(self.model, self.data)

    def step(self, action):
        x_before = self.data.qpos[0]
        self.do_simulation(action, self.frame_skip)
        x_velocity = (self.data.qpos[0] - x_before) / self.dt
        reward = self.compute_reward(x_velocity, action)
        info = self._state_info(x_velocity=x_velocity)
        return self._get_obs(), reward, not self.is_healthy, False, info

    @staticmethod
    def compute_reward(x_velocity, action):
        return x_velocity + 1.0 - 1e-3 * squared_norm(action)

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        return cls.compute_reward(infos["x_velocity"], act)


DMC_PHYSICS_TIMESTEP = 0.0025
DMC_SUBSTEPS = 10  # control step 0.025 s, as DMC's walker
STAND_HEIGHT = 1.2


class DmcWalkerEnv(MujocoTaskEnv, Walker2dEnv):
    """DMC walker walk/run: the task is the target speed (walk 1, run 8); never terminates.

    Observation (24-d): body orientations (xx, xz of the 7 bodies' rotation matrices), torso height,
    qvel. Reward: (3 standing + upright) / 4 * (5 move + 1) / 6 with standing = 1 above height 1.2 m
    and 0.1^(((1.2 - h) / 0.6)^2) below, upright = (1 + torso zz) / 2, move = clip(v_com / speed, 0, 1)
    (DMC's `tolerance` with its gaussian and linear sigmoids, written out).
    """

    TASK_MEANING = "target horizontal speed in m/s (walk: 1, run: 8)"

    def __init__(self, task, **kwargs):
        self._set_task(task)
        if self.task[0] <= 0:
            raise ConfigError(f"task for {type(self).__name__} must be a positive speed; got {self.task[0]}")
        super().__init__(frame_skip=DMC_SUBSTEPS, **kwargs)
        self.model.opt.timestep = DMC_PHYSICS_TIMESTEP
        self.metadata["render_fps"] = int(round(1.0 / self.dt))
        self.observation_space = Box(-np.inf, np.inf, shape=(24,), dtype=np.float64)
        self._torso = self._body_id("torso")
        hinge = mujoco.mjtJoint.mjJNT_HINGE
        # DMC's initial state: limited joints uniform in their range, free hinges uniform in [-pi, pi].
        self._random_joints = [
            (self.model.jnt_qposadr[j], *(self.model.jnt_range[j] if limited else (-np.pi, np.pi)))
            for j, limited in enumerate(self.model.jnt_limited)
            if limited or self.model.jnt_type[j] == hinge
        ]
        self._finish_init(**kwargs)

    def _step_mujoco_simulation(self, ctrl, n_frames):
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=n_frames)
        # As DMC, observe positions and velocities of the new state (mj_step leaves them one substep old).
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_comVel(self.model, self.data)
        mujoco.mj_subtreeVel(self.model, self.data)

    def reset_model(self):
        qpos = self.init_qpos.copy()
        for address, low, high in self._random_joints:
            qpos[address] = self.np_random.uniform(low, high)
        self.set_state(qpos, np.zeros(self.model.nv))
        mujoco.mj_subtreeVel(self.model, self.data)
        return self._get_obs()

    def _get_obs(self):
        orientations = self.data.xmat[1:, (0, 2)].ravel()
        return np.concatenate((orientations, self.data.xpos[self._torso, 2:], self.data.qvel))

    def step(self, action):
        self.do_simulation(action, self.frame_skip)
        height = self.data.xpos[self._torso, 2]
        upright = self.data.xmat[self._torso, 8]
        velocity = self.data.subtree_linvel[self._torso, 0]
        reward = float(self.compute_reward(self.task, height, upright, velocity))
        info = self._state_info(torso_height=height, torso_upright=upright, horizontal_velocity=velocity)
        return self._get_obs(), reward, False, False, info

    @staticmethod
    def compute_reward(task, torso_height, torso_upright, horizontal_velocity):
        below = (STAND_HEIGHT - torso_height) / (STAND_HEIGHT / 2)
        standing = np.where(torso_height >= STAND_HEIGHT, 1.0, 0.1 ** np.square(below))
        upright = (1.0 + torso_upright) / 2.0
        move = np.clip(horizontal_velocity / task[0], 0.0, 1.0)
        return (3.0 * standing + upright) / 4.0 * (5.0 * move + 1.0) / 6.0

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        return cls.compute_reward(
            task, infos["torso_height"], infos["torso_upright"], infos["horizontal_velocity"]
        )

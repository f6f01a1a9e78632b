"""UmazeGoal-M (MBML, App. H.1): D4RL's maze2d-umaze-dense point mass, on Gymnasium-Robotics' model.

Gymnasium-Robotics' PointMaze is D4RL's maze2d ported (same point.xml physics: gear 100, damping 1,
timestep 0.01, actions clipped to [-1, 1], velocity clipped to ±5 before each step), in a frame centred
on the maze. MBML's changes: the ball always starts in the middle of the U and the goal is the task.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import gymnasium_robotics.envs.maze.point as gr_point
import mujoco
import numpy as np
from gymnasium_robotics.envs.maze.maps import U_MAZE
from gymnasium_robotics.envs.maze.maze_v4 import Maze

from mtrl.envs.mujoco_task import MujocoTaskEnv

POINT_XML = str(Path(gr_point.__file__).resolve().parent.parent / "assets" / "point" / "point.xml")
MAZE_HEIGHT = 0.4  # as PointMaze; walls only need to meet the ball in the plane
# D4RL's reset cell (2, 3) with its 0.2 offset, in the centred frame (see sampling.umaze_goals).
RESET_XY = np.array([1.2, -0.2])
RESET_NOISE = 0.1


@functools.cache
def _umaze_model() -> mujoco.MjModel:
    """point.xml with U_MAZE's walls, compiled once per process (loading point.xml takes ~0.2 s)."""
    spec = mujoco.MjSpec.from_file(POINT_XML)
    maze = Maze(U_MAZE, maze_size_scaling=1.0, maze_height=MAZE_HEIGHT)
    half = [0.5, 0.5, MAZE_HEIGHT / 2]
    for row, cells in enumerate(U_MAZE):
        for col, cell in enumerate(cells):
            if cell == 1:
                x, y = maze.cell_rowcol_to_xy(np.array([row, col]))
                spec.worldbody.add_geom(
                    name=f"block_{row}_{col}", type=mujoco.mjtGeom.mjGEOM_BOX, pos=[x, y, half[2]],
                    size=half, contype=1, conaffinity=1, rgba=[0.7, 0.5, 0.3, 1.0],
                )
    spec.worldbody.add_site(
        name="target", type=mujoco.mjtGeom.mjGEOM_SPHERE, pos=[0.0, 0.0, half[2]], size=[0.2, 0, 0],
        rgba=[1.0, 0.0, 0.0, 0.7],
    )
    return spec.compile()


class UmazeGoalEnv(MujocoTaskEnv, gr_point.PointEnv):
    """Observation qpos, qvel (4-d); reward exp(-||pos - goal||) after the step; never terminates."""

    TASK_SHAPE = (2,)
    TASK_MEANING = "goal position (x, y) in Gymnasium-Robotics' centred U-maze frame"

    def __init__(self, task, **kwargs):
        self._set_task(task)
        super().__init__(xml_file=POINT_XML, **kwargs)
        self.model.site_pos[self.model.site("target").id, :2] = self.task
        self._finish_init(**kwargs)

    def _initialize_simulation(self):
        model = copy.copy(_umaze_model())
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def reset_model(self):
        qpos = RESET_XY + self.np_random.uniform(-RESET_NOISE, RESET_NOISE, size=2)
        qvel = RESET_NOISE * self.np_random.standard_normal(2)
        self.set_state(qpos, qvel)
        return self._get_obs()[0]

    def step(self, action):
        obs, *_ = super().step(action)
        return obs, self.compute_reward(self.task, obs[:2]), False, False, self._state_info()

    @staticmethod
    def compute_reward(task, position):
        return np.exp(-np.linalg.norm(position - task, axis=-1))

    @classmethod
    def reward_batch(cls, task, obs, act, next_obs, infos):
        return cls.compute_reward(task, next_obs[:, :2])

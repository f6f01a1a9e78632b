"""What the MuJoCo task envs share on top of Gymnasium's v5 classes, which they subclass.

Subclassing (overriding `step` and `_get_obs`) instead of wrapping keeps one Python layer per step.
"""

from __future__ import annotations

import logging

import mujoco
from gymnasium.utils import EzPickle

from mtrl.envs.base import TaskEnv

# MuJoCo prints its warnings to stderr and appends them to MUJOCO_LOG.TXT in the working directory. Route them
# to Python logging instead; the compiler's deprecation of `settotalmass` (in Gymnasium's half_cheetah.xml, which
# must stay as it is to keep the model's masses) is expected and only logged at debug level.
_log = logging.getLogger("mtrl.mujoco")


def _mujoco_warning(message: str) -> None:
    _log.log(logging.DEBUG if "settotalmass" in message else logging.WARNING, "MuJoCo: %s", message.strip())


mujoco.set_mju_user_warning(_mujoco_warning)


class MujocoTaskEnv(TaskEnv):
    """Mixin for a Gymnasium MujocoEnv subclass built for one task vector."""

    def _finish_init(self, **init_kwargs) -> None:
        """Record the constructor arguments for pickling (Gymnasium's EzPickle stored its own)."""
        EzPickle.__init__(self, task=self.task, **init_kwargs)

    def _state_info(self, **values) -> dict:
        """The per-step info: reward inputs that are not in (s, a, s'), plus the full qpos and qvel."""
        values["qpos"] = self.data.qpos.copy()
        values["qvel"] = self.data.qvel.copy()
        return values

    def _body_id(self, name: str) -> int:
        return self.model.body(name).id

"""Task distributions on Gymnasium + MuJoCo (and pure-NumPy point robots).

    from mtrl.envs import make_distribution, FAMILIES
    dist = make_distribution("HalfCheetahVel", n_train=10, n_test=8, seed=0)
    env = dist.make_env(dist.train_tasks[0])

Importing this package registers every family with Gymnasium as mtrl/<family>-v0
(`gymnasium.make("mtrl/HalfCheetahVel-v0", task=[1.0])`). MuJoCo is imported only when an env of a
MuJoCo family is built. docs/envs.md describes every family.
"""

from mtrl.envs.base import EnvSpec, TaskDistribution
from mtrl.envs.registry import FAMILIES, make_distribution, register_gymnasium_envs

register_gymnasium_envs()

__all__ = ["FAMILIES", "EnvSpec", "TaskDistribution", "make_distribution"]

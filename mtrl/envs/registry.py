"""The registered task families, `make_distribution`, and their Gymnasium ids (mtrl/<family>-v0).

Sources: MBML (Li et al., NeurIPS 2020) App. G/H.1 and Table 9, FOCAL (Li, Yang and Luo, ICLR 2021), HCSAC (Bu,
Wang and Xue), and facts about their reference code. docs/envs.md describes every family.
"""

from __future__ import annotations

import math
from functools import partial

import gymnasium
import numpy as np

from mtrl.envs import sampling
from mtrl.envs.base import EnvSpec, Family, TaskDistribution
from mtrl.errors import ConfigError

ARC = 2 * math.pi / 3  # MBML: directions and goals on a 120° arc

ANT_DIR_INFO = {"xy_velocity": (2,), "qpos": (15,), "qvel": (14,)}
X_VELOCITY_INFO = {"x_velocity": (), "qpos": (9,), "qvel": (9,)}  # HalfCheetah and Walker2d: nq = nv = 9
DMC_WALKER_INFO = {
    "torso_height": (),
    "torso_upright": (),
    "horizontal_velocity": (),
    "qpos": (9,),
    "qvel": (9,),
}


def _family(name, entry_point, sample_tasks, env_kwargs=None, gym_default_task=None, sample_test_tasks=None,
            **spec) -> Family:
    spec["info_keys"] = dict(spec["info_keys"])  # each spec owns its dict
    return Family(
        spec=EnvSpec(name=name, gym_id=f"mtrl/{name}-v0", **spec),
        entry_point=entry_point,
        sample_tasks=sample_tasks,
        env_kwargs=env_kwargs or {},
        gym_default_task=gym_default_task,
        sample_test_tasks=sample_test_tasks,
    )


def _point_family(name, entry_point, sample_tasks, env_kwargs=None, sample_test_tasks=None, **spec) -> Family:
    """Shared facts of the 2-D point robots; `spec` adds or overrides."""
    facts = dict(
        obs_dim=2, act_dim=2, raw_max_action=0.1, horizon=20, varies="reward", task_dim=2,
        task_meaning="goal position (x, y)", info_keys={}, reward_std_threshold=0.02,
        next_state_std_threshold=None, default_n_train=10, default_n_test=10,
    )
    return _family(name, entry_point, sample_tasks, env_kwargs, sample_test_tasks=sample_test_tasks,
                   **(facts | spec))


def _dmc_walker_family(name, speeds) -> Family:
    return _family(
        name, "mtrl.envs.walker:DmcWalkerEnv", partial(sampling.cycle, choices=speeds),
        gym_default_task=speeds[0] if len(speeds) == 1 else None,
        obs_dim=24, act_dim=6, raw_max_action=1.0, horizon=1000, varies="reward", task_dim=1,
        task_meaning="target horizontal speed in m/s (walk: 1, run: 8)", info_keys=DMC_WALKER_INFO,
        reward_std_threshold=0.02, next_state_std_threshold=None,
        default_n_train=len(speeds), default_n_test=len(speeds), discrete_tasks=True,
    )


_FAMILY_LIST = [
    # MBML (App. H.1, Table 9)
    _family(
        "AntDir", "mtrl.envs.ant:AntDirEnv", partial(sampling.uniform_scalar, low=0.0, high=ARC),
        obs_dim=105, act_dim=8, raw_max_action=1.0, horizon=200, varies="reward", task_dim=1,
        task_meaning="direction angle g in radians", info_keys=ANT_DIR_INFO,
        reward_std_threshold=0.1, next_state_std_threshold=None, default_n_train=10, default_n_test=8,
    ),
    _family(
        "AntGoal", "mtrl.envs.ant:AntGoalEnv",
        partial(sampling.points_in_sector, max_radius=3.0, max_angle=ARC),
        obs_dim=107, act_dim=8, raw_max_action=1.0, horizon=200, varies="reward", task_dim=2,
        task_meaning="goal position (x, y)", info_keys={"torso_xy": (2,), "qpos": (15,), "qvel": (14,)},
        reward_std_threshold=0.1, next_state_std_threshold=None, default_n_train=10, default_n_test=8,
    ),
    _family(
        "HalfCheetahVel", "mtrl.envs.cheetah:HalfCheetahVelEnv",
        partial(sampling.uniform_scalar, low=0.0, high=1.5),
        obs_dim=20, act_dim=6, raw_max_action=1.0, horizon=1000, varies="reward", task_dim=1,
        task_meaning="target forward velocity v*", info_keys=X_VELOCITY_INFO,
        reward_std_threshold=0.05, next_state_std_threshold=None, default_n_train=10, default_n_test=8,
    ),
    _family(
        "HumanoidDir-M", "mtrl.envs.humanoid:HumanoidDirEnv",
        partial(sampling.uniform_scalar, low=0.0, high=ARC),
        obs_dim=348, act_dim=17, raw_max_action=0.4, horizon=200, varies="reward", task_dim=1,
        task_meaning="direction angle g in radians",
        info_keys={"xy_velocity": (2,), "qpos": (24,), "qvel": (23,)},
        reward_std_threshold=0.2, next_state_std_threshold=None, default_n_train=10, default_n_test=8,
    ),
    _family(
        "WalkerParam", "mtrl.envs.walker:WalkerParamEnv",
        partial(sampling.walker_param_scales, log_scale_limit=3.0),
        obs_dim=17, act_dim=6, raw_max_action=1.0, horizon=200, varies="dynamics",
        task_dim=sampling.WALKER_PARAM_DIM,
        task_meaning="multipliers of body_mass (8), body_inertia (8x3), dof_damping (9), geom_friction (8x3)",
        info_keys=X_VELOCITY_INFO, reward_std_threshold=0.1, next_state_std_threshold=0.2,
        default_n_train=30, default_n_test=8,
    ),
    _family(
        "UmazeGoal-M", "mtrl.envs.maze:UmazeGoalEnv", sampling.umaze_goals,
        obs_dim=4, act_dim=2, raw_max_action=1.0, horizon=300, varies="reward", task_dim=2,
        task_meaning="goal position (x, y) in Gymnasium-Robotics' centred U-maze frame",
        info_keys={"qpos": (2,), "qvel": (2,)},
        reward_std_threshold=0.02, next_state_std_threshold=None, default_n_train=10, default_n_test=8,
    ),
    # FOCAL and the MBML Fig. 1 toy
    _point_family(
        "PointRobot", "mtrl.envs.point:PointGoalEnv", partial(sampling.uniform_box, low=-1.0, high=1.0),
        env_kwargs={"start": "square"},
    ),
    _point_family(
        "PointGoalArc", "mtrl.envs.point:PointGoalEnv",
        partial(sampling.points_on_arc, radius=1.0, max_angle=ARC),
        env_kwargs={"start": "origin"}, default_n_test=8,
        # test goals span the arc, so that no single task-agnostic policy does well on them
        sample_test_tasks=partial(sampling.stratified_points_on_arc, radius=1.0, max_angle=ARC),
    ),
    _point_family(
        "SparsePointRobot", "mtrl.envs.point:SparsePointGoalEnv",
        partial(sampling.points_on_arc, radius=1.0, max_angle=math.pi),
        info_keys={"dense_reward": ()}, behaviour_reward="dense_reward",
    ),
    _point_family(
        "PointRobotWind", "mtrl.envs.point:PointWindEnv", partial(sampling.uniform_box, low=-0.05, high=0.05),
        horizon=25, varies="dynamics", task_meaning="wind (dx, dy) added to the position every step",
        next_state_std_threshold=0.01,
    ),
    _family(
        "HalfCheetahFwdBack", "mtrl.envs.cheetah:HalfCheetahFwdBackEnv",
        partial(sampling.cycle, choices=[[1.0], [-1.0]]),
        obs_dim=20, act_dim=6, raw_max_action=1.0, horizon=200, varies="reward", task_dim=1,
        task_meaning="direction: +1 forward, -1 backward", info_keys=X_VELOCITY_INFO,
        reward_std_threshold=0.1, next_state_std_threshold=None, default_n_train=2, default_n_test=2,
        discrete_tasks=True,
    ),
    _family(
        "AntFwdBack", "mtrl.envs.ant:AntDirEnv", partial(sampling.cycle, choices=[[0.0], [math.pi]]),
        obs_dim=105, act_dim=8, raw_max_action=1.0, horizon=200, varies="reward", task_dim=1,
        task_meaning="direction angle g in radians (0 forward, pi backward)", info_keys=ANT_DIR_INFO,
        reward_std_threshold=0.1, next_state_std_threshold=None, default_n_train=2, default_n_test=2,
        discrete_tasks=True,
    ),
    # HCSAC: DMC walker walk and run, alone (CSAC) and together (MTCSAC, HCSAC)
    _dmc_walker_family("WalkerWalk", [[1.0]]),
    _dmc_walker_family("WalkerRun", [[8.0]]),
    _dmc_walker_family("WalkerWalkRun", [[1.0], [8.0]]),
]

_FAMILIES = {family.spec.name: family for family in _FAMILY_LIST}
FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task family {name!r}; choose one of: {', '.join(FAMILIES)}") from None


def _check_count(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def make_distribution(
    name: str, n_train: int | None = None, n_test: int | None = None, seed: int = 0
) -> TaskDistribution:
    """Draw `n_train` train and `n_test` test tasks of family `name` (None: the paper's defaults).

    Same arguments, same tasks. Train and test tasks come from independent streams of `seed`, so
    changing `n_test` leaves the train tasks unchanged. Continuous families never share a task
    between the splits; finite task sets (`spec.discrete_tasks`) are cycled through by both splits.
    """
    family = get_family(name)
    spec = family.spec
    n_train = _check_count(spec.default_n_train if n_train is None else n_train, "n_train", 1)
    n_test = _check_count(spec.default_n_test if n_test is None else n_test, "n_test", 0)
    seed = _check_count(seed, "seed", 0)
    train_stream, test_stream = np.random.SeedSequence(seed).spawn(2)
    train = family.sample_tasks(np.random.default_rng(train_stream), n_train)
    test = (family.sample_test_tasks or family.sample_tasks)(np.random.default_rng(test_stream), n_test)
    if not spec.discrete_tasks and (train[:, None, :] == test[None, :, :]).all(axis=-1).any():
        raise RuntimeError(f"{name}: a test task equals a train task (seed {seed}); this should not happen")
    return TaskDistribution(family, train, test)


def register_gymnasium_envs() -> None:
    """Register mtrl/<family>-v0 for every family (task passed as gymnasium.make(id, task=...)).

    Like every env of the pipeline, they act in [-1, 1] (`NormalizedActions` over the raw box).

    Without `task=`, a family's env is its single task (WalkerWalk, WalkerRun) or else the first training task
    of its default split (`make_distribution(name)`, task seed 0), so `gymnasium.make("mtrl/AntDir-v0")` works.
    """
    for family in _FAMILY_LIST:
        spec = family.spec
        if spec.gym_id in gymnasium.registry:
            continue
        kwargs = {"entry_point": family.entry_point, "scale": spec.raw_max_action, **family.env_kwargs}
        default = family.gym_default_task
        kwargs["task"] = list(make_distribution(spec.name).train_tasks[0] if default is None else default)
        # the creator by name, not as a function: a spec must survive JSON (Minari stores it to recover the env)
        gymnasium.register(id=spec.gym_id, entry_point="mtrl.envs.base:normalized_env", max_episode_steps=spec.horizon,
                           kwargs=kwargs)

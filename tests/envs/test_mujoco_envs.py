"""MuJoCo families: spaces, rewards recomputed from MuJoCo state, termination, horizon, task effects."""

import copy
import math

import mujoco
import numpy as np
import pytest

from mtrl.envs import make_distribution

REWARD_FAMILIES = [
    "AntDir", "AntGoal", "HalfCheetahVel", "HumanoidDir-M", "UmazeGoal-M", "HalfCheetahFwdBack",
    "AntFwdBack", "WalkerWalk", "WalkerRun", "WalkerWalkRun",
]  # fmt: skip
MUJOCO_FAMILIES = REWARD_FAMILIES + ["WalkerParam"]
DMC_WALKERS = ("WalkerWalk", "WalkerRun", "WalkerWalkRun")
TERMINATING = ("AntDir", "AntFwdBack", "HumanoidDir-M", "WalkerParam")
# A qpos entry and a value that puts the body out of the healthy range of the terminating families
# (torso too high, walker tilted) or, for the others, in a pose that must not end the episode.
PERTURBATION = {
    "AntDir": (2, 1.5), "AntFwdBack": (2, 1.5), "AntGoal": (2, 1.5), "HumanoidDir-M": (2, 2.5),
    "WalkerParam": (2, 1.2), "HalfCheetahVel": (2, math.pi), "HalfCheetahFwdBack": (2, math.pi),
    "UmazeGoal-M": (0, 30.0), "WalkerWalk": (1, 0.3), "WalkerRun": (1, 0.3), "WalkerWalkRun": (1, 0.3),
}  # fmt: skip


def _setup(name, task_index=0, seed=0):
    dist = make_distribution(name, n_train=2, n_test=1, seed=seed)
    task = dist.train_tasks[task_index]
    return dist, task, dist.make_env(task)


def _actions(dist, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, dist.spec.act_dim)) * dist.spec.max_action).astype(np.float32)


def _dmc_tolerance(x, lower, margin, sigmoid, value_at_margin):
    """DeepMind Control's rewards.tolerance for bounds (lower, inf), written from its definition."""
    if x >= lower:
        return 1.0
    d = (lower - x) / margin
    if sigmoid == "gaussian":
        return math.exp(-0.5 * (d * math.sqrt(-2 * math.log(value_at_margin))) ** 2)
    scaled = d * (1 - value_at_margin)  # linear
    return 1 - scaled if abs(scaled) < 1 else 0.0


def _formula_reward(name, env, task, action, before):
    """The family's reward from the papers / REFERENCE.md, computed from MuJoCo state after the step."""
    model, data, a = env.model, env.data, action.astype(np.float64)
    dt = model.opt.timestep * env.frame_skip
    torso = model.body("torso").id if name != "UmazeGoal-M" else None
    contact = np.sum(np.clip(data.cfrc_ext, -1, 1) ** 2)
    if name in ("AntDir", "AntFwdBack"):
        velocity = (data.xpos[torso, :2] - before.xpos[torso, :2]) / dt
        heading = velocity @ [math.cos(task[0]), math.sin(task[0])]
        return heading - 0.5 * a @ a - 0.5e-3 * contact + 1.0
    if name == "AntGoal":
        return -np.abs(data.xpos[torso, :2] - task).sum() - 0.1 * a @ a - 0.5e-3 * contact
    if name in ("HalfCheetahVel", "HalfCheetahFwdBack"):
        velocity = (data.qpos[0] - before.qpos[0]) / dt
        forward = -abs(velocity - task[0]) if name == "HalfCheetahVel" else task[0] * velocity
        return forward - 0.05 * a @ a
    if name == "HumanoidDir-M":
        mass = model.body_mass
        displacement = mass @ (data.xipos - before.xipos) / mass.sum()
        forward = displacement[:2] @ [math.cos(task[0]), math.sin(task[0])] / model.opt.timestep
        impact = min(0.5e-6 * np.sum(data.cfrc_ext**2), 10.0)
        return 1.25 * forward - 0.1 * data.ctrl @ data.ctrl - impact + 5.0
    if name == "WalkerParam":
        return (data.qpos[0] - before.qpos[0]) / dt + 1.0 - 1e-3 * a @ a
    if name == "UmazeGoal-M":
        return math.exp(-np.linalg.norm(data.qpos - task))
    # DMC walker: recompute kinematics of the current state on a copy, as DMC observes it
    state = copy.copy(data)
    mujoco.mj_forward(model, state)
    mujoco.mj_subtreeVel(model, state)
    standing = _dmc_tolerance(state.xpos[torso, 2], 1.2, 0.6, "gaussian", 0.1)
    upright = (1 + state.xmat[torso, 8]) / 2
    move = _dmc_tolerance(state.subtree_linvel[torso, 0], task[0], task[0] / 2, "linear", 0.5)
    return (3 * standing + upright) / 4 * (5 * move + 1) / 6


@pytest.mark.parametrize("name", MUJOCO_FAMILIES)
def test_rewards_match_the_formula_and_the_batch_reward(name):
    dist, task, env = _setup(name)
    inner = env.unwrapped
    obs, _ = env.reset(seed=1)
    assert obs.shape == (dist.spec.obs_dim,) and obs.dtype == np.float64
    assert env.action_space.shape == (dist.spec.act_dim,)
    rows = {"obs": [], "act": [], "next_obs": [], "reward": []}
    infos = {key: [] for key in dist.spec.info_keys}
    for action in _actions(dist, 15):
        before = copy.copy(inner.data)
        next_obs, reward, terminated, truncated, info = env.step(action)
        assert set(info) == set(dist.spec.info_keys)
        for key, shape in dist.spec.info_keys.items():
            assert np.shape(info[key]) == shape
            infos[key].append(info[key])
        assert reward == pytest.approx(_formula_reward(name, inner, task, action, before), abs=1e-6)
        np.testing.assert_array_equal(info["qpos"], inner.data.qpos)
        for key, value in zip(rows, (obs, action, next_obs, reward), strict=True):
            rows[key].append(value)
        obs = next_obs
        if terminated:
            break
    batch = dist.reward(task, *(np.array(rows[k]) for k in ("obs", "act", "next_obs")),
                        {key: np.array(values) for key, values in infos.items()})  # fmt: skip
    assert batch.dtype == np.float64 and batch.shape == (len(rows["reward"]),)
    np.testing.assert_allclose(batch, rows["reward"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", REWARD_FAMILIES)
def test_tasks_change_rewards_but_not_observations(name):
    dist = make_distribution(name, n_train=2, n_test=0, seed=0)
    tasks = dist.train_tasks if name not in ("WalkerWalk", "WalkerRun") else [[1.0], [8.0]]
    trajectories = []
    for task in tasks:
        env = dist.make_env(task)
        first, _ = env.reset(seed=3)
        steps = [env.step(action)[:2] for action in _actions(dist, 10, seed=3)]
        trajectories.append(([first] + [obs for obs, _ in steps], [reward for _, reward in steps]))
    (obs_a, rewards_a), (obs_b, rewards_b) = trajectories
    np.testing.assert_array_equal(np.array(obs_a), np.array(obs_b))  # the task is not observed
    assert np.abs(np.array(rewards_a) - np.array(rewards_b)).max() > 1e-5


def test_walker_param_tasks_change_dynamics_and_scale_the_model():
    dist = make_distribution("WalkerParam", n_train=2, n_test=0, seed=0)
    envs = [dist.make_env(task) for task in dist.train_tasks]
    first_obs = [env.reset(seed=2)[0] for env in envs]
    np.testing.assert_array_equal(*first_obs)  # the task is not observed
    action = np.full(6, 0.5, dtype=np.float32)
    next_obs = [env.step(action)[0] for env in envs]
    assert np.abs(next_obs[0] - next_obs[1]).max() > 1e-3

    default = make_distribution("WalkerParam", 1, 0).make_env(np.ones(65)).unwrapped.model
    model, task = envs[0].unwrapped.model, dist.train_tasks[0]
    np.testing.assert_allclose(model.body_mass, default.body_mass * task[:8])
    np.testing.assert_allclose(model.body_inertia, default.body_inertia * task[8:32].reshape(8, 3))
    np.testing.assert_allclose(model.dof_damping, default.dof_damping * task[32:41])
    np.testing.assert_allclose(model.geom_friction, default.geom_friction * task[41:].reshape(8, 3))
    # derived constants were recomputed (mj_setConst): subtree masses follow the new masses
    assert model.body_subtreemass[0] == pytest.approx(model.body_mass.sum())


@pytest.mark.parametrize("name", MUJOCO_FAMILIES)
def test_termination_fires_exactly_when_the_state_is_unhealthy(name):
    dist, _, env = _setup(name)
    inner = env.unwrapped
    env.reset(seed=0)
    zero = np.zeros(dist.spec.act_dim, dtype=np.float32)
    assert not env.step(zero)[2]
    index, value = PERTURBATION[name]
    qpos = inner.init_qpos.copy()
    qpos[index] = value
    inner.set_state(qpos, np.zeros(inner.model.nv))
    assert env.step(zero)[2] == (name in TERMINATING)


@pytest.mark.parametrize("name", MUJOCO_FAMILIES)
def test_episodes_are_truncated_at_the_horizon(name):
    dist, _, env = _setup(name)
    inner = env.unwrapped
    env.reset(seed=0)
    zero = np.zeros(dist.spec.act_dim, dtype=np.float32)
    for step in range(1, dist.spec.horizon + 1):
        if name in TERMINATING:  # keep the body healthy
            inner.set_state(inner.init_qpos, inner.init_qvel)
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated and truncated == (step == dist.spec.horizon)


@pytest.mark.parametrize("name", ["HalfCheetahVel", "AntGoal", "WalkerWalkRun"])
def test_reset_with_a_seed_is_reproducible(name):
    _, _, env = _setup(name)
    first = env.reset(seed=11)[0]
    env.step(env.action_space.sample())
    np.testing.assert_array_equal(env.reset(seed=11)[0], first)
    assert not np.array_equal(env.reset(seed=12)[0], first)


def test_dmc_walker_observation_and_random_initial_pose():
    _, _, env = _setup("WalkerWalk")
    inner = env.unwrapped
    angles = []
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        torso = inner.model.body("torso").id
        np.testing.assert_array_equal(obs[:14], inner.data.xmat[1:, [0, 2]].ravel())
        assert obs[14] == inner.data.xpos[torso, 2] == inner.data.qpos[1]
        np.testing.assert_array_equal(obs[15:], inner.data.qvel)
        angles.append(inner.data.qpos[2])
    assert max(angles) - min(angles) > 1.0  # torso orientation drawn from [-pi, pi]
    assert max(np.abs(angles)) <= math.pi
    assert inner.dt == pytest.approx(0.025)


def test_umaze_ball_starts_mid_u_and_walls_stop_it():
    _, _, env = _setup("UmazeGoal-M")
    obs, _ = env.reset(seed=0)
    assert np.abs(obs[:2] - [1.2, -0.2]).max() <= 0.1
    for _ in range(100):  # push towards the wall between the two arms (cell (2, 2): x < 0.5)
        obs = env.step(np.array([-1.0, 0.0], dtype=np.float32))[0]
    assert 0.55 < obs[0] < 0.65

"""The registry: family names, task sampling, splits, bad input, Gymnasium ids."""

import math
import pickle

import gymnasium
import numpy as np
import pytest

from mtrl.envs import FAMILIES, EnvSpec, make_distribution
from mtrl.envs.sampling import WALKER_PARAM_DIM
from mtrl.errors import ConfigError

DISCRETE = {"HalfCheetahFwdBack", "AntFwdBack", "WalkerWalk", "WalkerRun", "WalkerWalkRun"}


def test_families_are_the_issue_list():
    assert set(FAMILIES) == {
        "AntDir", "AntGoal", "HalfCheetahVel", "HumanoidDir-M", "WalkerParam", "UmazeGoal-M",
        "PointRobot", "PointGoalArc", "SparsePointRobot", "PointRobotWind",
        "HalfCheetahFwdBack", "AntFwdBack", "WalkerWalk", "WalkerRun", "WalkerWalkRun",
    }  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_same_tasks_and_other_seed_other_tasks(name):
    first = make_distribution(name, n_train=3, n_test=2, seed=7)
    again = make_distribution(name, n_train=3, n_test=2, seed=7)
    assert isinstance(first.spec, EnvSpec) and first.name == name
    for tasks in (first.train_tasks, first.test_tasks, again.train_tasks):
        assert tasks.dtype == np.float64 and tasks.shape[1] == first.spec.task_dim
    np.testing.assert_array_equal(first.train_tasks, again.train_tasks)
    np.testing.assert_array_equal(first.test_tasks, again.test_tasks)
    other = make_distribution(name, n_train=3, n_test=2, seed=8)
    if name not in DISCRETE:
        assert not np.array_equal(first.train_tasks, other.train_tasks)


@pytest.mark.parametrize("name", sorted(set(FAMILIES) - DISCRETE))
def test_continuous_splits_are_disjoint(name):
    dist = make_distribution(name, n_train=30, n_test=30, seed=0)
    for test_task in dist.test_tasks:
        assert not (dist.train_tasks == test_task).all(axis=1).any()


def test_train_tasks_do_not_depend_on_the_number_of_test_tasks():
    few = make_distribution("AntDir", n_train=4, n_test=1, seed=3)
    many = make_distribution("AntDir", n_train=4, n_test=9, seed=3)
    np.testing.assert_array_equal(few.train_tasks, many.train_tasks)


@pytest.mark.parametrize(
    "name, train, test",
    [
        ("HalfCheetahFwdBack", [[1], [-1], [1]], [[1], [-1]]),
        ("AntFwdBack", [[0], [math.pi]], [[0]]),
        ("WalkerWalkRun", [[1], [8]], [[1], [8]]),
        ("WalkerRun", [[8]], [[8]]),
    ],
)
def test_discrete_families_cycle_through_their_tasks_in_both_splits(name, train, test):
    dist = make_distribution(name, n_train=len(train), n_test=len(test), seed=5)
    np.testing.assert_array_equal(dist.train_tasks, train)
    np.testing.assert_array_equal(dist.test_tasks, test)


def _angles(points):
    return np.arctan2(points[:, 1], points[:, 0])


def test_tasks_lie_where_the_papers_sample_them():
    arc = 2 * math.pi / 3
    tasks = {name: make_distribution(name, 200, 0, seed=1).train_tasks for name in FAMILIES}
    for name in ("AntDir", "HumanoidDir-M"):
        assert tasks[name].min() >= 0 and tasks[name].max() <= arc and tasks[name].max() > 0.9 * arc
    assert 0 <= tasks["HalfCheetahVel"].min() and tasks["HalfCheetahVel"].max() <= 1.5
    goal = tasks["AntGoal"]
    assert np.linalg.norm(goal, axis=1).max() <= 3 and np.linalg.norm(goal, axis=1).max() > 2.8
    assert _angles(goal).min() >= 0 and _angles(goal).max() <= arc
    np.testing.assert_allclose(np.linalg.norm(tasks["PointGoalArc"], axis=1), 1.0)
    assert _angles(tasks["PointGoalArc"]).min() >= 0 and _angles(tasks["PointGoalArc"]).max() <= arc
    np.testing.assert_allclose(np.linalg.norm(tasks["SparsePointRobot"], axis=1), 1.0)
    assert _angles(tasks["SparsePointRobot"]).max() > 0.9 * math.pi
    assert np.abs(tasks["PointRobot"]).max() <= 1 and np.abs(tasks["PointRobotWind"]).max() <= 0.05
    scales = np.log(tasks["WalkerParam"]) / np.log(np.r_[np.full(32, 1.5), np.full(9, 1.3), np.full(24, 1.5)])
    assert tasks["WalkerParam"].shape[1] == WALKER_PARAM_DIM == 65
    assert np.abs(scales).max() <= 3 and np.abs(scales).max() > 2.9


def test_umaze_goals_lie_in_the_two_arms_of_the_u():
    goals = make_distribution("UmazeGoal-M", 100, 0, seed=2).train_tasks
    # Gymnasium-Robotics frame: column = x + 2, row = 2 - y; the arms are rows 1 and 3, columns 1 and 2.
    rows, cols = np.floor(2.5 - goals[:, 1]), np.floor(goals[:, 0] + 2.5)
    assert set(rows[0::2]) == {1} and set(rows[1::2]) == {3}
    assert set(cols) == {1, 2}
    # at least the ball radius (0.1) away from the walls above and below the arm
    assert (np.abs(goals[:, 1]) >= 0.6 - 1e-12).all() and (np.abs(goals[:, 1]) <= 1.4 + 1e-12).all()


@pytest.mark.parametrize(
    "name, n_train, n_test",
    [("AntDir", 10, 8), ("AntGoal", 10, 8), ("HalfCheetahVel", 10, 8), ("HumanoidDir-M", 10, 8),
     ("WalkerParam", 30, 8), ("UmazeGoal-M", 10, 8)],  # Table 9
)  # fmt: skip
def test_omitted_counts_are_the_paper_defaults(name, n_train, n_test):
    dist = make_distribution(name, seed=1)
    assert (dist.spec.default_n_train, dist.spec.default_n_test) == (n_train, n_test)
    assert (len(dist.train_tasks), len(dist.test_tasks)) == (n_train, n_test)


def test_unknown_family_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown task family 'Nope'; choose one of: AntDir, AntGoal"):
        make_distribution("Nope", 1, 1, 0)


@pytest.mark.parametrize(
    "n_train, n_test, seed", [(0, 1, 0), (2.5, 1, 0), (1, -1, 0), (1, 1, -3), (True, 1, 0)]
)
def test_bad_counts_and_seeds_are_config_errors(n_train, n_test, seed):
    with pytest.raises(ConfigError, match=r"must be an integer >= "):
        make_distribution("PointRobot", n_train, n_test, seed)


@pytest.mark.parametrize("name", ["HalfCheetahVel", "AntGoal", "WalkerParam", "PointRobotWind"])
def test_wrong_task_shape_names_the_expected_shape(name):
    dist = make_distribution(name, 1, 1, seed=0)
    wrong = np.zeros(dist.spec.task_dim + 1)
    expected = rf"task for {name} must have shape \({dist.spec.task_dim},\)"
    with pytest.raises(ConfigError, match=expected):
        dist.make_env(wrong)
    obs, act = np.zeros((1, dist.spec.obs_dim)), np.zeros((1, dist.spec.act_dim))
    infos = {key: np.zeros((1, *shape)) for key, shape in dist.spec.info_keys.items()}
    with pytest.raises(ConfigError, match=expected):
        dist.reward(wrong, obs, act, obs, infos)
    with pytest.raises(ConfigError, match=r"must have shape"):
        gymnasium.make(dist.spec.gym_id, task=wrong)
    with pytest.raises(ConfigError, match=r"float array"):
        dist.make_env("fast")


def test_reward_without_its_infos_says_which_are_missing():
    dist = make_distribution("HalfCheetahVel", 1, 1, seed=0)
    with pytest.raises(ValueError, match=r"missing \['x_velocity'\]"):
        dist.reward(dist.train_tasks[0], np.zeros((1, 20)), np.zeros((1, 6)), np.zeros((1, 20)),
                    {"qpos": np.zeros((1, 9)), "qvel": np.zeros((1, 9))})  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
def test_gymnasium_id_builds_the_same_env_with_the_family_horizon(name):
    dist = make_distribution(name, 1, 0, seed=0)
    env = gymnasium.make(dist.spec.gym_id, task=dist.train_tasks[0])
    assert env.spec.max_episode_steps == dist.spec.horizon
    assert env.observation_space.shape == (dist.spec.obs_dim,)
    assert env.action_space.shape == (dist.spec.act_dim,)
    np.testing.assert_array_equal(env.action_space.high, 1.0)  # the pipeline's convention, gymnasium.make too
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    mine = dist.make_env(dist.train_tasks[0])
    np.testing.assert_array_equal(env.reset(seed=4)[0], mine.reset(seed=4)[0])
    env.close()


@pytest.mark.parametrize("name", FAMILIES)
def test_agents_act_in_the_unit_box_and_the_simulator_gets_the_raw_box(name):
    from mtrl.envs.base import NormalizedActions

    dist = make_distribution(name, 1, 0, seed=0)
    env = dist.make_env(dist.train_tasks[0])
    assert dist.spec.max_action == 1.0
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    raw_box, wrapper = env.unwrapped.action_space, env.env
    assert isinstance(wrapper, NormalizedActions)
    np.testing.assert_allclose(raw_box.high, dist.spec.raw_max_action)
    np.testing.assert_allclose(raw_box.low, -dist.spec.raw_max_action)
    env.action_space.seed(0)
    actions = np.array([env.action_space.sample() for _ in range(200)] + [-np.ones(dist.spec.act_dim),
                                                                       np.ones(dist.spec.act_dim)])
    raw = np.array([wrapper.action(a) for a in actions])
    assert np.all(raw >= raw_box.low - 1e-7) and np.all(raw <= raw_box.high + 1e-7)
    np.testing.assert_allclose(raw[-2:], [raw_box.low, raw_box.high], rtol=1e-6)
    assert raw.std() > 0.4 * dist.spec.raw_max_action  # spread over the raw box, not squeezed into a corner


def test_point_goal_arc_test_goals_span_the_arc():
    """A stratified draw: one test goal in each of n equal slices of the 120° arc; train goals stay i.i.d."""
    dist = make_distribution("PointGoalArc", n_train=10, n_test=8, seed=0)
    angles = np.arctan2(dist.test_tasks[:, 1], dist.test_tasks[:, 0])
    slices = np.floor(angles / (2 * np.pi / 3) * 8).astype(int)
    np.testing.assert_array_equal(np.sort(slices), np.arange(8))
    np.testing.assert_allclose(np.linalg.norm(dist.test_tasks, axis=1), 1.0)
    train_before = make_distribution("PointGoalArc", n_train=10, n_test=3, seed=0).train_tasks
    np.testing.assert_array_equal(dist.train_tasks, train_before)


def test_gymnasium_make_needs_no_task():
    """Single-task families default to their task, the others to the first training task of the default split."""
    assert gymnasium.make("mtrl/WalkerRun-v0").unwrapped.task.tolist() == [8.0]
    assert gymnasium.make("mtrl/WalkerWalk-v0").unwrapped.task.tolist() == [1.0]
    for name in ("HalfCheetahVel", "PointGoalArc", "AntGoal"):
        env = gymnasium.make(f"mtrl/{name}-v0")
        np.testing.assert_array_equal(env.unwrapped.task, make_distribution(name).train_tasks[0])
        env.reset(seed=0)
        env.step(env.action_space.sample())


def test_distributions_and_envs_pickle():
    original = make_distribution("HalfCheetahVel", 2, 1, seed=0)
    dist = pickle.loads(pickle.dumps(original))
    np.testing.assert_array_equal(dist.train_tasks, original.train_tasks)
    env = pickle.loads(pickle.dumps(dist.make_env(dist.train_tasks[1]).unwrapped))
    np.testing.assert_array_equal(env.task, dist.train_tasks[1])


@pytest.mark.parametrize("name", FAMILIES)
def test_gymnasium_specs_survive_json(name):  # what Minari stores so that `recover_environment()` works
    spec = gymnasium.spec(f"mtrl/{name}-v0")
    assert gymnasium.envs.registration.EnvSpec.from_json(spec.to_json()) == spec

"""Point robots: motion, rewards, starts, horizon, and what the task changes."""

import math

import numpy as np
import pytest

from mtrl.envs import make_distribution

POINT_FAMILIES = ["PointRobot", "PointGoalArc", "SparsePointRobot", "PointRobotWind"]


def _formula_reward(name, task, position):
    goal = (1.0, 0.0) if name == "PointRobotWind" else task
    distance = math.hypot(position[0] - goal[0], position[1] - goal[1])
    if name == "SparsePointRobot":
        return 1.0 - distance if distance <= 0.2 else 0.0
    return -distance


@pytest.mark.parametrize("name", POINT_FAMILIES)
def test_motion_and_rewards_follow_the_formulas(name):
    dist = make_distribution(name, n_train=2, n_test=1, seed=0)
    task = dist.train_tasks[0]
    env = dist.make_env(task)
    assert env.observation_space.shape == (2,) and env.action_space.shape == (2,)
    position, _ = env.reset(seed=5)
    assert position.dtype == np.float64
    wind = task if name == "PointRobotWind" else np.zeros(2)
    # Agents act in [-1, 1]; the raw step is 0.1 x the action, clipped to the ±0.1 box.
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    actions = np.random.default_rng(0).uniform(-3.0, 3.0, (dist.spec.horizon, 2))  # some beyond the box
    next_positions, rewards = [], []
    for step, action in enumerate(actions, start=1):
        obs, reward, terminated, truncated, info = env.step(action)
        position = position + np.clip(0.1 * action, -0.1, 0.1) + wind
        np.testing.assert_allclose(obs, position, atol=1e-12)
        assert reward == pytest.approx(_formula_reward(name, task, position), abs=1e-12)
        distance = math.hypot(*(position - ((1.0, 0.0) if name == "PointRobotWind" else task)))
        assert info == ({"dense_reward": -distance} if name == "SparsePointRobot" else {})
        assert not terminated and truncated == (step == dist.spec.horizon)
        next_positions.append(obs)
        rewards.append(reward)
    observations = np.array([env.reset(seed=5)[0], *next_positions[:-1]])
    infos = {"dense_reward": np.zeros(len(actions))} if name == "SparsePointRobot" else {}  # the reward ignores it
    batch = dist.reward(task, observations, actions, np.array(next_positions), infos)
    np.testing.assert_allclose(batch, rewards, atol=1e-12)


@pytest.mark.parametrize("name", POINT_FAMILIES)
def test_start_states(name):
    dist = make_distribution(name, n_train=1, n_test=0, seed=0)
    env = dist.make_env(dist.train_tasks[0])
    starts = np.array([env.reset(seed=seed)[0] for seed in range(20)])
    if name == "PointRobot":  # PEARL's dense point robot starts anywhere in the unit square
        assert np.abs(starts).max() <= 1 and starts.std(axis=0).min() > 0.2
        np.testing.assert_array_equal(env.reset(seed=3)[0], starts[3])
    else:
        np.testing.assert_array_equal(starts, 0.0)


def test_sparse_reward_is_one_minus_distance_only_near_the_goal():
    dist = make_distribution("SparsePointRobot", n_train=1, n_test=0, seed=0)
    still = np.zeros(2, dtype=np.float32)
    near, far = dist.make_env([0.15, 0.0]), dist.make_env([1.0, 0.0])
    near.reset(seed=0)
    far.reset(seed=0)
    assert near.step(still)[1] == pytest.approx(0.85)
    assert far.step(still)[1] == 0.0


@pytest.mark.parametrize("name", ["PointRobot", "PointGoalArc", "SparsePointRobot"])
def test_goals_change_rewards_not_observations(name):
    dist = make_distribution(name, n_train=2, n_test=0, seed=0)
    goal = dist.train_tasks[0]
    toward_first_goal = (goal / np.linalg.norm(goal)).astype(np.float32)
    runs = []
    for task in dist.train_tasks:
        env = dist.make_env(task)
        first, _ = env.reset(seed=1)
        steps = [env.step(toward_first_goal)[:2] for _ in range(15)]
        runs.append(([first, *(obs for obs, _ in steps)], [reward for _, reward in steps]))
    np.testing.assert_array_equal(np.array(runs[0][0]), np.array(runs[1][0]))
    assert np.abs(np.array(runs[0][1]) - np.array(runs[1][1])).max() > 1e-3


def test_winds_change_next_states_not_rewards_of_a_state():
    dist = make_distribution("PointRobotWind", n_train=2, n_test=0, seed=0)
    action = np.array([0.05, -0.02], dtype=np.float32)
    envs = [dist.make_env(task) for task in dist.train_tasks]
    starts = [env.reset(seed=0)[0] for env in envs]
    np.testing.assert_array_equal(*starts)
    next_states = [env.step(action)[0] for env in envs]
    np.testing.assert_allclose(next_states[0] - next_states[1], dist.train_tasks[0] - dist.train_tasks[1])
    same_transition = (np.zeros((1, 2)), action[None], next_states[0][None], {})
    assert dist.reward(dist.train_tasks[0], *same_transition) == dist.reward(
        dist.train_tasks[1], *same_transition
    )

"""The online SAC loop's warm-up: random actions (collect, SAC baselines) or the agent's own (sac-init)."""

from types import SimpleNamespace

import numpy as np
import pytest
import tqdm

from mtrl.data import TransitionBuffer
from mtrl.envs import make_distribution
from mtrl.rl.online import Schedule, train_online


class RecordingAgent:
    """Acts with a constant, counts exploring actions and the number of transitions before each update."""

    cfg = SimpleNamespace(batch_size=4, utd=1)
    max_action, act_dim, batches_per_update = 1.0, 2, 1

    def __init__(self, buffer):
        self.buffer, self.exploring_acts, self.updates_at = buffer, 0, []

    def act(self, obs, deterministic=False):
        self.exploring_acts += not deterministic
        return np.full(2, 0.5, np.float32)

    def update(self, batch):
        self.updates_at.append(self.buffer.size)


def run(schedule):
    dist = make_distribution("PointGoalArc", n_train=1, n_test=0)
    ctx = SimpleNamespace(seed=0, device="cpu", log=SimpleNamespace(info=print),
                          checkpointer=SimpleNamespace(load=lambda: None, save=lambda state: None),
                          progress=lambda total, **kw: tqdm.tqdm(total=total, disable=True),
                          stage=SimpleNamespace(name="test"), unit=SimpleNamespace(key="unit"))
    buffer = TransitionBuffer(schedule.steps, 2, 2)
    agent = RecordingAgent(buffer)
    env = dist.make_env(dist.train_tasks[0])
    train_online(ctx, agent, env, dist.make_env(dist.train_tasks[0]), buffer, schedule)
    return agent, buffer


@pytest.mark.parametrize("random_warmup", [True, False])
def test_no_update_before_the_warm_up_ends_and_who_acts_in_it(random_warmup):
    agent, buffer = run(Schedule(60, 20, eval_every=1000, eval_episodes=1, checkpoint_every=1000,
                                 random_warmup=random_warmup))
    assert agent.updates_at[0] == 20 and len(agent.updates_at) == 41  # one update per step from step 20 on
    actions = buffer.arrays()["actions"]
    if random_warmup:  # uniform in [-1, 1] for 20 steps, then the policy
        assert agent.exploring_acts == 40 and not np.allclose(actions[:20], 0.5)
    else:  # sac-init (reference): the initialised policy fills the emptied buffer before the first update
        assert agent.exploring_acts == 60
    np.testing.assert_array_equal(actions[20:], 0.5)

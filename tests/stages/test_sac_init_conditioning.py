"""What sac-init conditions SAC on (Alg. 8-9): z is the posterior *mean* over exactly the first `rollout_steps`
rows the multi-task policy collected in the task (prior belief in its first episode, then the posterior), the
critics start from that policy's Q_D, and the imitated actor is fitted to the actions it took."""

from contextlib import nullcontext
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from mtrl.algos.sac import SACConfig
from mtrl.nn import mlp
from mtrl.stages import sac_init
from mtrl.stages.sac_init import SacInit

OBS, ACT, Z = 2, 1, 3


class StepEnv(gym.Env):
    """Episodes of 4 steps; reward = 10·(reset seed) + step, so every collected row says where it came from."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS,))
    action_space = gym.spaces.Box(-1, 1, (ACT,))

    def reset(self, *, seed=None, options=None):
        self.seed_, self.t = seed, 0
        return np.zeros(OBS, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(OBS, self.t, np.float32), 10.0 * self.seed_ + self.t, False, self.t == 4, {}


class FakeAlgo:
    """Posterior mean and variance that encode the context they were given, and a real Q_D."""

    def __init__(self):
        self.q_d = mlp(OBS + ACT + Z, (4,), 1)
        self.contexts = []

    def posterior(self, context):
        self.contexts.append(context)
        rewards = context[:, -1]
        return np.array([len(context), rewards.sum(), rewards[-1]]), np.full(Z, -7.0)


class FakePolicy:
    def __init__(self):
        self.algo, self.beliefs = FakeAlgo(), []

    def infer(self, context, explore=False):
        return np.array([0.0 if context is None else len(context)])

    def act(self, obs, beliefs):
        self.beliefs.append(float(beliefs[0, 0]))
        return np.full((len(obs), ACT), 0.5)


def test_initialisation_conditions_on_the_posterior_mean_of_the_first_rollout_steps(monkeypatch):
    policy = FakePolicy()
    monkeypatch.setattr(sac_init, "load_multitask_policy", lambda art, device, seed: policy)
    cfg = SimpleNamespace(rollout_steps=10, imitation_steps=3, imitation_batch=4)
    ctx = SimpleNamespace(config=SimpleNamespace(sac_init=cfg), seed=5, device=torch.device("cpu"),
                          read=lambda name: nullcontext())
    dist = SimpleNamespace(spec=SimpleNamespace(obs_dim=OBS, act_dim=ACT, max_action=1.0),
                           make_env=lambda task: StepEnv())
    init, networks = SacInit()._initialise(ctx, dist, task=None, sac_cfg=SACConfig(actor_hidden=(8,)))

    # three 4-step episodes (seeds 5, 6, 7) collect 12 rows; the first 10 condition z
    assert init["rollout_returns"].tolist() == [50 * 4 + 10, 60 * 4 + 10, 70 * 4 + 10]
    (context,) = policy.algo.contexts
    assert len(context) == 10
    expected_rewards = [51, 52, 53, 54, 61, 62, 63, 64, 71, 72]
    np.testing.assert_array_equal(context[:, -1], expected_rewards)
    np.testing.assert_array_equal(init["z"], [10, sum(expected_rewards), 72])  # the mean, not the variance
    assert policy.beliefs[:4] == [0.0] * 4 and policy.beliefs[4:8] == [4.0] * 4  # prior, then the posterior
    assert networks["q_d"].keys() == policy.algo.q_d.state_dict().keys()
    for key, value in policy.algo.q_d.state_dict().items():
        assert torch.equal(networks["q_d"][key], value)
    assert len(init["imitation_losses"]) == 3


class ObsActingPolicy(FakePolicy):
    """Acts 0.1·(first observation coordinate), so every collected action says which observation it answered."""

    def __init__(self):
        super().__init__()
        self.contexts = []

    def infer(self, context, explore=False):
        self.contexts.append(context)
        return super().infer(context)

    def act(self, obs, beliefs):
        super().act(obs, beliefs)
        return 0.1 * obs[:, :ACT]


def _initialise(monkeypatch, policy, seed=5, rollout_steps=10, imitation_steps=3):
    loaded = []
    monkeypatch.setattr(sac_init, "load_multitask_policy",
                        lambda art, device, seed: loaded.append((art, device, seed)) or policy)
    cfg = SimpleNamespace(rollout_steps=rollout_steps, imitation_steps=imitation_steps, imitation_batch=4)
    reads = []
    ctx = SimpleNamespace(config=SimpleNamespace(sac_init=cfg), seed=seed, device=torch.device("cpu"),
                          read=lambda name: reads.append(name) or nullcontext("the policy artifact"))
    dist = SimpleNamespace(spec=SimpleNamespace(obs_dim=OBS, act_dim=ACT, max_action=2.0),
                           make_env=lambda task: StepEnv() if task == "test task" else None)  # the rollout's task
    sac_cfg = SACConfig(actor_hidden=(8, 6), actor_lr=0.25)
    init, networks = SacInit()._initialise(ctx, dist, task="test task", sac_cfg=sac_cfg)
    assert reads == ["policy"] and loaded == [("the policy artifact", torch.device("cpu"), seed)]
    return init, networks


def test_the_fresh_actor_imitates_the_rollouts_observations_and_actions(monkeypatch):
    """Alg. 8: the actor (sac.actor_hidden, the family's action bound) is fitted by `imitate` to exactly the
    (observation, action) columns of the first rollout_steps rows, for sac_init.imitation_steps steps of
    imitation_batch rows at sac.actor_lr, on a generator of its own (derived from the unit's seed)."""
    from mtrl.algos import sac
    from mtrl.seeding import derive_seed

    calls = []

    def imitate(actor, observations, actions, steps, batch, lr, generator):
        calls.append((actor, observations, actions, steps, batch, lr, generator.initial_seed()))
        return [3.0, 2.0]

    monkeypatch.setattr(sac, "imitate", imitate)
    init, networks = _initialise(monkeypatch, ObsActingPolicy())
    ((actor, observations, actions, steps, batch, lr, seed),) = calls
    states = [0, 1, 2, 3] * 3  # three 4-step episodes from the zero state
    np.testing.assert_array_equal(observations.numpy(), np.repeat(np.array(states[:10], np.float32)[:, None], OBS, 1))
    np.testing.assert_allclose(actions.numpy(), 0.1 * np.array(states[:10])[:, None])
    assert (steps, batch, lr, seed) == (3, 4, 0.25, derive_seed(5, "imitation"))
    widths = [p.shape for name, p in actor.net.named_parameters() if name.endswith("weight")]
    assert widths == [(8, OBS), (6, 8), (2 * ACT, 6)] and actor.max_action == 2.0
    np.testing.assert_array_equal(init["imitation_losses"], [3.0, 2.0])
    assert networks["actor"].keys() == actor.state_dict().keys()
    for key, value in actor.state_dict().items():
        assert torch.equal(networks["actor"][key], value)


def test_the_initialisation_is_the_units_own_whatever_the_global_generators_held(monkeypatch):
    """The imitated actor starts from the unit's seed (the global generators are reseeded first), so a task's
    initialisation does not depend on what ran before it in its group; another seed gives another actor."""
    torch.manual_seed(1)
    _, first = _initialise(monkeypatch, FakePolicy())
    torch.manual_seed(2)
    _, again = _initialise(monkeypatch, FakePolicy())
    _, other = _initialise(monkeypatch, FakePolicy(), seed=6)
    for key, value in first["actor"].items():
        assert torch.equal(again["actor"][key], value), key
    assert not all(torch.equal(other["actor"][key], value) for key, value in first["actor"].items())


@pytest.mark.parametrize(("rollout_steps", "episodes"), [(8, 2), (9, 3), (1, 1)])
def test_the_rollout_runs_whole_episodes_until_rollout_steps_rows_are_collected(monkeypatch, rollout_steps,
                                                                                 episodes):
    """The first episode acts on the prior (no context), each later one on all rows so far; z sees exactly the
    first rollout_steps rows."""
    policy = ObsActingPolicy()
    init, _ = _initialise(monkeypatch, policy, rollout_steps=rollout_steps)
    assert len(init["rollout_returns"]) == episodes
    assert policy.contexts[0] is None and [len(c) for c in policy.contexts[1:]] == [4 * e for e in range(1, episodes)]
    (context,) = policy.algo.contexts
    assert len(context) == rollout_steps

"""Batch PEARL (Alg. 6): acting, gradient routing (critic + KL into q_φ), learning from fixed data, resume."""

import dataclasses

import numpy as np
import torch

from mtrl.algos.batch_pearl import BatchPEARL, BatchPEARLConfig
from mtrl.algos.context import context_rows
from mtrl.nn import to_numpy_tree, to_torch_tree

K, OBS, ACT, MAX_ACTION = 2, 3, 2, 2.0
TINY = BatchPEARLConfig(z_dim=3, encoder_hidden=(16, 16), hidden=(32, 32), context_size=8, batch_size=32, lr=1e-3)


def make_algo(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return BatchPEARL(cfg, OBS, ACT, MAX_ACTION, "cpu")


def make_data(n=256, seed=0):
    """K tasks with the same transitions that differ only in their reward: +1 in task 0, −1 in task 1."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS, generator=g)
    actions = MAX_ACTION * (2 * torch.rand(n, ACT, generator=g) - 1)
    next_obs = obs + 0.1 * torch.randn(n, OBS, generator=g)
    signs = torch.tensor([1.0, -1.0])[:, None].expand(K, n)
    return {"observations": obs.expand(K, n, OBS), "actions": actions.expand(K, n, ACT), "rewards": signs,
            "next_observations": next_obs.expand(K, n, OBS), "terminals": torch.zeros(K, n)}


def sample(data, cfg, g):
    """One batch as the train-baseline stage draws it: per task, an RL batch and a context set of its own rows."""
    n = data["rewards"].shape[1]
    tasks = torch.arange(K)[:, None]
    batch = {key: value[tasks, torch.randint(n, (K, cfg.batch_size), generator=g)] for key, value in data.items()}
    c = torch.randint(n, (K, cfg.context_size), generator=g)
    batch["context"] = context_rows(*(data[key][tasks, c] for key in
                                      ("observations", "actions", "next_observations", "rewards")))
    return batch


def train(algo, data, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [algo.update(sample(data, algo.cfg, g)) for _ in range(steps)]


def test_defaults_are_pearls():
    cfg = BatchPEARLConfig()
    assert (cfg.hidden, cfg.encoder_hidden, cfg.z_dim) == ((300, 300, 300), (200, 200, 200), 5)
    assert (cfg.lr, cfg.kl_beta, cfg.reward_scale, cfg.batch_size, cfg.context_size) == (3e-4, 0.1, 5.0, 256, 100)
    assert (cfg.gamma, cfg.tau, cfg.policy_reg, cfg.deterministic_acting) == (0.99, 0.005, 1e-3, True)
    assert all(f.metadata.get("help") for f in dataclasses.fields(BatchPEARLConfig))


def test_act_is_the_policy_mean_given_z_per_row():
    algo = make_algo()
    train(algo, make_data(), 10)
    obs = 3 * np.random.default_rng(0).normal(size=(5, OBS)).astype(np.float32)
    zs = np.stack([algo.sample_z() for _ in range(5)])
    actions = algo.act(obs, zs)
    assert actions.shape == (5, ACT) and np.all(np.abs(actions) <= MAX_ACTION)
    for b in range(5):  # row b acts with z_b, deterministically
        np.testing.assert_allclose(algo.act(obs[b], zs[b]), actions[b], rtol=0, atol=1e-6)
    with torch.no_grad():
        mean, _ = algo.actor.distribution(torch.cat([torch.as_tensor(obs), torch.as_tensor(zs)], -1))
    np.testing.assert_allclose(actions, MAX_ACTION * torch.tanh(mean).numpy(), rtol=0, atol=1e-6)
    assert algo.act(obs, zs[0]).shape == (5, ACT)

    sampling = make_algo(dataclasses.replace(TINY, deterministic_acting=False))
    draws = [sampling.act(obs, zs, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.allclose(draws[0], draws[2]) and np.all(np.abs(draws[2]) <= MAX_ACTION)


def test_sample_z_and_posterior_are_the_prior_without_context():
    algo = make_algo()
    g = torch.Generator().manual_seed(0)
    prior = np.stack([algo.sample_z(None, generator=g) for _ in range(2000)])
    np.testing.assert_allclose(prior.mean(0), 0.0, atol=0.1)
    np.testing.assert_allclose(prior.std(0), 1.0, atol=0.1)
    rows = sample(make_data(), TINY, g)["context"][0].numpy()
    assert algo.sample_z(rows).shape == (TINY.z_dim,)
    mean, var = algo.posterior(rows)
    assert mean.shape == var.shape == (TINY.z_dim,) and (var < 1).all()  # eight rows narrow the prior


def test_encoder_learns_from_critic_and_kl_not_from_value_or_actor(gradient_passes):
    algo = make_algo()
    batch = sample(make_data(), TINY, torch.Generator().manual_seed(0))
    # critic + β·KL (reaches q_φ), then V, then the policy (Alg. 6 lines 11-13 and PEARL's V step).
    assert gradient_passes(algo, batch) == [{"critic", "encoder"}, {"value"}, {"actor"}]

    # The KL term moves q_φ and nothing else: with β = 0 the same step leaves the critics exactly as with β > 0.
    with_kl, without_kl = make_algo(seed=1), make_algo(dataclasses.replace(TINY, kl_beta=0.0), seed=1)
    for algo in (with_kl, without_kl):
        algo.update(batch)
    for a, b in zip(with_kl.critic.parameters(), without_kl.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(with_kl.encoder.parameters(), without_kl.encoder.parameters(),
                                                     strict=True))


def test_critic_loss_falls_and_infers_tasks_that_differ_only_in_reward():
    """γ = 0 and scale 1 make the critic a regression onto ±1: blind to the task it cannot get below 2 (1 per
    critic); well under it, z inferred from the context (critic loss + KL) identifies the task."""
    algo = make_algo(dataclasses.replace(TINY, gamma=0.0, reward_scale=1.0))
    metrics = train(algo, make_data(), 200)
    last = metrics[-20:]
    assert np.mean([m["critic_loss"] for m in last]) < 0.4, [m["critic_loss"] for m in last]
    assert np.mean([m["value_loss"] for m in last]) < np.mean([m["value_loss"] for m in metrics[:20]])
    assert all(np.isfinite(v) for m in metrics for v in m.values())


def test_state_dict_round_trip_resumes_bit_identically(same_state):
    data = make_data()
    algo = make_algo(seed=0)
    train(algo, data, 5)
    stored = to_numpy_tree(algo.state_dict())  # as an artifact keeps it: arrays and plain values
    batch = sample(data, TINY, torch.Generator().manual_seed(7))
    expected = algo.update(batch)
    assert expected != algo.update(batch)  # training moves on; `stored` must not have moved with it

    resumed = make_algo(seed=123)  # other initial weights and generator
    resumed.load_state_dict(to_torch_tree(stored))
    assert resumed.update(batch) == expected
    algo.load_state_dict(to_torch_tree(stored))
    algo.update(batch)
    assert same_state(algo, resumed)  # networks, targets, optimisers and generator


def test_policy_state_acts_identically():
    algo = make_algo(dataclasses.replace(TINY, deterministic_acting=False))
    train(algo, make_data(), 5)
    state = to_torch_tree(to_numpy_tree(algo.policy_state_dict()))
    policy = BatchPEARL.from_policy_state(algo.cfg, state, "cpu")
    obs, z = np.random.default_rng(0).normal(size=(4, OBS)), algo.sample_z()
    actions = [agent.act(obs, z, generator=torch.Generator().manual_seed(7)) for agent in (algo, policy)]
    np.testing.assert_array_equal(*actions)

"""Contextual BCQ (Alg. 7): acting with z, gradient routing, learning task identity from the value loss, resume."""

import dataclasses

import numpy as np
import torch

from mtrl.algos.context import context_rows
from mtrl.algos.contextual_bcq import ContextualBCQ, ContextualBCQConfig
from mtrl.nn import to_numpy_tree, to_torch_tree

K, OBS, ACT, MAX_ACTION = 2, 3, 2, 2.0
TINY = ContextualBCQConfig(z_dim=3, encoder_hidden=(16, 16), critic_hidden=(32, 32), vae_hidden=(32, 32),
                           actor_hidden=(32, 32), context_size=8, batch_size=32, lr=1e-3)


def make_algo(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return ContextualBCQ(cfg, OBS, ACT, MAX_ACTION, "cpu")


def make_data(n=256, seed=0):
    """K tasks with the same states and behaviour (actions a smooth function of s) that differ only in their
    reward: +1 in task 0, −1 in task 1. Only the rewards in the context tell them apart."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS, generator=g)
    actions = MAX_ACTION * 0.8 * torch.tanh(obs[:, :ACT] - obs[:, ACT:].sum(-1, keepdim=True))
    next_obs = obs + 0.1 * torch.randn(n, OBS, generator=g)
    signs = torch.tensor([1.0, -1.0])[:, None].expand(K, n)
    return {"observations": obs.expand(K, n, OBS), "actions": actions.expand(K, n, ACT), "rewards": signs,
            "next_observations": next_obs.expand(K, n, OBS), "terminals": torch.zeros(K, n)}


def sample(data, cfg, g):
    """One batch as the train-baseline stage draws it: per task, a mini-batch and a context set of its own rows."""
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


def test_defaults_are_the_papers():
    cfg = ContextualBCQConfig()
    assert (cfg.critic_hidden, cfg.vae_hidden, cfg.actor_hidden) == ((1024,) * 9, (1024,) * 7, (1024,) * 8)
    assert (cfg.encoder_hidden, cfg.z_dim, cfg.context_size) == ((200, 200, 200), 20, 128)
    assert (cfg.lmbda, cfg.phi, cfg.num_candidates, cfg.batch_size, cfg.lr) == (0.75, 0.05, 10, 100, 3e-4)
    assert all(f.metadata.get("help") for f in dataclasses.fields(ContextualBCQConfig))
    algo = make_algo()
    assert algo.vae.latent_dim == 2 * ACT
    assert algo.critic.q1_net.layers[0].in_dim == OBS + TINY.z_dim + ACT  # every network sees z


def test_act_is_eq1_given_z_within_bounds():
    cfg = dataclasses.replace(TINY, phi=0.3)  # a large Φ, so that the bound on the correction is tested
    algo = make_algo(cfg)
    train(algo, make_data(), 30)
    obs = 3 * np.random.default_rng(0).normal(size=(5, OBS)).astype(np.float32)
    z = algo.sample_z(None)
    action = algo.act(obs, z, generator=torch.Generator().manual_seed(7))
    assert action.shape == (5, ACT) and np.all(np.abs(action) <= MAX_ACTION)
    assert algo.act(obs[0], z).shape == (ACT,)
    assert algo.act(obs, np.stack([z] * 5)).shape == (5, ACT)

    # Replay the same draws: n decoded candidates per [s, z], each perturbed; the chosen one has the top Q1.
    with torch.no_grad():
        state = torch.cat([torch.as_tensor(obs), torch.as_tensor(z).expand(5, -1)], -1)
        state = state[None, :, None].expand(1, -1, cfg.num_candidates, -1)  # on BCQ's task axis of 1
        latent = algo.vae.sample_latent(state.shape[:-1], algo.device, [torch.Generator().manual_seed(7)])
        candidates = algo.vae.decode(state, latent)
        perturbed = algo.actor(state, candidates)
        chosen = perturbed[0, torch.arange(5), algo.critic.q1(state, perturbed)[0].argmax(-1)]
    assert torch.all((perturbed - candidates).abs() <= cfg.phi * MAX_ACTION + 1e-6)
    np.testing.assert_allclose(action, chosen.numpy(), rtol=0, atol=1e-6)
    other = algo.act(obs, z + 3.0, generator=torch.Generator().manual_seed(7))
    assert not np.allclose(other, action)  # the networks do read z


def test_sample_z_is_the_prior_without_context_and_the_posterior_with_it():
    algo = make_algo()
    g = torch.Generator().manual_seed(0)
    prior = np.stack([algo.sample_z(None, generator=g) for _ in range(2000)])
    assert prior.shape == (2000, TINY.z_dim)
    np.testing.assert_allclose(prior.mean(0), 0.0, atol=0.1)
    np.testing.assert_allclose(prior.std(0), 1.0, atol=0.1)
    empty = np.zeros((0, algo.context_dim), np.float32)
    np.testing.assert_array_equal(algo.sample_z(empty, generator=torch.Generator().manual_seed(3)),
                                  algo.sample_z(None, generator=torch.Generator().manual_seed(3)))
    mean, var = algo.posterior(None)
    assert mean.tolist() == [0.0] * TINY.z_dim and var.tolist() == [1.0] * TINY.z_dim
    rows = sample(make_data(), TINY, g)["context"][0]
    mean, var = algo.posterior(rows.numpy())
    with torch.no_grad():
        np.testing.assert_array_equal(var, algo.encoder(rows)[1].numpy())
    expected = mean + np.sqrt(var) * torch.randn(mean.shape, generator=torch.Generator().manual_seed(5)).numpy()
    np.testing.assert_allclose(algo.sample_z(rows.numpy(), generator=torch.Generator().manual_seed(5)), expected,
                               rtol=1e-5)


def test_encoder_learns_from_the_value_loss_only(gradient_passes):
    algo = make_algo()
    batch = sample(make_data(), TINY, torch.Generator().manual_seed(0))
    # Per task (Alg. 7's loop): the VAE step (Eq. 19), the critic step (Eq. 20, which alone reaches q_ψ), the ξ
    # step (Eq. 21).
    assert gradient_passes(algo, batch) == [{"vae"}, {"critic", "encoder"}, {"actor"}] * K


def test_one_update_is_algorithm_7s_loop_of_one_update_per_task(same_state):
    """One call makes K sequential updates, task by task (Alg. 7 lines 4-17), not one update averaged over the K
    tasks: its result is bit-identical to K single-task calls in task order, from the same state."""
    data = make_data()
    algo = make_algo(seed=0)
    train(algo, data, 3)
    start = to_numpy_tree(algo.state_dict())
    batch = sample(data, TINY, torch.Generator().manual_seed(7))
    metrics = algo.update(batch)
    for name in ("vae_opt", "critic_opt", "actor_opt"):  # K optimiser steps of every network per call
        assert all(int(s["step"]) == 4 * K for s in getattr(algo, name).state_dict()["state"].values()), name

    single = make_algo(seed=1)
    single.load_state_dict(to_torch_tree(start))
    per_task = [single.update({key: value[m:m + 1] for key, value in batch.items()}) for m in range(K)]
    assert same_state(algo, single)  # networks, targets, optimisers and generator
    assert metrics.keys() == per_task[0].keys()
    for key in metrics:  # the metrics are the means over the tasks
        assert np.isclose(metrics[key], np.mean([m[key] for m in per_task]), rtol=1e-6, atol=1e-9), key


def test_joint_update_of_the_official_code_is_one_step_per_call():
    algo = make_algo(dataclasses.replace(TINY, per_task_updates=False))
    train(algo, make_data(), 3)
    for name in ("vae_opt", "critic_opt", "actor_opt"):
        assert all(int(s["step"]) == 3 for s in getattr(algo, name).state_dict()["state"].values()), name


def test_value_loss_trains_task_inference_on_tasks_that_differ_only_in_reward():
    """γ = 0 makes Eq. 20 a regression onto ±1: a critic blind to the task cannot get below 2 (1 per critic),
    so a loss well under it means z, inferred from the context by the value loss alone, identifies the task."""
    algo = make_algo(dataclasses.replace(TINY, gamma=0.0))
    metrics = train(algo, make_data(), 200)
    first, last = metrics[:10], metrics[-20:]
    assert np.mean([m["critic_loss"] for m in last]) < 0.4, [m["critic_loss"] for m in last]
    assert np.mean([m["recon_loss"] for m in last]) < 0.5 * np.mean([m["recon_loss"] for m in first])
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
    assert same_state(algo, resumed)


def test_policy_state_acts_identically():
    algo = make_algo()
    train(algo, make_data(), 5)
    state = to_torch_tree(to_numpy_tree(algo.policy_state_dict()))
    policy = ContextualBCQ.from_policy_state(TINY, state, "cpu")
    obs, z = np.random.default_rng(0).normal(size=(4, OBS)), algo.sample_z()
    actions = [agent.act(obs, z, generator=torch.Generator().manual_seed(7)) for agent in (algo, policy)]
    np.testing.assert_array_equal(*actions)

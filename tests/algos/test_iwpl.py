"""IWPL / IWPA (seed 003): the importance-weighted sampler against its target q ∝ π₀·exp(Q/α), the temperature
dual against its constraint, what each IWPA variant learns and leaves frozen, the prior's maximum likelihood, and
the coupled checkpoint."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mtrl.algos.iwpl import IWPL, IWPLConfig, backup_value, temperature_dual

CFG = IWPLConfig(prior_hidden=(16,), critic_hidden=(16,), feature_dim=4, num_actions=8, batch_size=16)


def _batch(tasks: int, rows: int = 16, obs_dim: int = 2, act_dim: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"observations": torch.randn(tasks, rows, obs_dim, generator=g),
            "actions": torch.rand(tasks, rows, act_dim, generator=g) * 2 - 1,
            "rewards": torch.randn(tasks, rows, generator=g),
            "next_observations": torch.randn(tasks, rows, obs_dim, generator=g),
            "terminals": torch.zeros(tasks, rows)}


def _target_cdf(agent: IWPL, obs: np.ndarray, q, alpha: float, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CDFs of π₀(a|s) and of q(a|s) ∝ π₀(a|s)·exp(Q(a)/α) on `grid` ⊂ (−1, 1), by numerical integration of
    the prior's tanh-Gaussian density."""
    with torch.no_grad():  # one task, one action dimension
        mean, std = (float(v) for v in agent.prior.distribution(torch.as_tensor(obs, dtype=torch.float32)[None]))
    u = np.arctanh(grid)
    prior = np.exp(-0.5 * ((u - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) / (1 - grid**2)
    tilted = prior * np.exp(q(grid) / alpha)
    return np.cumsum(prior) / prior.sum(), np.cumsum(tilted) / tilted.sum()


def test_importance_weighted_sampler_draws_from_the_tilted_prior():
    """Eq. 5-6 with K = 2000 actions from π₀ and a known Q: the resampled actions follow q ∝ π₀·exp(Q/α)
    (Kolmogorov-Smirnov distance within sampling noise) and not π₀ itself."""
    alpha = 0.25
    agent = IWPL(IWPLConfig(prior_hidden=(8,), num_actions=2000, init_alpha=alpha), obs_dim=2, act_dim=1,
                 max_action=1.0, device="cpu", tasks=1, seeds=[3])
    agent.updates += 1  # acting by q̂, not by the prior's warm-up

    def q(a):
        return 1.5 * a - a**2

    agent.q_values = lambda states, actions, target=False: q(actions[..., 0])
    obs = np.array([[0.3, -0.2]], np.float32)
    draws = np.array([agent.act(obs)[0, 0] for _ in range(3000)])
    grid = np.linspace(-0.9999, 0.9999, 20001)
    prior_cdf, target_cdf = _target_cdf(agent, obs[0], q, alpha, grid)
    empirical = np.searchsorted(np.sort(draws), grid, side="right") / len(draws)
    assert np.abs(empirical - target_cdf).max() < 0.035  # KS critical value at n = 3000, level 0.01: 0.030
    assert np.abs(empirical - prior_cdf).max() > 0.2  # the tilt is visible: not merely the prior


def test_temperature_dual_meets_the_kl_bound():
    """Minimising the dual over log α drives KL(q̂‖π₀) = Σ_k q̂_k log(K q̂_k) to ε, from above and below."""
    g = torch.Generator().manual_seed(0)
    q_k = 3 * torch.randn(1, 256, 32, generator=g)
    epsilon = 0.5

    def kl(log_alpha):
        log_w = torch.log_softmax(q_k / log_alpha.exp(), -1)
        return float((log_w.exp() * (log_w + math.log(32))).sum(-1).mean())

    for start in (math.log(100.0), math.log(0.01)):
        log_alpha = torch.tensor([start], requires_grad=True)
        before = kl(log_alpha.detach())
        optimiser = torch.optim.Adam([log_alpha], lr=0.05)
        for _ in range(600):
            optimiser.zero_grad()
            temperature_dual(log_alpha, q_k, epsilon).backward()
            optimiser.step()
        assert abs(before - epsilon) > 0.4  # it started far from the bound
        assert kl(log_alpha.detach()) == pytest.approx(epsilon, abs=0.02)


def test_backup_is_the_mean_q_when_the_weights_are_uniform_and_pays_for_their_kl_otherwise():
    q_k = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    uniform = torch.full((1, 4), -math.log(4))
    assert float(backup_value(q_k, uniform, torch.tensor([[0.5]]))) == pytest.approx(3.0)
    alpha = torch.tensor([[2.0]])
    log_w = torch.log_softmax(q_k / 2.0, -1)
    w = log_w.exp()
    expected = float((w * q_k).sum() - 2.0 * (w * (log_w + math.log(4))).sum())
    assert float(backup_value(q_k, log_w, alpha)) == pytest.approx(expected)
    assert expected < float((w * q_k).sum())  # the KL term is a cost


def test_value_transfer_learns_w_with_psi_and_the_prior_frozen():
    """IWPA "both": ψ and π₀ loaded and untouched by updates; with γ = 0 the TD(0) target is the reward, so
    learning w alone is least squares on the frozen features: the loss falls to the least-squares residual."""
    source = IWPL(CFG, 2, 1, 1.0, "cpu", tasks=3, seeds=[0, 1, 2], coupled=True)
    pretrained = source.policy_state_dict()
    cfg = dataclasses.replace(CFG, gamma=0.0, lr=0.05)
    agent = IWPL(cfg, 2, 1, 1.0, "cpu", tasks=2, seeds=[5, 6], learn_prior=False, learn_features=False)
    agent.load_pretrained(pretrained["prior"], pretrained["features"])
    for t in range(2):
        assert torch.equal(agent.features.layers[0].weight[t], source.features.layers[0].weight[0])
    psi = [p.detach().clone() for p in agent.features.parameters()]
    prior = [p.detach().clone() for p in agent.prior.parameters()]
    w = agent.critic.weight.detach().clone()
    batch = _batch(2, rows=64)
    with torch.no_grad():  # rewards the frozen features can explain, up to noise
        features = agent.features(torch.cat([batch["observations"], batch["actions"]], -1))  # [2, 64, d]
    g = torch.Generator().manual_seed(1)
    batch["rewards"] = (features * 3 * torch.randn(2, 1, 4, generator=g)).sum(-1) + 0.1 * batch["rewards"]
    losses = [agent.update(batch)["q_loss"] for _ in range(400)]
    assert all(torch.equal(a, b) for a, b in zip(psi, agent.features.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(prior, agent.prior.parameters(), strict=True))
    assert (agent.critic.weight - w).abs().min() > 1e-3
    for t in range(2):
        solution = torch.linalg.lstsq(features[t], batch["rewards"][t, :, None]).solution
        optimum = 0.5 * float((features[t] @ solution - batch["rewards"][t, :, None]).pow(2).mean())
        assert float(losses[0][t]) > 10 * optimum + 0.05
        assert float(losses[-1][t]) == pytest.approx(optimum, rel=0.05, abs=1e-3)


def test_finetune_moves_each_tasks_own_features_and_behaviour_transfer_learns_a_new_q():
    agent = IWPL(CFG, 2, 1, 1.0, "cpu", tasks=2, seeds=[5, 6], learn_prior=False, learn_features=True)
    psi = agent.features.layers[0].weight.detach().clone()
    agent.update(_batch(2))
    assert (agent.features.layers[0].weight - psi).abs().amax((1, 2)).min() > 0  # both tasks' copies moved
    behaviour = IWPL(dataclasses.replace(CFG, shared_features=False), 2, 1, 1.0, "cpu", tasks=2,
                     seeds=[5, 6], learn_prior=False)
    assert behaviour.features is None and behaviour.prior_opt is None
    with pytest.raises(ValueError, match="no shared features"):
        behaviour.load_pretrained(None, {"layers.0.weight": torch.zeros(1, 3, 16)})


def test_prior_likelihood_of_the_weighted_samples_rises():
    """Eq. 11: with the targets (and so the weighted sample distribution) fixed, the online prior's weighted
    log-likelihood of fresh weighted samples from that distribution rises. A low fixed α makes the weights
    peaked, so the weighted samples are not simply the prior's own."""
    cfg = dataclasses.replace(CFG, target_period=10_000, num_actions=16, init_alpha=0.02, alpha_lr=0.0)
    agent = IWPL(cfg, 2, 1, 1.0, "cpu", tasks=2, seeds=[1, 2], coupled=True)
    batch = _batch(2, rows=64)

    def weighted_log_likelihood():
        with torch.no_grad():
            states = batch["observations"]
            _, pre_tanh = agent.sample_prior(states, 256, target=True)
            sampled = torch.tanh(pre_tanh)
            w = torch.softmax(agent.q_values(states, sampled, target=True) / agent.alpha().unsqueeze(-1), -1)
            return float((w * agent.prior_log_prob(states, pre_tanh)).sum(-1).mean())

    before = weighted_log_likelihood()
    for _ in range(150):
        agent.update(batch)
    assert weighted_log_likelihood() > before + 0.05


def test_coupled_checkpoint_round_trip_and_shared_parts():
    """IWPL on training tasks: one prior, one ψ and one α for all tasks; the per-task checkpoints of the online
    loop carry the shared parts and restore the agent exactly."""
    agent = IWPL(CFG, 2, 1, 1.0, "cpu", tasks=3, seeds=[0, 1, 2], coupled=True)
    assert agent.prior.net.layers[0].weight.shape[0] == 1 and agent.log_alpha.shape == (1,)
    agent.update(_batch(3))
    states = agent.task_states()
    other = IWPL(CFG, 2, 1, 1.0, "cpu", tasks=3, seeds=[7, 8, 9], coupled=True)
    other.load_task_states(states)
    obs = np.zeros((3, 2), np.float32)
    assert np.array_equal(agent.act(obs), other.act(obs))
    assert all(torch.equal(a, b) for a, b in zip(agent.features.parameters(), other.features.parameters(),
                                                 strict=True))


def test_acts_by_the_prior_before_the_first_update_and_rejects_bad_observations():
    agent = IWPL(CFG, 2, 1, 1.0, "cpu", tasks=2, seeds=[0, 1])
    agent.q_values = lambda *a, **k: pytest.fail("Q must not be used before the first update")
    assert agent.act(np.zeros((2, 2), np.float32)).shape == (2, 1)
    with pytest.raises(ValueError, match="tasks=2"):
        agent.act(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="leading task axis"):
        IWPL(CFG, 2, 1, 1.0, "cpu", tasks=2).update(_batch(3))

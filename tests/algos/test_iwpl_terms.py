"""IWPL / IWPA's mathematics pinned directly (issue 23, docs/mutation.md): one update term by term against seed
003's Eq. 5-11 and the temperature dual recomputed from the formulas with the agent's own draws replayed (the
values and the gradient each optimiser steps with), the pure functions against numbers worked out by hand,
acting replayed with fixed generators, the target period, the task axis and the coupled initialisation."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from test_iwpl import CFG, _batch
from written_out import alternating_terminals, tanh_gaussian_log_density

from mtrl.algos.iwpl import IWPL, TaskVectors, backup_value, resample, temperature_dual

OBS, ACT, MAX_ACTION, T, B = 2, 2, 2.0, 2, 16
TERMS = dataclasses.replace(CFG, gamma=0.8, epsilon=0.3, init_alpha=0.7, target_period=1000, num_actions=6)
VARIANTS = {  # IWPL on training tasks, IWPA on test tasks, and Q as one MLP per task instead of ψᵀw
    "iwpl-coupled": ({"coupled": True}, {}),
    "iwpa": ({"coupled": False}, {}),
    "per-task-q": ({"coupled": False}, {"shared_features": False}),
}


def _agent(variant: str, **cfg_overrides) -> IWPL:
    kwargs, overrides = VARIANTS[variant]
    cfg = dataclasses.replace(TERMS, **overrides, **cfg_overrides)
    return IWPL(cfg, OBS, ACT, MAX_ACTION, "cpu", tasks=T, seeds=[3, 4], **kwargs)


def _terminal_batch(seed: int = 0) -> dict:
    batch = _batch(T, rows=B, obs_dim=OBS, act_dim=ACT, seed=seed)
    batch["actions"] = batch["actions"] * MAX_ACTION
    batch["terminals"] = alternating_terminals(T, B)
    return batch


# ---------------------------------------------------------------- the networks, written out
def _prior(agent: IWPL, net, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of π₀(·|s) for states [T, N, obs]: the coupled prior is one network for every task."""
    if agent.coupled:
        mean, std = net.distribution(states[None])
        return mean[0], std[0]
    return net.distribution(states)


def _q(agent: IWPL, states: torch.Tensor, actions: torch.Tensor, target: bool) -> torch.Tensor:
    """Q_i(s, a_k) for states [T, N, obs] and actions [T, N, K, act]: ψ(s, a)ᵀ w_i (Eq. 12) or task i's MLP."""
    x = torch.cat([states[:, :, None].expand(*actions.shape[:3], OBS), actions], -1)
    critic = agent.critic_target if target else agent.critic
    if agent.features is None:
        return critic(x)[..., 0]
    features = agent.features_target if target else agent.features
    psi = features(x[None])[0] if agent.coupled else features(x)  # [T, N, K, d]
    return torch.einsum("tnkd,td->tnk", psi, critic.weight)


@torch.no_grad()
def _spread_q(agent: IWPL, factor: float) -> None:
    """Scale Q and Q' by `factor` (the task vectors w, or the last layer of the per-task MLPs): Q values that
    differ by several α, so the weights q̂ are far from uniform and the rules below matter."""
    for critic in (agent.critic, agent.critic_target):
        last = critic if agent.features is not None else critic.layers[-1]
        for p in last.parameters():
            p.mul_(factor)


def _record_gradients(agent: IWPL) -> dict[str, list[torch.Tensor]]:
    """The gradients each optimiser steps with, by optimiser name, recorded at its `step`."""
    grads: dict[str, list[torch.Tensor]] = {}
    for name in ("critic_opt", "feature_opt", "prior_opt", "alpha_opt"):
        opt = getattr(agent, name)
        if opt is None:
            continue

        def recording(*args, _step=opt.step, _opt=opt, _name=name, **kwargs):
            grads[_name] = [p.grad.clone() for group in _opt.param_groups for p in group["params"]]
            return _step(*args, **kwargs)

        opt.step = recording
    return grads


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_update_is_eq_9_to_11_and_the_dual_term_by_term(variant):
    """One update recomputed from the paper with the same draws: K actions from the *target* prior at s_t and
    s_{t+1} (Eq. 5), weights q̂_k ∝ exp(Q'(s, a_k)/α) (Eq. 6), the bootstrap Σ_k q̂_k (Q' − α log(K q̂_k)) with
    the terminal mask (Eq. 7/10), Q's squared error (Eq. 9), the weighted likelihood of the online prior (Eq. 11)
    and the dual g(α) = α·ε + α·E_s log (1/K) Σ_k exp(Q'/α); metrics and every optimiser's gradient."""
    agent = _agent(variant)
    for seed in (1, 2):  # the online networks and α move away from the targets (target_period 1000)
        agent.update(_terminal_batch(seed))
    _spread_q(agent, 8.0)
    before = copy.deepcopy(agent)
    grads = _record_gradients(agent)
    batch = _terminal_batch(3)
    metrics = agent.update(batch)

    obs, actions, rewards, terminals = (batch[k] for k in ("observations", "actions", "rewards", "terminals"))
    K, cfg = TERMS.num_actions, before.cfg
    alpha = before.log_alpha.detach().exp().expand(T)[:, None, None]  # [T, 1, 1]: shared when coupled
    with torch.no_grad():
        states = torch.cat([obs, batch["next_observations"]], 1)  # [T, 2B, obs]: s_t, then s_{t+1}
        mean, std = _prior(before, before.prior_target, states)
        noise = torch.stack([torch.randn(2 * B, K, ACT, generator=g) for g in before.generators])
        pre_tanh = mean[:, :, None] + std[:, :, None] * noise
        q_k = _q(before, states, MAX_ACTION * torch.tanh(pre_tanh), target=True)  # [T, 2B, K]
        w = torch.exp(q_k / alpha) / torch.exp(q_k / alpha).sum(-1, keepdim=True)
        soft = (w * (q_k - alpha * torch.log(K * w))).sum(-1)
        y = rewards + cfg.gamma * (1 - terminals) * soft[:, B:]
        kl = (w[:, :B] * torch.log(K * w[:, :B])).sum(-1).mean(1)
    assert (soft[:, B:] - q_k[:, B:].mean(-1)).abs().mean() > 0.05  # the weights and the KL cost matter
    assert kl.min() > 0.05 and torch.equal(y[:, 1::2], rewards[:, 1::2])  # terminal rows: r alone

    q = _q(before, obs, actions[:, :, None], target=False)[..., 0]  # online Q at the batch actions
    q_loss = 0.5 * (q - y).pow(2).mean(1)
    mean, std = _prior(before, before.prior, obs)
    log_prob = tanh_gaussian_log_density(pre_tanh[:, :B], mean[:, :, None], std[:, :, None])
    prior_loss = -(w[:, :B] * log_prob).sum(-1).mean(1)
    log_alpha = before.log_alpha.detach().clone().requires_grad_(True)
    alpha_t = log_alpha.exp().expand(T)[:, None]
    log_mean_exp = torch.log(torch.exp(q_k[:, :B] / alpha_t[..., None]).mean(-1))  # [T, B]
    dual = cfg.epsilon * log_alpha.exp().sum() + (alpha_t * log_mean_exp).mean(1).sum()

    close = dict(rtol=1e-4, atol=1e-5)
    for name, value in {"q_loss": q_loss, "prior_loss": prior_loss, "alpha": alpha[:, 0, 0], "kl": kl,
                        "q_mean": q.mean(1)}.items():
        assert metrics[name].shape == (T,), name
        torch.testing.assert_close(metrics[name], value.detach(), **close, msg=name)
    expected = {"critic_opt": torch.autograd.grad(q_loss.sum(), list(before.critic.parameters()), retain_graph=True),
                "prior_opt": torch.autograd.grad(prior_loss.sum(), list(before.prior.parameters())),
                "alpha_opt": torch.autograd.grad(dual, [log_alpha])}
    if before.features is not None:
        expected["feature_opt"] = torch.autograd.grad(q_loss.sum(), list(before.features.parameters()))
    assert grads.keys() == expected.keys()
    for name, values in expected.items():
        assert len(grads[name]) == len(values), name
        for got, want in zip(grads[name], values, strict=True):
            assert want.abs().max() > 1e-6, name  # a gradient that a wrong term would change
            torch.testing.assert_close(got, want, **close, msg=name)


def test_without_learning_the_prior_its_loss_is_zero_per_task_and_it_stays_put():
    """IWPA's frozen parts get no optimiser and no gradient (`requires_grad` off), the learned ones both."""
    agent = _agent("iwpa")
    frozen = IWPL(TERMS, OBS, ACT, MAX_ACTION, "cpu", tasks=T, seeds=[3, 4], learn_prior=False, learn_features=False)
    assert frozen.prior_opt is None and not any(p.requires_grad for p in frozen.prior.parameters())
    assert frozen.feature_opt is None and not any(p.requires_grad for p in frozen.features.parameters())
    assert all(p.requires_grad for net in (agent.prior, agent.features) for p in net.parameters())
    assert agent.prior_opt is not None and agent.feature_opt is not None
    prior = [p.clone() for p in frozen.prior.parameters()]
    metrics = frozen.update(_terminal_batch())
    assert torch.equal(metrics["prior_loss"], torch.zeros(T))
    assert all(torch.equal(a, b) for a, b in zip(prior, frozen.prior.parameters(), strict=True))


# ---------------------------------------------------------------- the pure functions, by hand
def test_backup_value_by_hand_with_one_temperature_per_task():
    """Σ_k q̂_k (Q_k − α_i log(K q̂_k)) with q̂ = (1/4, 3/4), K = 2: each task's α scales its own KL cost."""
    q_k = torch.tensor([[[1.0, 3.0]], [[1.0, 3.0]]])  # [tasks 2, N 1, K 2]
    log_w = torch.log(torch.tensor([0.25, 0.75])).expand(2, 1, 2)
    alpha = torch.tensor([[1.0], [2.0]])
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    expected = torch.tensor([[2.5 - 1.0 * kl], [2.5 - 2.0 * kl]])
    torch.testing.assert_close(backup_value(q_k, log_w, alpha), expected)
    # without the state axis: q_k [tasks, K] and α [tasks] ("α broadcasts against the result", [tasks])
    torch.testing.assert_close(backup_value(q_k[:, 0], log_w[:, 0], alpha[:, 0]), expected[:, 0])
    # one α for every task, as a 0-d tensor
    torch.testing.assert_close(backup_value(q_k, log_w, torch.tensor(2.0)), expected[1:].expand(2, 1))


def test_temperature_dual_by_hand_shared_and_per_task():
    """g = ε·Σ_j α_j + Σ_i α_i·E_s log (1/K) Σ_k exp(Q_i(s, a_k)/α_i), and dg/d log α_i = α_i(ε − KL_i) with
    KL_i = E_s[Σ_k q̂_k log(K q̂_k)]: worked out for two tasks, three states, K = 2."""
    q_k = torch.tensor([[[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]],
                        [[2.0, 2.0], [4.0, 4.0], [0.0, 0.0]]])  # task 1's Q is flat in a
    epsilon = 0.5
    lme0 = math.log((1 + math.e) / 2)  # task 0 at α = 2: log mean(exp(0), exp(1)) in every state
    log_alpha = torch.tensor([math.log(2.0)], requires_grad=True)  # one α = 2 shared by both tasks
    dual = temperature_dual(log_alpha, q_k, epsilon)
    assert dual.item() == pytest.approx(2 * epsilon + 2 * lme0 + 2 * 1.0, rel=1e-6)  # task 1: mean of 1, 2, 0
    w = torch.tensor([1.0, math.e]) / (1 + math.e)
    kl0 = float((w * torch.log(2 * w)).sum())
    (grad,) = torch.autograd.grad(dual, [log_alpha])
    assert grad.item() == pytest.approx(2 * (epsilon - kl0), rel=1e-5)  # task 1 adds α·(0 − 0): its KL is 0

    per_task = torch.tensor([math.log(2.0), 0.0], requires_grad=True)  # α = (2, 1): ε counts once per α
    dual = temperature_dual(per_task, q_k, epsilon)
    assert dual.item() == pytest.approx(3 * epsilon + 2 * lme0 + 1 * 2.0, rel=1e-6)
    (grad,) = torch.autograd.grad(dual, [per_task])
    torch.testing.assert_close(grad, torch.tensor([2 * (epsilon - kl0), epsilon]))


def test_resample_draws_each_tasks_index_from_its_own_generator():
    """Eq. 6: one index per task from Cat(q̂_i), drawn with generators[i] (replayed here), a certain weight
    always chosen."""
    log_w = torch.log_softmax(torch.tensor([[0.0, 1.0, 2.0, 0.5], [3.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]), -1)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    replay = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    for _ in range(20):
        index = resample(log_w, gens)
        expected = [int(torch.multinomial(row.exp(), 1, generator=g)) for row, g in zip(log_w, replay, strict=True)]
        assert index.shape == (3,) and index.tolist() == expected
    certain = torch.log(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert resample(certain, gens[:2]).tolist() == [2, 0]
    draws = torch.stack([resample(log_w[:1], gens[:1]) for _ in range(4000)])[:, 0]
    frequencies = torch.bincount(draws, minlength=4) / 4000.0
    torch.testing.assert_close(frequencies, log_w[0].exp(), rtol=0, atol=0.03)


# ---------------------------------------------------------------- acting (Eq. 5-6), replayed
def _trained(variant: str = "iwpa") -> IWPL:
    agent = _agent(variant, num_actions=16)
    agent.update(_terminal_batch())
    _spread_q(agent, 20.0)
    return agent


@pytest.mark.parametrize("variant", ["iwpl-coupled", "iwpa"])
def test_acting_is_the_tilted_resample_of_online_prior_samples(variant):
    """After the first update: K samples from the online π₀, their online Q, and one index drawn with each task's
    generator from softmax(Q/α) (or the argmax, deterministic); the same draws replayed give the same action."""
    agent = _trained(variant)
    K = agent.cfg.num_actions
    obs = np.random.default_rng(0).normal(size=(T, OBS)).astype(np.float32)
    for deterministic in (False, True):
        replay = [torch.Generator().set_state(g.get_state()) for g in agent.generators]
        action = agent.act(obs, deterministic=deterministic)
        with torch.no_grad():
            x = torch.as_tensor(obs)[:, None]
            mean, std = _prior(agent, agent.prior, x)
            noise = torch.stack([torch.randn(1, K, ACT, generator=g) for g in replay])
            sampled = MAX_ACTION * torch.tanh(mean[:, :, None] + std[:, :, None] * noise)  # [T, 1, K, act]
            q = _q(agent, x, sampled, target=False)[:, 0]
            probs = torch.softmax(q / agent.log_alpha.exp().expand(T)[:, None], -1)
            drawn = [int(torch.multinomial(p, 1, generator=g)) for p, g in zip(probs, replay, strict=True)]
        index = q.argmax(-1) if deterministic else torch.tensor(drawn)
        assert (q.max(-1).values - q.min(-1).values).min() > 1.0
        np.testing.assert_allclose(action, sampled[torch.arange(T), 0, index].numpy(), rtol=0, atol=1e-6)


def test_before_the_first_update_acting_is_the_prior_alone():
    """App. A.2: the prior's mean (deterministic) or one sample of it with each task's generator."""
    agent = _agent("iwpa")
    obs = np.random.default_rng(1).normal(size=(T, OBS)).astype(np.float32)
    replay = [torch.Generator().set_state(g.get_state()) for g in agent.generators]
    sampled = agent.act(obs)
    with torch.no_grad():
        mean, std = agent.prior.distribution(torch.as_tensor(obs)[:, None])
        noise = torch.stack([torch.randn(1, 1, ACT, generator=g) for g in replay])[:, :, 0]
        expected = MAX_ACTION * torch.tanh(mean + std * noise)[:, 0]
    np.testing.assert_allclose(sampled, expected.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(agent.act(obs, deterministic=True), (MAX_ACTION * torch.tanh(mean[:, 0])).numpy(),
                               rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the target period, the task axis, initialisation
def test_targets_are_frozen_and_copied_every_target_period_updates():
    """Alg. 1: θ' ← θ, φ' ← φ after every T updates, not in between."""
    agent = _agent("iwpa", target_period=3)
    for target in (agent.prior_target, agent.features_target, agent.critic_target):
        assert not any(p.requires_grad for p in target.parameters())
    copied = copy.deepcopy(agent)  # the networks as of the last copy
    pairs = (("prior", "prior_target"), ("features", "features_target"), ("critic", "critic_target"))
    for step in range(1, 8):
        agent.update(_terminal_batch(step))
        assert agent.updates.tolist() == [step] * T and agent.updates.dtype == torch.long
        if step % 3 == 0:
            copied = copy.deepcopy(agent)
        for net, target in pairs:
            for a, b in zip(getattr(copied, net).parameters(), getattr(agent, target).parameters(), strict=True):
                assert torch.equal(a, b), (step, target)
        if step % 3:
            assert not torch.equal(agent.critic.weight, agent.critic_target.weight)


@pytest.mark.parametrize("shared_features", [True, False])
def test_an_iwpa_task_is_a_single_task_agent_with_its_seed(shared_features):
    """Not coupled, task t of a two-task agent starts, updates and reports as a one-task agent with seeds[t] on
    task t's rows: the task axis mixes nothing."""
    cfg = dataclasses.replace(TERMS, shared_features=shared_features)
    pair = IWPL(cfg, OBS, ACT, MAX_ACTION, "cpu", tasks=2, seeds=[3, 4])
    single = IWPL(cfg, OBS, ACT, MAX_ACTION, "cpu", tasks=1, seeds=[4])
    for step in range(3):
        batch = _terminal_batch(step)
        both = pair.update(batch)
        one = single.update({k: v[1:] for k, v in batch.items()})
        for name in IWPL.METRICS:
            torch.testing.assert_close(both[name][1:], one[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in IWPL.NETWORKS:
        if getattr(pair, name) is None:  # no ψ without shared features
            continue
        for a, b in zip(getattr(pair, name).parameters(), getattr(single, name).parameters(), strict=True):
            torch.testing.assert_close(a[1:], b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pair.log_alpha[1:], single.log_alpha)


def test_coupled_networks_start_from_task_0s_stream_and_w_from_each_tasks():
    """IWPL: π₀ and ψ are one network, initialised as a one-task agent's with seeds[0]; w_i is N(0, I/d) from
    task i's generator (Alg. 2), and α starts at init_alpha, one for all tasks."""
    coupled = IWPL(TERMS, OBS, ACT, MAX_ACTION, "cpu", tasks=3, seeds=[5, 6, 7], coupled=True)
    alone = IWPL(TERMS, OBS, ACT, MAX_ACTION, "cpu", tasks=1, seeds=[5])
    for name in ("prior", "features"):
        for a, b in zip(getattr(coupled, name).parameters(), getattr(alone, name).parameters(), strict=True):
            assert torch.equal(a, b), name
    assert torch.equal(coupled.critic.weight[0], alone.critic.weight[0])
    d = TERMS.feature_dim
    for t, seed in ((1, 6), (2, 7)):  # tasks 1 and 2 drew nothing before w
        expected = torch.randn(d, generator=torch.Generator().manual_seed(seed)) / math.sqrt(d)
        assert torch.equal(coupled.critic.weight[t], expected)
    assert coupled.log_alpha.shape == (1,) and alone.log_alpha.shape == (1,)
    torch.testing.assert_close(coupled.alpha(), torch.full((3, 1), TERMS.init_alpha))
    per_task = IWPL(TERMS, OBS, ACT, MAX_ACTION, "cpu", tasks=3, seeds=[5, 6, 7])
    assert per_task.log_alpha.shape == (3,) and per_task.alpha().shape == (3, 1)
    assert per_task.prior.net.layers[0].weight.shape[0] == 3 and coupled.prior.net.layers[0].weight.shape[0] == 1


def test_task_vectors_are_standard_normal_over_sqrt_d_from_each_generator():
    d = 4096
    vectors = TaskVectors(d, [torch.Generator().manual_seed(s) for s in (1, 2)])
    expected = torch.stack([torch.randn(d, generator=torch.Generator().manual_seed(s)) for s in (1, 2)])
    assert torch.equal(vectors.weight.detach(), expected / math.sqrt(d))
    one = TaskVectors(d, [torch.Generator().manual_seed(1)])
    assert torch.equal(one.weight.detach(), vectors.weight.detach()[:1])
    assert one.weight.std().item() * math.sqrt(d) == pytest.approx(1.0, abs=0.05)


def test_defaults_one_task_on_the_given_device():
    agent = IWPL(TERMS, OBS, ACT, MAX_ACTION, "cpu")
    assert agent.tasks == 1 and len(agent.generators) == 1 and agent.log_alpha.shape == (1,)
    assert agent.device == torch.device("cpu") and not agent.coupled
    assert agent.prior_opt is not None and agent.feature_opt is not None


def test_the_per_task_q_and_the_prior_have_their_configured_sizes():
    agent = _agent("per-task-q", critic_hidden=(7,), prior_hidden=(5,))
    assert agent.features is None and agent.feature_opt is None and agent.features_target is None
    assert [tuple(layer.weight.shape) for layer in agent.critic.layers] == [(T, OBS + ACT, 7), (T, 7, 1)]
    assert [tuple(layer.weight.shape) for layer in agent.prior.net.layers] == [(T, OBS, 5), (T, 5, 2 * ACT)]
    assert agent.prior.max_action == MAX_ACTION and isinstance(agent.max_action, float)
    shared = _agent("iwpa", critic_hidden=(7,))
    assert [tuple(layer.weight.shape) for layer in shared.features.layers] == [(T, OBS + ACT, 7),
                                                                              (T, 7, TERMS.feature_dim)]
    assert shared.critic.weight.shape == (T, TERMS.feature_dim)


def test_per_task_checkpoints_of_iwpa_round_trip():
    """Not coupled, `task_states` are plain one-task checkpoints (no shared part) that restore the agent."""
    agent = _agent("iwpa")
    agent.update(_terminal_batch())
    states = agent.task_states()
    assert len(states) == T and all("shared" not in s for s in states)
    other = IWPL(TERMS, OBS, ACT, MAX_ACTION, "cpu", tasks=T, seeds=[8, 9])
    other.load_task_states(states)
    obs = np.random.default_rng(2).normal(size=(T, OBS)).astype(np.float32)
    np.testing.assert_array_equal(agent.act(obs), other.act(obs))
    torch.testing.assert_close(other.log_alpha, agent.log_alpha, rtol=0, atol=0)


def test_a_one_task_coupled_checkpoint_round_trips():
    """IWPL on a single training task: the per-task checkpoint carries the shared parts and restores them."""
    agent = IWPL(TERMS, OBS, ACT, MAX_ACTION, "cpu", tasks=1, seeds=[3], coupled=True)
    agent.update({k: v[:1] for k, v in _terminal_batch().items()})
    (state,) = agent.task_states()
    assert set(state["shared"]) == {"prior", "features", "prior_target", "features_target", "log_alpha",
                                    "prior_opt", "feature_opt", "alpha_opt"}
    other = IWPL(TERMS, OBS, ACT, MAX_ACTION, "cpu", tasks=1, seeds=[8], coupled=True)
    other.load_task_states([state])
    obs = np.ones((1, OBS), np.float32)
    np.testing.assert_array_equal(agent.act(obs), other.act(obs))
    torch.testing.assert_close(other.log_alpha, agent.log_alpha, rtol=0, atol=0)

"""Batch PEARL's update term by term (issue 23, docs/mutation.md): the critic, KL, V and policy losses of PEARL's
SAC v1 recomputed from their formulas with the agent's draws replayed (z_i per task, then the policy's noise),
each weight on its own term, V's Polyak update, and the networks' sizes."""

import copy
import dataclasses

import pytest
import torch
from test_batch_pearl import ACT, MAX_ACTION, OBS, TINY, K, make_algo, make_data, sample
from written_out import alternating_terminals, optimised_ids, tanh_gaussian_log_density

from mtrl.algos.batch_pearl import BatchPEARL, pearl_sac_networks

# every weight away from 1 and from the others, so that a term weighted by the wrong one shows
TERMS = dataclasses.replace(TINY, reward_scale=3.0, gamma=0.7, policy_reg=0.4, tau=0.2, kl_beta=0.3)


def _terminal_batch(seed):
    batch = sample(make_data(), TERMS, torch.Generator().manual_seed(seed))
    batch["terminals"] = alternating_terminals(K, TERMS.batch_size)
    return batch


def test_update_is_pearls_sac_v1_term_by_term():
    algo = make_algo(TERMS)
    for seed in (1, 2):  # V' away from V, the critics away from their initialisation
        algo.update(_terminal_batch(seed))
    before = copy.deepcopy(algo)
    g = torch.Generator().set_state(algo.generator.get_state())  # the update's draws, in its order: z, then π's
    batch = _terminal_batch(3)
    metrics = algo.update(batch)

    obs, actions, rewards, terminals = (batch[k] for k in ("observations", "actions", "rewards", "terminals"))
    n = obs.shape[1]
    with torch.no_grad():
        mean, var = before.encoder(batch["context"])
        z = (mean + var.sqrt() * torch.randn(mean.shape, generator=g))[:, None].expand(K, n, -1)  # one per task
        s = torch.cat([obs, z], -1).flatten(0, 1)
        next_v = before.value_target(torch.cat([batch["next_observations"], z], -1))[..., 0]
        y = TERMS.reward_scale * rewards + TERMS.gamma * (1 - terminals) * next_v  # [K, N]
        q = before.critic(torch.cat([s, actions.flatten(0, 1)], -1))[..., 0]  # [2, K·N]: the twins
        critic_loss = (q[0] - y.flatten()).pow(2).mean() + (q[1] - y.flatten()).pow(2).mean()
        kl = (0.5 * (var + mean.pow(2) - 1 - var.log()).sum(-1)).mean()

        pi_mean, pi_std = before.actor.distribution(s)  # the policy is stepped last: as it was
        u = pi_mean + pi_std * torch.randn(pi_mean.shape, generator=g)
        log_pi = tanh_gaussian_log_density(u, pi_mean, pi_std)
        min_q = algo.critic(torch.cat([s, MAX_ACTION * torch.tanh(u)], -1))[..., 0].min(0).values  # updated twins
        value_loss = (before.value(s)[..., 0] - (min_q - log_pi)).pow(2).mean()
        penalty = pi_mean.pow(2).mean() + pi_std.log().pow(2).mean()
        actor_loss = (log_pi - min_q).mean() + TERMS.policy_reg * penalty
    assert torch.equal(y[:, 1::2], TERMS.reward_scale * rewards[:, 1::2])  # terminal rows: scale·r alone
    assert kl > 1e-3 and penalty > 1e-3 and (next_v.abs() > 1e-3).all()

    expected = {"critic_loss": critic_loss, "kl": kl, "value_loss": value_loss, "actor_loss": actor_loss,
                "q_mean": q.mean(), "entropy": -log_pi.mean()}
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value.item(), rel=1e-4, abs=1e-5), name
    # V' ← (1 − τ)·V' + τ·V with the just-updated V; V moved
    for old, new_target, new in zip(before.value_target.parameters(), algo.value_target.parameters(),
                                    algo.value.parameters(), strict=True):
        torch.testing.assert_close(new_target, (1 - TERMS.tau) * old + TERMS.tau * new)
    assert not all(torch.equal(a, b) for a, b in zip(before.value.parameters(), algo.value.parameters(), strict=True))


def test_critic_step_gradient_is_the_twins_squared_errors():
    """The critics step with ∇θ Σ_j mean (Q_j − y)² (y fixed): the gradient recorded at the optimiser's step."""
    algo = make_algo(TERMS)
    algo.update(_terminal_batch(1))
    before = copy.deepcopy(algo)
    g = torch.Generator().set_state(algo.generator.get_state())
    grads, step = [], algo.critic_opt.step

    def recording(*args, **kwargs):
        grads.append([p.grad.clone() for p in algo.critic.parameters()])
        return step(*args, **kwargs)

    algo.critic_opt.step = recording
    batch = _terminal_batch(2)
    algo.update(batch)
    n = batch["observations"].shape[1]
    with torch.no_grad():
        mean, var = before.encoder(batch["context"])
        z = (mean + var.sqrt() * torch.randn(mean.shape, generator=g))[:, None].expand(K, n, -1)
        y = TERMS.reward_scale * batch["rewards"] + TERMS.gamma * (1 - batch["terminals"]) * before.value_target(
            torch.cat([batch["next_observations"], z], -1))[..., 0]
    q = before.critic(torch.cat([batch["observations"], z, batch["actions"]], -1).flatten(0, 1))[..., 0]
    loss = (q - y.flatten()).pow(2).mean(1).sum()
    expected = torch.autograd.grad(loss, list(before.critic.parameters()))
    for got, want in zip(grads[0], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_the_critics_stay_trainable_across_updates():
    """The critics are frozen only while V and π read them: the next update's critic step moves them again."""
    algo = make_algo(TERMS)
    algo.update(_terminal_batch(1))
    assert all(p.requires_grad for p in algo.critic.parameters())
    critic = [p.clone() for p in algo.critic.parameters()]
    algo.update(_terminal_batch(2))
    assert all((a - b).abs().max() > 0 for a, b in zip(critic, algo.critic.parameters(), strict=True))


def test_pearl_networks_have_the_configured_sizes():
    """π(a | s, z), twin Q(s, z, a) as one two-member ensemble, V(s, z) and a frozen copy V'."""
    actor, critic, value, value_target = pearl_sac_networks(OBS, 4, ACT, (7, 6), MAX_ACTION, torch.device("cpu"))
    assert actor.max_action == MAX_ACTION and actor.tasks is None
    linear = [m for m in actor.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(OBS + 4, 7), (7, 6), (6, 2 * ACT)]
    assert [(layer.members, layer.in_dim, layer.out_dim) for layer in critic.layers] == [
        (2, OBS + 4 + ACT, 7), (2, 7, 6), (2, 6, 1)]
    linear = [m for m in value if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(OBS + 4, 7), (7, 6), (6, 1)]
    assert not any(p.requires_grad for p in value_target.parameters())
    assert all(torch.equal(a, b) for a, b in zip(value.parameters(), value_target.parameters(), strict=True))

    algo = BatchPEARL(dataclasses.replace(TINY, hidden=(7,), encoder_hidden=(5,)), OBS, ACT, MAX_ACTION, "cpu")
    assert isinstance(algo.max_action, float) and algo.actor.max_action == MAX_ACTION
    assert algo.device == torch.device("cpu")
    assert algo.context_dim == 2 * OBS + ACT + 1
    assert [m.out_features for m in algo.encoder.net if isinstance(m, torch.nn.Linear)] == [5, 2 * TINY.z_dim]

    assert optimised_ids(algo.critic_opt) == [id(p) for p in (*algo.critic.parameters(), *algo.encoder.parameters())]
    assert optimised_ids(algo.actor_opt) == [id(p) for p in algo.actor.parameters()]
    assert optimised_ids(algo.value_opt) == [id(p) for p in algo.value.parameters()]


def test_sampled_acting_is_the_squashed_gaussian_draw_of_the_given_generator():
    """`deterministic_acting` off: max_action·tanh(μ + σ·ε) of π(· | s, z), ε from the given generator (or, by
    default, the agent's own), replayed here."""
    algo = make_algo(dataclasses.replace(TINY, deterministic_acting=False))
    algo.update(_terminal_batch(1))
    obs = torch.randn(4, OBS, generator=torch.Generator().manual_seed(0))
    z = torch.randn(TINY.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mean, std = algo.actor.distribution(torch.cat([obs, z.expand(4, -1)], -1))
    for generator in (torch.Generator().manual_seed(5), None):
        source = algo.generator if generator is None else generator
        noise = torch.randn(mean.shape, generator=torch.Generator().set_state(source.get_state()))
        action = algo.act(obs.numpy(), z.numpy(), generator=generator)
        torch.testing.assert_close(torch.as_tensor(action), MAX_ACTION * torch.tanh(mean + std * noise))

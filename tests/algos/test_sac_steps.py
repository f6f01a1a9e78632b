"""SAC's update term by term and its constructor's contracts (found unpinned by mutation testing,
docs/mutation.md): the twin critic losses (each on its own batch with `separate_critic_batches`), the actor and
temperature losses against the just-updated critics, where next actions come from, and the input checks."""

import copy

import pytest
import torch
from test_sac import ACT, APP_J, OBS, TINY, _imitation_data, make_batch, make_sac

from mtrl.algos import sac as sac_module
from mtrl.algos.sac import SAC, SACConfig, imitate
from mtrl.nn import TanhGaussianActor


@pytest.mark.parametrize("overrides", [{}, APP_J], ids=["plain", "app-j"])
def test_update_losses_term_by_term(monkeypatch, overrides):
    agent = make_sac(**overrides, init_alpha=0.7)
    before = copy.deepcopy(agent)
    targets = []
    original = sac_module.soft_bellman_target
    monkeypatch.setattr(sac_module, "soft_bellman_target", lambda *a: targets.append(original(*a)) or targets[-1])
    batches = [make_batch(1 + i) for i in range(agent.batches_per_update)]
    metrics = agent.update(*batches)

    (y,) = targets  # [T, n, B]
    n = len(batches)
    with torch.no_grad():
        stacked = {k: torch.stack([b[k] for b in batches], 1) for k in batches[0]}
        before.actor(stacked["next_observations"], generator=before.generators)  # the next-action draws
        critic_in = before._critic_input(stacked["observations"], stacked["actions"])
        q = before.critic(critic_in[:, 0] if n == 1 else critic_in)  # critic i on batch i
        pi_obs = stacked["observations"][:, -1]  # the actor and α learn from the last batch
        pi_actions, log_prob = before.actor(pi_obs, generator=before.generators)
        q_pi = agent.critic(agent._critic_input(pi_obs, pi_actions)).min(1).values  # the updated critics
        alpha = before.log_alpha.exp()
    for i, name in enumerate(("q1_loss", "q2_loss")):
        torch.testing.assert_close(metrics[name], (q[:, i] - y[:, min(i, n - 1)]).pow(2).mean(-1))
    torch.testing.assert_close(metrics["actor_loss"], (alpha[:, None] * log_prob - q_pi).mean(1))
    torch.testing.assert_close(metrics["alpha_loss"],
                               -(before.log_alpha[:, None] * (log_prob + agent.target_entropy)).mean(1))
    torch.testing.assert_close(metrics["entropy"], -log_prob.mean(1))
    torch.testing.assert_close(metrics["alpha"], alpha)
    assert not torch.allclose(metrics["q1_loss"], metrics["q2_loss"])


def test_next_actions_come_from_the_target_policy_when_there_is_one():
    calls = []
    for target_policy in (False, True):
        agent = make_sac(target_policy=target_policy)
        assert (agent.actor_target is None) == (not target_policy)
        if target_policy:
            original = agent.actor_target.forward
            agent.actor_target.forward = lambda *a, f=original, **k: calls.append(1) or f(*a, **k)
        agent.update(make_batch(0))
    assert calls == [1]


def test_targets_are_frozen_copies():
    agent = make_sac(target_policy=True)
    for target in (agent.actor_target, agent.critic_target):
        assert not any(p.requires_grad for p in target.parameters())


def test_input_checks_name_the_problem():
    with pytest.raises(ValueError, match="^SAC: damped_policy copies the target policy into the actor"):
        make_sac(damped_policy=True)
    with pytest.raises(ValueError, match=r"tasks=1.*got shape \(2, 3\)"):
        make_sac(condition=torch.zeros(2, 3))
    conditioned = make_sac(condition=torch.zeros(1, 3, dtype=torch.float64))  # [tasks, cond] for one task
    assert conditioned.condition.shape == (1, 3) and conditioned.condition.dtype == torch.float32
    critic = make_sac().critic
    with pytest.raises(ValueError, match=r"twin critics take .*got \(1, 3, 4, 8\)"):
        critic(torch.zeros(1, 3, 4, OBS + ACT))
    with pytest.raises(ValueError, match="expected one state per task"):
        SAC(SACConfig(**TINY), OBS, ACT, 1.0, "cpu", tasks=2).init_actor_from([{}])


def test_imitate_draws_its_mini_batches_from_the_given_generator():
    obs, actions = _imitation_data()
    torch.manual_seed(1)
    student = TanhGaussianActor(OBS, ACT, (16,), max_action=2.0)
    fresh = copy.deepcopy(student)
    torch.manual_seed(123)  # the global generator must not matter
    losses = imitate(student, obs, actions, steps=2, batch_size=8, lr=1e-3, generator=torch.Generator().manual_seed(4))
    idx = torch.randint(len(obs), (8,), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        first = -fresh.log_prob(obs[idx], actions[idx]).mean()
    assert losses[0] == pytest.approx(first.item(), rel=1e-6)

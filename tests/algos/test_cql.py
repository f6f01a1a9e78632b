"""The CQL family (seed 004): Eq. 9's estimate, the conservative critic, the task embedding, Alg. 1's rule, BC."""

import math

import numpy as np
import pytest
import torch

from mtrl.algos.cql import BC, CSAC, BCConfig, CSACConfig, cql_logsumexp, relabel_masks
from mtrl.algos.sac import SACConfig
from mtrl.errors import ConfigError


def small(**cql) -> CSACConfig:
    sac = SACConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), actor_lr=1e-3, critic_lr=1e-3, tau=0.05,
                    batch_size=64)
    return CSACConfig(sac=sac, **({"embedding_dim": 4} | cql))


def test_logsumexp_estimates_the_integral_of_exp_q():
    """Known answer: Q(a) = a on [−1, 1] has log ∫ e^a da = log(e − 1/e); half the samples uniform, half from a
    tanh-Gaussian proposal, each weighted by its own density."""
    g = torch.Generator().manual_seed(0)
    n = 200_000
    uniform = torch.rand(n, generator=g) * 2 - 1
    pre = 0.3 + 0.5 * torch.randn(n, generator=g)
    squashed = torch.tanh(pre)
    log_normal = -0.5 * ((pre - 0.3) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)
    log_policy = log_normal - torch.log(1 - squashed**2)
    q = torch.cat([uniform, squashed])
    log_density = torch.cat([torch.full((n,), -math.log(2.0)), log_policy])
    assert cql_logsumexp(q, log_density).item() == pytest.approx(math.log(math.e - 1 / math.e), abs=0.01)


def _one_action_problem(rows=64):
    """Every dataset action is +0.5 (1-D); rewards 0 and every transition terminal, so the TD target is 0."""
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(1, rows, 3, generator=g)
    return {"observations": obs, "actions": torch.full((1, rows, 1), 0.5), "rewards": torch.zeros(1, rows),
            "next_observations": obs, "terminals": torch.ones(1, rows)}


def test_cql_pushes_down_out_of_distribution_actions():
    torch.manual_seed(0)
    agent = CSAC(small(), 3, 1, 1.0, "cpu", seeds=[0])
    batch = _one_action_problem()
    obs = batch["observations"]
    data_a, ood_a = torch.full((1, 64, 1), 0.5), torch.full((1, 64, 1), -0.9)
    before_ood = agent.q_min(obs, ood_a).mean().item()
    gaps = [agent.update(batch)["cql"].item() for _ in range(300)]
    q_data, q_ood = agent.q_min(obs, data_a).mean().item(), agent.q_min(obs, ood_a).mean().item()
    assert q_ood < before_ood - 0.5  # the term lowered the OOD values ...
    assert q_ood < q_data - 0.5  # ... below those of the dataset's actions, which TD keeps near 0
    assert gaps[-1] < gaps[0]  # the conservative gap shrinks as it is minimised
    # per state, the penalty's log-sum-exp exceeds the dataset action's Q: the gap is positive, the OOD one larger
    lse = agent.conservative_logsumexp(obs).min(1).values
    assert (lse - agent.q_min(obs, ood_a)).mean() > (lse - agent.q_min(obs, data_a)).mean()


def test_without_the_term_ood_values_are_not_lowered():
    """The control for the test above: weight 0 leaves the OOD Q near where TD's generalisation puts it."""
    torch.manual_seed(0)
    agent = CSAC(small(cql_weight=0.0), 3, 1, 1.0, "cpu", seeds=[0])
    batch = _one_action_problem()
    for _ in range(300):
        agent.update(batch)
    q_ood = agent.q_min(batch["observations"], torch.full((1, 64, 1), -0.9)).mean().item()
    assert q_ood > -0.5


def test_task_embedding_changes_the_actor_output_per_task():
    agent = CSAC(small(), 3, 2, 1.0, "cpu", seeds=[0], task_ids=2)
    obs = np.zeros((1, 2, 4), np.float32)  # the same state with task id 0 and task id 1
    obs[0, 1, 3] = 1.0
    actions = agent.act(obs, deterministic=True)
    assert not np.allclose(actions[0, 0], actions[0, 1], atol=1e-4)
    obs[0, 1, 3] = 0.0
    same = agent.act(obs, deterministic=True)
    np.testing.assert_array_equal(same[0, 0], same[0, 1])
    # the critics embed the id too, and their tables train with them (one Adam step moves both)
    batch = {"observations": torch.tensor([[[0.1, 0.2, 0.3, 0.0], [0.1, 0.2, 0.3, 1.0]]]),
             "actions": torch.zeros(1, 2, 2), "rewards": torch.tensor([[1.0, 0.0]]),
             "next_observations": torch.zeros(1, 2, 4), "terminals": torch.ones(1, 2)}
    table = agent.critic[0].table.detach().clone()
    agent.update(batch)
    assert not torch.equal(table, agent.critic[0].table)


def test_task_embedding_round_trips_through_policy_state():
    agent = CSAC(small(), 3, 2, 1.0, "cpu", seeds=[0], task_ids=2)
    copy = CSAC.from_policy_state(small(), agent.policy_state_dict())
    obs = np.random.default_rng(0).normal(size=(1, 5, 4)).astype(np.float32)
    obs[..., 3] = [0, 1, 0, 1, 1]
    np.testing.assert_array_equal(agent.act(obs, True), copy.act(obs, True))


def test_relabelling_admits_exactly_the_rows_above_the_quantile():
    """Constructed Q: Q_i over D_i is 0..99 (5 % quantile 4.95); over D_j it is given per row."""
    own = np.arange(100.0)
    other = np.array([4.0, 4.95, 5.0, 100.0, -3.0, 4.949])
    values = {(0, 0): own, (1, 1): own + 10, (0, 1): other, (1, 0): other + 10}
    masks = relabel_masks(lambda i, j: values[i, j], 2, 0.05)
    assert masks[0][0] is None and masks[1][1] is None
    np.testing.assert_array_equal(masks[0][1], [False, True, True, True, False, False])
    np.testing.assert_array_equal(masks[1][0], [False, True, True, True, False, False])
    with pytest.raises(ValueError, match="quantile"):
        relabel_masks(lambda i, j: values[i, j], 2, 5.0)


def test_bc_loss_falls_to_the_noise_level():
    """Actions tanh(W s) + N(0, 0.1²): the best mean squared error is the noise variance, 0.01."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(2, 4096, 3, generator=g)
    w = torch.randn(2, 3, 2, generator=g) * 0.5
    actions = torch.tanh(obs @ w) + 0.1 * torch.randn(2, 4096, 2, generator=g)
    agent = BC(BCConfig(hidden=(64, 64), lr=3e-3, batch_size=256), 3, 2, 1.0, "cpu", tasks=2, seeds=[0, 1])
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(600):
        idx = torch.as_tensor(rng.integers(0, 4096, 256))
        losses.append(agent.update({"observations": obs[:, idx], "actions": actions[:, idx]})["bc_loss"])
    final = torch.stack(losses[-100:]).mean(0)
    assert torch.all(final < 0.013) and torch.all(final > 0.007)
    assert agent.act(obs[:, :1].numpy())[:, 0].shape == (2, 2)


def test_separate_critic_batches_are_refused():
    with pytest.raises(ConfigError, match="separate_critic_batches"):
        CSACConfig(sac=SACConfig(separate_critic_batches=True))


def test_several_policy_samples_per_row_equal_sampling_repeated_rows():
    """CQL's policy actions come from one actor pass per state (`samples`): the same draws, densities included, as
    evaluating the actor on each state repeated."""
    from mtrl.nn import TanhGaussianActor

    actor = TanhGaussianActor(3, 2, (16,))
    obs = torch.randn(5, 3)
    once = actor.sample(obs, torch.Generator().manual_seed(3), samples=4)
    repeated = actor.sample(obs[:, None].expand(5, 4, 3), torch.Generator().manual_seed(3))
    torch.testing.assert_close(once.action, repeated.action)
    torch.testing.assert_close(once.log_prob, repeated.log_prob)
    assert once.action.shape == (5, 4, 2)

"""Bellman targets as pure functions, against values computed by hand.

Each case is chosen so that dropping one term (the terminal mask, the max over candidates, λ's soft clipping, the
entropy term, the min over the twins, the reward scale, γ) changes the number; the last tests check that the
update steps feed these functions the right tensors (the twin critics in the right order, one target per row).
"""

import pytest
import torch

from mtrl.algos.batch_pearl import pearl_q_target
from mtrl.algos.bcq import soft_clipped_target
from mtrl.algos.sac import soft_bellman_target

T = torch.tensor


def test_bcq_target_by_hand():
    # Two rows, n = 3 candidates each; row 0 non-terminal, row 1 terminal.
    rewards, terminals = T([1.0, 2.0]), T([0.0, 1.0])
    q1 = T([[0.0, 4.0, 1.0], [9.0, 9.0, 9.0]])
    q2 = T([[2.0, 2.0, 3.0], [9.0, 9.0, 9.0]])
    lmbda, gamma = 0.75, 0.5
    # Row 0, candidate by candidate: λ·min + (1 − λ)·max = [0.5, 2.5, 1.5]; the best candidate gives 2.5.
    y = soft_clipped_target(rewards, terminals, q1, q2, lmbda, gamma)
    torch.testing.assert_close(y, T([1.0 + 0.5 * 2.5, 2.0]), rtol=0, atol=0)


@pytest.mark.parametrize("lmbda, expected", [(1.0, 2.0), (0.0, 4.0), (0.5, 3.0)])
def test_bcq_target_lambda_interpolates_min_and_max_of_the_twins(lmbda, expected):
    # One candidate: min of the twins 2, max 4.
    y = soft_clipped_target(T([0.0]), T([0.0]), T([[2.0]]), T([[4.0]]), lmbda, gamma=1.0)
    assert y.item() == expected
    # the twins' order does not matter
    assert soft_clipped_target(T([0.0]), T([0.0]), T([[4.0]]), T([[2.0]]), lmbda, gamma=1.0).item() == expected


def test_bcq_target_keeps_leading_axes():
    rewards, terminals = torch.zeros(2, 5), torch.zeros(2, 5)
    q = torch.arange(2 * 5 * 4, dtype=torch.float32).view(2, 5, 4)
    y = soft_clipped_target(rewards, terminals, q, q, 0.75, 1.0)
    assert y.shape == (2, 5)
    torch.testing.assert_close(y, q[..., -1])  # the max over each row's own candidates


def test_sac_target_by_hand():
    rewards, terminals = T([1.0, 1.0, 3.0]), T([0.0, 0.0, 1.0])
    q1, q2 = T([5.0, 2.0, 100.0]), T([4.0, 6.0, 100.0])
    log_prob = T([-1.0, 2.0, 7.0])
    alpha, gamma = 0.5, 0.9
    y = soft_bellman_target(rewards, terminals, q1, q2, log_prob, alpha, gamma)
    # min twins [4, 2, ·]; entropy bonus −α log π = [+0.5, −1]; terminal row: the reward alone
    torch.testing.assert_close(y, T([1.0 + 0.9 * 4.5, 1.0 + 0.9 * 1.0, 3.0]))


def test_sac_target_alpha_broadcasts_per_task():
    rewards, terminals = torch.zeros(2, 1, 3), torch.zeros(2, 1, 3)
    q = torch.zeros(2, 1, 3)
    log_prob = torch.ones(2, 1, 3)
    alpha = T([0.1, 2.0]).view(2, 1, 1)
    y = soft_bellman_target(rewards, terminals, q, q, log_prob, alpha, 1.0)
    torch.testing.assert_close(y, torch.stack([torch.full((1, 3), -0.1), torch.full((1, 3), -2.0)]))


def test_pearl_target_by_hand():
    y = pearl_q_target(T([1.0, 2.0]), T([0.0, 1.0]), T([10.0, 10.0]), reward_scale=5.0, gamma=0.9)
    torch.testing.assert_close(y, T([5.0 + 9.0, 10.0]))


# ---------------------------------------------------------------- the update steps use these functions
def _record(monkeypatch, module, name):
    """Wrap module.name so that every call's arguments and result are kept."""
    calls = []
    original = getattr(module, name)

    def recording(*args):
        y = original(*args)
        calls.append((args, y))
        return y

    monkeypatch.setattr(module, name, recording)
    return calls


def _transitions(tasks, rows, obs=3, act=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"observations": torch.randn(tasks, rows, obs, generator=g),
            "actions": torch.rand(tasks, rows, act, generator=g) * 2 - 1,
            "rewards": torch.randn(tasks, rows, generator=g),
            "next_observations": torch.randn(tasks, rows, obs, generator=g),
            "terminals": T([[0.0, 1.0] * (rows // 2)] * tasks)}


def test_bcq_step_feeds_its_target_the_twin_target_critics_on_n_candidates(monkeypatch):
    from mtrl.algos import bcq

    cfg = bcq.BCQConfig(actor_hidden=(8,), critic_hidden=(8,), vae_hidden=(8,), num_candidates=3, lmbda=0.6,
                        gamma=0.8)
    agent = bcq.BCQ(cfg, 3, 2, 1.0, "cpu", tasks=2, seeds=[0, 1])
    calls = _record(monkeypatch, bcq, "soft_clipped_target")
    batch = _transitions(2, 4)
    agent.update(batch)
    (rewards, terminals, q1, q2, lmbda, gamma), y = calls[0]
    assert torch.equal(rewards, batch["rewards"]) and torch.equal(terminals, batch["terminals"])
    assert q1.shape == q2.shape == (2, 4, 3) and (lmbda, gamma) == (0.6, 0.8)
    assert not torch.equal(q1, q2)  # the two twins, not one of them twice
    assert torch.equal(y[:, 1::2], batch["rewards"][:, 1::2])  # terminal rows: r alone


def test_sac_update_feeds_its_target_both_twins_and_the_temperature(monkeypatch):
    from mtrl.algos import sac

    cfg = sac.SACConfig(actor_hidden=(8,), critic_hidden=(8,), init_alpha=0.3, gamma=0.7)
    agent = sac.SAC(cfg, 3, 2, 1.0, "cpu", tasks=2, seeds=[0, 1])
    calls = _record(monkeypatch, sac, "soft_bellman_target")
    batch = _transitions(2, 4)
    agent.update(batch)
    (rewards, terminals, q1, q2, log_prob, alpha, gamma), y = calls[0]
    assert q1.shape == q2.shape == log_prob.shape == (2, 1, 4) and gamma == 0.7
    assert not torch.equal(q1, q2)
    torch.testing.assert_close(alpha.flatten(), torch.full((2,), 0.3))
    assert torch.equal(y[:, 0, 1::2], batch["rewards"][:, 1::2])

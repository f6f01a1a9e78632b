"""The CQL family's maths pinned directly (issue 23, docs/mutation.md): Eq. 9's estimate on hand-computed values and
replayed with the agents' generators (N uniform and N policy actions, each weighted by its own density), Eq. 8's
critic loss term by term (½·TD + α·(log-sum-exp − Q(data))), what `update` reports, Alg. 1's rule on constructed
values with three tasks, the paper's settings, and BC's loss and step."""

import copy
import math

import numpy as np
import pytest
import torch
from test_cql import small

from mtrl.algos import sac as sac_module
from mtrl.algos.cql import BC, CSAC, BCConfig, CSACConfig, cql_logsumexp, relabel_masks
from mtrl.algos.sac import SAC, SACConfig
from mtrl.errors import ConfigError
from mtrl.nn import TaskIdEmbedding

T, B, OBS, ACT, N, MAX_ACTION = 3, 5, 3, 2, 3, 2.0  # every size different, so no axis stands in for another


def make_csac(**cql):
    torch.manual_seed(0)
    return CSAC(small(cql_samples=N, **cql), OBS, ACT, MAX_ACTION, "cpu", tasks=T, seeds=[0, 1, 2])


def make_batch(seed=1, tasks=T):
    g = torch.Generator().manual_seed(seed)
    return {"observations": torch.randn(tasks, B, OBS, generator=g),
            "actions": (torch.rand(tasks, B, ACT, generator=g) * 2 - 1) * MAX_ACTION,
            "rewards": torch.randn(tasks, B, generator=g), "next_observations": torch.randn(tasks, B, OBS, generator=g),
            "terminals": (torch.rand(tasks, B, generator=g) < 0.3).float()}


# ---------------------------------------------------------------- Eq. 9


def test_cql_logsumexp_known_answer_over_the_last_axis():
    """log((1/K)·Σ_k exp(Q_k − log p_k)) over the last axis (K = 4 here), written out per entry."""
    g = torch.Generator().manual_seed(0)
    q, log_density = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    estimate = cql_logsumexp(q, log_density)
    assert estimate.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            terms = [math.exp(a - b) for a, b in zip(q[i, j].tolist(), log_density[i, j].tolist(), strict=True)]
            assert estimate[i, j].item() == pytest.approx(math.log(sum(terms) / 4), rel=1e-5)


def test_conservative_logsumexp_replays_eq_9_with_the_agents_draws():
    """Per task t, from its own generator: N policy actions per state (their log-densities in the action space), then N
    uniform actions on [−max_action, max_action]^A (log-density −A·log(2·max_action)); each twin's Q at the 2N
    actions, importance-weighted. Only Q gets a gradient."""
    agent = make_csac()
    ref = copy.deepcopy(agent)
    obs = make_batch()["observations"]
    lse = agent.conservative_logsumexp(obs)
    assert lse.shape == (T, 2, B)

    with torch.no_grad():
        policy = ref.actor.sample(obs[:, :, None].expand(T, B, N, OBS), ref.generators)  # the states repeated
        uniform = torch.stack([torch.rand(B, N, ACT, generator=g) for g in ref.generators])
        actions = torch.cat([(2 * uniform - 1) * MAX_ACTION, policy.action], 2)  # [T, B, 2N, A]
        policy_log_density = policy.log_prob - ACT * math.log(MAX_ACTION)  # of a = m·tanh(u), not of tanh(u)
        log_density = torch.cat([torch.full((T, B, N), -ACT * math.log(2 * MAX_ACTION)), policy_log_density], 2)
        q = torch.stack([ref.critic(torch.cat([obs, actions[:, :, k]], -1)) for k in range(2 * N)], -1)
        expected = torch.logsumexp(q - log_density[:, None], -1) - math.log(2 * N)  # [T, 2, B]
    torch.testing.assert_close(lse, expected)
    assert uniform.min() < 0.2 and uniform.max() > 0.8  # the uniform draws span the box, not a corner

    lse.sum().backward()
    assert all(p.grad is None for p in agent.actor.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.critic.parameters())


class _SumOfActions(torch.nn.Module):
    """Twin critics that both return Q(s, a) = Σ_d a_d, [T, rows, in] → [T, 2, rows]."""

    def forward(self, x):
        q = x[..., -ACT:].sum(-1)
        return torch.stack([q, q], 1)


@pytest.mark.parametrize("max_action", [1.0, 2.0])
def test_conservative_logsumexp_estimates_the_integral_over_the_action_box(max_action):
    """Known answer: Q(s, a) = Σ_d a_d over [−m, m]^A has log ∫ exp Q da = A·log(e^m − e^−m). Both halves of the
    sample must be weighted by their densities in the action space: the policy's tanh-Gaussian log-density of
    a = m·tanh(u) includes −A·log m (with it left out, the policy half of the estimate is m^A times too small)."""
    torch.manual_seed(0)
    agent = CSAC(small(cql_samples=20_000), OBS, ACT, max_action, "cpu", seeds=[0])
    agent.critic = _SumOfActions()
    estimate = agent.conservative_logsumexp(torch.zeros(1, 2, OBS))
    exact = ACT * math.log(math.exp(max_action) - math.exp(-max_action))
    torch.testing.assert_close(estimate, torch.full((1, 2, 2), exact), atol=0.05, rtol=0)


# ---------------------------------------------------------------- Eq. 8 and the update


def test_critic_losses_are_eq_8_term_by_term(monkeypatch):
    """Each twin: ½·mean_b (Q − y)² + α·mean_b (log Σ exp Q − Q(s, a_data)); the gap is kept for the metric."""
    agent = make_csac(cql_weight=0.3)
    g = torch.Generator().manual_seed(2)
    lse, q, y = torch.randn(T, 2, B, generator=g), torch.randn(T, 2, B, generator=g), torch.randn(T, 1, B, generator=g)
    obs = make_batch()["observations"]
    seen = []
    monkeypatch.setattr(agent, "conservative_logsumexp", lambda states: seen.append(states) or lse)
    losses = agent._critic_losses(q, y, obs)
    assert seen[0] is obs and losses.shape == (T, 2)
    for t in range(T):
        for i in range(2):
            td = sum((q[t, i, b].item() - y[t, 0, b].item()) ** 2 for b in range(B)) / B
            gap = sum(lse[t, i, b].item() - q[t, i, b].item() for b in range(B)) / B
            assert losses[t, i].item() == pytest.approx(0.5 * td + 0.3 * gap, rel=1e-5)
            assert agent._gap[t, i].item() == pytest.approx(gap, rel=1e-5)


def test_update_reports_eq_8_per_twin_and_the_conservative_gap_per_task(monkeypatch):
    """The critic step minimises Eq. 8 at the batch's own states: q1_loss, q2_loss are ½·TD + α·gap of each twin
    with SAC's target, and `cql` is the gap averaged over the twins, one value per task."""
    agent = make_csac(cql_weight=0.4)
    before = copy.deepcopy(agent)
    batch = make_batch()
    targets, estimates = [], []
    original_target, original_lse = sac_module.soft_bellman_target, agent.conservative_logsumexp
    monkeypatch.setattr(sac_module, "soft_bellman_target", lambda *a: targets.append(original_target(*a)) or
                        targets[-1])
    monkeypatch.setattr(agent, "conservative_logsumexp", lambda obs: estimates.append((obs, original_lse(obs))) or
                        estimates[-1][1])
    metrics = agent.update(batch)

    ((states, lse),), (y,) = estimates, targets  # y [T, 1, B]
    assert torch.equal(states, batch["observations"])  # at s, not s'
    with torch.no_grad():
        q = before.critic(torch.cat([batch["observations"], batch["actions"]], -1))  # [T, 2, B]
        gap = (lse - q).mean(-1)  # [T, 2]
    for i, name in enumerate(("q1_loss", "q2_loss")):
        torch.testing.assert_close(metrics[name], 0.5 * (q[:, i] - y[:, 0]).pow(2).mean(-1) + 0.4 * gap[:, i])
    torch.testing.assert_close(metrics["cql"], gap.mean(1))
    assert metrics["cql"].shape == (T,) and (gap.abs() > 1e-3).all()


def test_a_second_batch_is_refused():
    """CSAC has no separate critic batches (its config refuses them), so a second batch is an error, not ignored."""
    with pytest.raises(ValueError, match=r"takes 1 batch\(es\)"):
        make_csac().update(make_batch(1), make_batch(2))


def test_csac_is_the_sac_it_extends():
    """The same seeds, tasks, ids and embedding width give SAC's networks; the defaults are one task, no ids."""
    cfg = small(embedding_dim=5)
    for kwargs in ({"seeds": [7]}, {"tasks": 2, "seeds": [3, 4], "task_ids": 2}):
        csac = CSAC(cfg, OBS, ACT, MAX_ACTION, "cpu", **kwargs)
        sac = SAC(cfg.sac, OBS, ACT, MAX_ACTION, "cpu", embedding_dim=5, **kwargs)
        for name in ("actor", "critic"):
            for (key, mine), theirs in zip(getattr(csac, name).state_dict().items(),
                                           getattr(sac, name).state_dict().values(), strict=True):
                assert torch.equal(mine, theirs), f"{kwargs} {name}.{key}"
        assert (csac.obs_dim, csac.act_dim, csac.max_action, csac.cql_cfg) == (OBS, ACT, MAX_ACTION, cfg)
    with_ids = CSAC(cfg, OBS, ACT, MAX_ACTION, "cpu", seeds=[0], task_ids=3)
    assert with_ids.critic[0].table.shape == (1, 3, 5)
    default = CSAC(cfg, OBS, ACT, MAX_ACTION, "cpu")
    assert default.tasks == 1 and default.task_ids == 0 and len(default.generators) == 1
    assert not any(isinstance(m, TaskIdEmbedding) for m in default.actor.modules())


def test_csac_config_is_the_papers_and_refuses_mbml_s_options():
    """Sec. 3.1: 3 × 1024 networks, critic lr 3e-4, actor lr 1e-4, τ 0.01, γ 0.99, batch 1024; Eq. 8's α 10."""
    cfg = CSACConfig()
    assert cfg.sac == SACConfig(actor_hidden=(1024, 1024, 1024), critic_hidden=(1024, 1024, 1024), actor_lr=1e-4,
                                critic_lr=3e-4, tau=0.01, gamma=0.99, batch_size=1024)
    assert cfg.batch_size == 1024 and cfg.cql_weight == 10.0
    message = (r"^CSAC: set sac.separate_critic_batches and sac.target_policy to false \(MBML's App. J options are "
               r"not part of CQL\)$")
    for option in ("separate_critic_batches", "target_policy"):
        with pytest.raises(ConfigError, match=message):
            CSACConfig(sac=SACConfig(**{option: True}))


# ---------------------------------------------------------------- Alg. 1's relabelling rule


def test_relabelling_with_three_tasks_uses_each_tasks_own_q_and_threshold():
    """Q_i over D_j is 100·i + 10·j + row: task i's threshold is the quantile of Q_i over D_i, and D_j's rows join
    where Q_i(s, a) ≥ it, whatever the other tasks' values."""
    rows = np.arange(10.0)
    calls = []

    def q(i, j):
        calls.append((i, j))
        return 100 * i + 10 * j + rows

    masks = relabel_masks(q, 3, 0.5)  # median of 100i + 10i + 0..9: 110i + 4.5
    for i in range(3):
        for j in range(3):
            if i == j:
                assert masks[i][j] is None
            else:
                np.testing.assert_array_equal(masks[i][j], 10 * j + rows >= 10 * i + 4.5)
    assert set(calls) == {(i, j) for i in range(3) for j in range(3)}


def test_task_i_admits_the_rows_of_d_j_by_its_own_q_over_d_j_not_task_j_s_over_d_i():
    """Q_i over D_j is 100·i + OFFSET[i][j] + row (rows 0..9), the offsets asymmetric in (i, j): task i's median
    over D_i is 100·i + 4.5, so row t of D_j joins task i where OFFSET[i][j] + t ≥ 4.5, a part of D_j.

    Catches a transposed pair: planting `q(j, i)` for `q(i, j)` in `relabel_masks` fails here; the test above,
    whose masks are all or nothing, passes it."""
    offset = np.array([[0, 3, -2], [-1, 0, 4], [1, -3, 0]])
    rows = np.arange(10.0)
    masks = relabel_masks(lambda i, j: 100 * i + offset[i, j] + rows, 3, 0.5)
    for i, j in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]:
        np.testing.assert_array_equal(masks[i][j], offset[i, j] + rows >= 4.5, err_msg=f"pair ({i}, {j})")
        assert 0 < masks[i][j].sum() < 10


def test_relabel_quantile_bounds_are_inclusive():
    """0: every row at least the lowest own value joins; 1: only rows reaching the highest; outside: an error."""
    own, other = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 3.0, 3.5])
    values = {(0, 0): own, (1, 1): own, (0, 1): other, (1, 0): other}
    np.testing.assert_array_equal(relabel_masks(lambda i, j: values[i, j], 2, 0.0)[0][1], [False, True, True, True])
    np.testing.assert_array_equal(relabel_masks(lambda i, j: values[i, j], 2, 1.0)[0][1], [False, False, True, True])
    for bad in (-0.01, 1.01, 1.5):
        with pytest.raises(ValueError, match=rf"^relabel quantile must be in \[0, 1\], got {bad}$"):
            relabel_masks(lambda i, j: values[i, j], 2, bad)


# ---------------------------------------------------------------- BC


def test_bc_policy_update_and_acting():
    """π(s) = tanh(f(s))·max_action; one step is Adam on the sum over tasks of each task's mean squared error per
    action dimension (the reported `bc_loss`)."""
    torch.manual_seed(0)
    agent = BC(BCConfig(hidden=(16,), lr=1e-2), OBS, ACT, MAX_ACTION, "cpu", tasks=2, seeds=[0, 1])
    before = copy.deepcopy(agent)
    batch = make_batch(tasks=2)
    obs, actions = batch["observations"], batch["actions"]
    torch.testing.assert_close(agent.policy(obs), torch.tanh(agent.actor(obs)) * MAX_ACTION)
    metrics = agent.update({"observations": obs, "actions": actions})

    losses = ((torch.tanh(before.actor(obs)) * MAX_ACTION - actions) ** 2).mean((1, 2))
    torch.testing.assert_close(metrics["bc_loss"], losses.detach())
    assert metrics.keys() == {"bc_loss"} and metrics["bc_loss"].shape == (2,)
    before.actor_opt.zero_grad()
    losses.sum().backward()
    before.actor_opt.step()
    for (key, mine), theirs in zip(agent.actor.state_dict().items(), before.actor.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), key
    np.testing.assert_allclose(agent.act(obs.numpy()), agent.policy(obs).detach().numpy(), rtol=1e-6)
    assert agent.act(obs[:, 0].numpy()).shape == (2, ACT)
    with pytest.raises(ValueError, match=r"BC.act: expected \[tasks=2, \(N,\) obs\], got shape \(3, 3\)"):
        agent.act(np.zeros((3, OBS), np.float32))


def test_bc_networks_come_from_the_seeds_and_embed_the_task_id_only_with_ids():
    cfg = BCConfig(hidden=(16,), embedding_dim=4)

    def weights(agent):
        return torch.cat([p.detach().flatten() for p in agent.actor.parameters()])

    assert torch.equal(weights(BC(cfg, OBS, ACT, 1.0, "cpu", seeds=[5])), weights(BC(cfg, OBS, ACT, 1.0, "cpu",
                                                                                      seeds=[5])))
    default = BC(cfg, OBS, ACT, 1.0, "cpu")
    assert default.tasks == 1 and default.task_ids == 0
    assert default.act(np.zeros((1, OBS), np.float32)).shape == (1, ACT)  # input: the observation alone
    with_ids = BC(cfg, OBS, ACT, 1.0, "cpu", tasks=2, seeds=[0, 1], task_ids=3)
    embedding = with_ids.actor[0]
    assert isinstance(embedding, TaskIdEmbedding) and embedding.table.shape == (2, 3, 4) and embedding.column == OBS
    obs = np.zeros((2, 2, OBS + 1), np.float32)
    obs[:, 1, OBS] = 2.0  # the same state with ids 0 and 2
    actions = with_ids.act(obs)
    assert actions.shape == (2, 2, ACT)  # the policy network behind the embedding
    assert not np.allclose(actions[:, 0], actions[:, 1])
    assert with_ids.actor_opt.param_groups[0]["lr"] == cfg.lr
    assert {id(p) for p in with_ids.actor_opt.param_groups[0]["params"]} == {id(p) for p in
                                                                             with_ids.actor.parameters()}

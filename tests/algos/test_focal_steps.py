"""FOCAL's maths pinned directly (issue 23, docs/mutation.md): Eq. 13's distance metric loss in both forms on
hand-computed values, BRAC's dual KL and its gradient penalty replayed with the agent's generator, the row columns
the encoder reads, and one whole `update` recomputed term by term from the formulas of the module docstring with
the same random draws, so that a dropped, mis-weighted or mis-signed term, a wrong network or a wrong conditioning
set fails here even where "the loss falls" still holds."""

import copy
import dataclasses
import math

import pytest
import torch
from test_focal import ACT, OBS, TINY, make, make_batch
from torch import nn
from torch.nn import functional as F

from mtrl.algos.focal import (
    RATIO_EPS,
    REFERENCE_SAME_EPS,
    DeterministicEncoder,
    FOCALConfig,
    distance_metric_loss,
    kl_dual,
    row_columns,
)
from mtrl.errors import ConfigError
from mtrl.nn import soft_update

# ---------------------------------------------------------------- Eq. 13


def _pairs(z):
    return [(i, j) for i in range(len(z)) for j in range(i + 1, len(z))]


def _eq13_by_hand(z, z_same, power, beta, epsilon, form):
    """Eq. 13 written out with Python floats, one pair at a time."""
    width = len(z[0])
    scale = 1.0 / width if form == "reference" else 1.0

    def dist(a, b):
        return math.sqrt(scale * sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))

    if form == "reference":
        same = [math.sqrt(dist(a, b) ** 2 + REFERENCE_SAME_EPS) for a, b in zip(z, z_same, strict=True)]
    else:
        same = [dist(a, b) ** 2 for a, b in zip(z, z_same, strict=True)]
    different = []
    for i, j in _pairs(z):
        d = dist(z[i], z[j])
        different.append(beta / (d ** -power + epsilon) if power < 0 else -beta * d ** power)
    euclidean = [math.dist(z[i], z[j]) for i, j in _pairs(z)]
    return sum(same) / len(same) + sum(different) / len(different), sum(euclidean) / len(euclidean)


# three tasks in a 2-D latent (K ≠ z_dim, so no axis can stand in for another), one pair closer than 1
Z = [[0.0, 0.0], [0.3, 0.4], [2.0, -1.0]]
Z_SAME = [[0.0, 1.0], [0.3, 0.4], [1.0, -1.5]]


@pytest.mark.parametrize("form", ["eq13", "reference"])
@pytest.mark.parametrize("power,beta,epsilon", [(-2, 2.0, 0.1), (-1, 0.5, 0.3), (2, 1.5, 0.1), (0.5, 1.0, 0.1)])
def test_distance_metric_loss_matches_eq_13_pair_by_pair(form, power, beta, epsilon):
    loss, spread = distance_metric_loss(torch.tensor(Z), torch.tensor(Z_SAME), power, beta, epsilon, form)
    expected, expected_spread = _eq13_by_hand(Z, Z_SAME, power, beta, epsilon, form)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert spread.item() == pytest.approx(expected_spread, rel=1e-6)  # always the Euclidean mean distance


def test_one_task_has_no_different_task_term():
    """K = 1: no pair of different tasks, so the loss is the same-task term alone and the spread 0 (not NaN)."""
    z, z_same = torch.tensor([[0.0, 3.0, 4.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    loss, spread = distance_metric_loss(z, z_same, -2, 1.0, 0.1)
    assert loss.item() == pytest.approx(25.0) and spread.item() == 0.0
    loss, spread = distance_metric_loss(z, z_same, -2, 1.0, 0.1, form="reference")
    assert loss.item() == pytest.approx(math.sqrt(25.0 / 3 + REFERENCE_SAME_EPS)) and spread.item() == 0.0


@pytest.mark.parametrize("form", ["eq13", "reference"])
def test_coinciding_embeddings_give_finite_gradients(form):
    """Two tasks mapped to the same z: d = 0 is where the square root's slope is infinite; the loss there is β/ε
    and its gradient finite."""
    z = torch.tensor([[0.5, -0.5], [0.5, -0.5]], requires_grad=True)
    loss, _ = distance_metric_loss(z, z.detach() + 0.1, -2, 1.0, 0.1, form)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert loss.item() == pytest.approx(_eq13_by_hand(z.tolist(), (z + 0.1).tolist(), -2, 1.0, 0.1, form)[0],
                                        rel=1e-5)


# ---------------------------------------------------------------- BRAC's dual KL and its gradient penalty


def test_kl_dual_known_answer():
    """log(softplus(g_π) + 1e-8) − softplus(g_b) + 1; a logit far below zero shows the 1e-8 under the log."""
    logits_policy, logits_behaviour = torch.tensor([0.0, 2.0, -40.0]), torch.tensor([1.0, -0.5, 0.0])

    def softplus(x):
        return math.log1p(math.exp(x))

    expected = [math.log(softplus(p) + RATIO_EPS) - softplus(b) + 1.0
                for p, b in zip(logits_policy.tolist(), logits_behaviour.tolist(), strict=True)]
    torch.testing.assert_close(kl_dual(logits_policy, logits_behaviour), torch.tensor(expected))
    assert kl_dual(logits_policy, logits_behaviour)[2].item() == pytest.approx(math.log(RATIO_EPS) - math.log(2) + 1,
                                                                               rel=1e-6)


def _steep_discriminator(in_dim, seed=0, scale=4.0):
    """A smooth g(s, z, a) whose slope in the action is above 1 at some points and below at others."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(in_dim, 8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():
        net[0].weight.mul_(scale)
        net[2].weight.mul_(scale)
    return net


def _state_and_actions(algo, n=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(n, OBS + algo.cfg.z_dim, generator=g)
    return state, torch.rand(n, ACT, generator=g) * 2 - 1, torch.rand(n, ACT, generator=g) * 2 - 1


def test_divergence_is_the_dual_kl_of_the_discriminator_at_the_policy_and_the_data_action():
    algo = make()
    state, policy_actions, actions = _state_and_actions(algo)
    with torch.no_grad():
        divergence = algo.divergence(state, policy_actions, actions)
        for row in range(len(state)):
            g_pi = algo.discriminator(torch.cat([state[row], policy_actions[row]]))
            g_b = algo.discriminator(torch.cat([state[row], actions[row]]))
            torch.testing.assert_close(divergence[row], kl_dual(g_pi, g_b)[0])
    assert divergence.shape == (len(state),)


def test_gradient_penalty_is_brac_s_one_sided_slope_penalty_at_random_interpolates():
    """Replayed row by row: mix ~ U[0, 1) from the agent's generator, â = a_π + mix·(a_b − a_π), slope =
    ‖∂g/∂a(s, â)‖ (with 1e-8 under the root), penalty = weight · mean(max(slope − 1, 0)²); it trains g (its graph
    is kept)."""
    algo = make(gradient_penalty=2.5)
    algo.discriminator = _steep_discriminator(OBS + TINY.z_dim + ACT)
    state, policy_actions, actions = _state_and_actions(algo)
    mix = torch.rand(len(state), 1, generator=copy.deepcopy(algo.generator))
    penalty = algo._gradient_penalty(state, policy_actions, actions)

    slopes = []
    for row in range(len(state)):
        point = (policy_actions[row] + mix[row] * (actions[row] - policy_actions[row])).requires_grad_(True)
        (grad,) = torch.autograd.grad(algo.discriminator(torch.cat([state[row], point]))[0], point)
        slopes.append(math.sqrt(grad.pow(2).sum().item() + RATIO_EPS))
    assert min(slopes) < 1 < max(slopes)  # both sides of the hinge occur
    expected = 2.5 * sum(max(s - 1.0, 0.0) ** 2 for s in slopes) / len(slopes)
    assert penalty.item() == pytest.approx(expected, rel=1e-5)
    penalty.backward()
    assert algo.discriminator[0].weight.grad.abs().sum() > 0  # the penalty reaches g's weights


class _ActionBlind(nn.Module):
    """g(s, z, a) that ignores the action: its slope in a is exactly 0."""

    def __init__(self, state_dim):
        super().__init__()
        self.state_dim = state_dim
        self.linear = nn.Linear(state_dim, 1)

    def forward(self, x):
        return self.linear(x[:, :self.state_dim]) + 0.0 * x[:, self.state_dim:].sum(-1, keepdim=True)


def test_gradient_penalty_of_a_flat_discriminator_is_zero_with_finite_gradients():
    """Zero slope (e.g. every ReLU dead between the two actions) is where √ has an infinite derivative: the 1e-8
    under the root keeps the penalty 0 and its gradient finite."""
    algo = make()
    algo.discriminator = _ActionBlind(OBS + TINY.z_dim)
    state, policy_actions, actions = _state_and_actions(algo)
    penalty = algo._gradient_penalty(state, policy_actions, actions)
    assert penalty.item() == 0.0
    (penalty - algo.divergence(state, policy_actions, actions).mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in algo.discriminator.parameters())


# ---------------------------------------------------------------- what the encoder reads, how the parts are built


def test_row_columns_are_s_a_s_prime_r_or_s_a_r():
    # obs 3, act 2: a row is s (0-2), a (3-4), s' (5-7), r (8)
    assert row_columns(3, 2, next_obs=True) == list(range(9))
    assert row_columns(3, 2, next_obs=False) == [0, 1, 2, 3, 4, 8]


def test_encoder_reads_its_columns_of_sets_of_any_batch_shape():
    rows = torch.randn(3, 2, 5, 9)  # [K, sets, rows, D]
    columns = [0, 1, 2, 3, 4, 8]
    encoder = DeterministicEncoder(9, 4, (8,), columns)
    z = encoder.embed(rows)
    torch.testing.assert_close(z, torch.tanh(encoder.net(rows[..., columns])).mean(-2))
    assert z.shape == (3, 2, 4)
    mean, var = encoder(rows[0, 0])
    torch.testing.assert_close(mean, torch.tanh(encoder.net(rows[0, 0][:, columns])).mean(0))
    assert var.shape == (4,) and not var.any()  # a point mass
    every = DeterministicEncoder(9, 4, (8,))  # default: every column
    assert every.net[0].in_features == 9
    torch.testing.assert_close(every.embed(rows), torch.tanh(every.net(rows)).mean(-2))


def test_an_empty_set_embeds_to_the_centre():
    encoder = DeterministicEncoder(9, 4, (8,))
    assert torch.equal(encoder.embed(torch.zeros(3, 0, 9)), torch.zeros(3, 4))
    assert torch.equal(encoder.embed(torch.zeros(0, 9)), torch.zeros(4))


def test_networks_and_optimisers_are_built_from_the_config():
    algo = make(lr=1e-3, encoder_lr=2e-3, discriminator_lr=5e-4, z_dim=5)
    parts = {"encoder": (algo.encoder, 2e-3), "actor": (algo.actor, 1e-3), "critic": (algo.critic, 1e-3),
             "value": (algo.value, 1e-3), "discriminator": (algo.discriminator, 5e-4)}
    for name, (net, lr) in parts.items():
        (group,) = getattr(algo, f"{name}_opt").param_groups
        assert group["lr"] == lr, name
        assert [id(p) for p in group["params"]] == [id(p) for p in net.parameters()], name
    assert algo.discriminator(torch.zeros(7, OBS + 5 + ACT)).shape == (7, 1)  # g(s, z, a): one logit
    assert algo.context_dim == 2 * OBS + ACT + 1 and algo.encoder.z_dim == 5
    assert algo.alpha_var is None and algo.alpha == TINY.alpha
    trained = make(train_alpha=True, alpha=0.25)
    assert trained.alpha_var.item() == 0.25 and trained.alpha_var.dtype == torch.float32


def test_actions_are_scaled_to_max_action():
    torch.manual_seed(0)
    algo = type(make())(dataclasses.replace(TINY, deterministic_acting=False), OBS, ACT, 3.0, "cpu")
    assert algo.max_action == 3.0 and algo.actor.max_action == 3.0
    actions = algo.act(torch.randn(200, OBS).numpy() * 10, torch.zeros(TINY.z_dim).numpy())
    assert abs(actions).max() > 1.0 and abs(actions).max() <= 3.0


# ---------------------------------------------------------------- one update, term by term

WEIGHTS = dict(dml_weight=0.7, dml_beta=1.3, dml_epsilon=0.2, reward_scale=3.0, gamma=0.9, tau=0.1, policy_reg=0.3,
               alpha=0.6, gradient_penalty=2.0, discriminator_steps=2, lr=1e-3, encoder_lr=2e-3, discriminator_lr=5e-4)


def _penalty(disc, state, policy_actions, actions, mix, weight):
    point = (policy_actions + mix * (actions - policy_actions)).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(torch.cat([state, point], -1)).sum(), point, create_graph=True)
    return weight * F.relu((grad.pow(2).sum(-1) + RATIO_EPS).sqrt() - 1.0).pow(2).mean()


def _dual(disc, state, policy_actions, actions):
    return kl_dual(disc(torch.cat([state, policy_actions], -1))[:, 0], disc(torch.cat([state, actions], -1))[:, 0])


def _replay_update(ref, batch):
    """One FOCAL update from the module docstring's formulas, on `ref` (a copy of the agent: same weights,
    optimisers and generator, so the same draws in the same order)."""
    cfg, g = ref.cfg, ref.generator
    obs, next_obs = batch["observations"], batch["next_observations"]
    k, n = obs.shape[:2]
    rows = batch["context"][..., row_columns(OBS, ACT, cfg.context_next_obs)]
    z_sets = torch.tanh(ref.encoder.net(rows)).mean(-2)  # [K, 2, z]: each set's mean embedding
    dml, spread = distance_metric_loss(z_sets[:, 0], z_sets[:, 1], cfg.dml_power, cfg.dml_beta, cfg.dml_epsilon,
                                       cfg.dml_form)
    z = z_sets[:, 0, None].expand(k, n, -1)  # set 0 conditions the actor-critic
    state = torch.cat([obs, z.detach()], -1).reshape(k * n, -1)
    next_state = torch.cat([next_obs, z.detach()], -1).reshape(k * n, -1)
    actions = batch["actions"].reshape(k * n, -1)
    alpha = ref.alpha

    penalties = []
    for _ in range(cfg.discriminator_steps):  # g ascends E[D] − penalty
        with torch.no_grad():
            policy_actions = ref.actor.sample(state, g, with_log_prob=False).action
        divergence = _dual(ref.discriminator, state, policy_actions, actions)
        mix = torch.rand(k * n, 1, generator=g)
        penalties.append(_penalty(ref.discriminator, state, policy_actions, actions, mix, cfg.gradient_penalty))
        discriminator_loss = -divergence.mean() + penalties[-1]
        ref.discriminator_opt.zero_grad()
        discriminator_loss.backward()
        ref.discriminator_opt.step()

    with torch.no_grad():
        policy_actions = ref.actor.sample(state, g, with_log_prob=False).action
        divergence = _dual(ref.discriminator, state, policy_actions, actions)
        next_v = ref.value_target(next_state)[:, 0]
        if cfg.regularisation == "value":  # value penalty: V'(s', z) − α·D
            next_v = next_v - alpha * divergence
        y = cfg.reward_scale * batch["rewards"].reshape(-1) + cfg.gamma * (1 - batch["terminals"].reshape(-1)) * next_v
    critic_z = z if cfg.coupled else z.detach()
    q = ref.critic(torch.cat([torch.cat([obs, critic_z], -1).reshape(k * n, -1), actions], -1))[..., 0]  # [2, K·N]
    critic_loss = ((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean()
    ref.encoder_opt.zero_grad()
    ref.critic_opt.zero_grad()
    (cfg.dml_weight * dml + critic_loss).backward()
    ref.encoder_opt.step()
    ref.critic_opt.step()

    pi = ref.actor.sample(state, g)
    for net in (ref.critic, ref.discriminator):
        net.requires_grad_(False)
    q_pi = ref.critic(torch.cat([state, pi.action], -1))[..., 0]
    min_q = torch.minimum(q_pi[0], q_pi[1])
    actor_divergence = _dual(ref.discriminator, state, pi.action, actions)
    for net in (ref.critic, ref.discriminator):
        net.requires_grad_(True)

    value_loss = ((ref.value(state)[:, 0] - (min_q - pi.log_prob).detach()) ** 2).mean()
    ref.value_opt.zero_grad()
    value_loss.backward()
    ref.value_opt.step()
    soft_update(ref.value_target, ref.value, cfg.tau)

    actor_loss = (pi.log_prob - min_q).mean() + cfg.policy_reg * (pi.mean.pow(2).mean() + pi.std.log().pow(2).mean())
    if cfg.regularisation == "policy":  # policy regularisation: + α·D
        actor_loss = actor_loss + alpha * actor_divergence.mean()
    ref.actor_opt.zero_grad()
    actor_loss.backward()
    ref.actor_opt.step()
    if cfg.train_alpha:  # BRAC's dual step
        ref.alpha_var += cfg.alpha_lr * (divergence.mean() - cfg.target_divergence)

    metrics = {"dml": dml, "task_distance": spread, "critic_loss": critic_loss,
               "discriminator_loss": discriminator_loss, "divergence": divergence.mean(), "value_loss": value_loss,
               "actor_loss": actor_loss, "q_mean": q.mean(), "entropy": -pi.log_prob.mean(),
               "alpha": torch.as_tensor(alpha)}
    return {name: value.item() for name, value in metrics.items()}, max(p.item() for p in penalties)


@pytest.mark.parametrize("overrides", [
    {},
    {"regularisation": "value"},
    {"regularisation": "none", "coupled": True},
    {"train_alpha": True, "alpha_lr": 0.5, "target_divergence": 0.2, "dml_form": "reference",
     "context_next_obs": False, "dml_power": -1.0},
], ids=["policy", "value", "none-coupled", "trained-alpha-reference"])
def test_update_is_the_formulas_term_by_term(overrides, same_state):
    """Two updates on different batches (the second shows what the first left trainable or not); metrics and the
    whole state after them (networks, optimiser moments, V', α, generator) as the replay's."""
    algo = make(**WEIGHTS | overrides)
    algo.discriminator = _steep_discriminator(OBS + TINY.z_dim + ACT)  # so the gradient penalty is not 0
    algo.discriminator_opt = type(algo.discriminator_opt)(algo.discriminator.parameters(), lr=WEIGHTS[
        "discriminator_lr"])
    ref = copy.deepcopy(algo)
    for step in range(2):
        batch = make_batch(1 + step)
        metrics = algo.update(batch)
        expected, penalty = _replay_update(ref, batch)
        assert penalty > 1e-3
        assert metrics.keys() == expected.keys()
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for name in ("encoder", "actor", "critic", "value", "value_target", "discriminator"):
        for (key, mine), theirs in zip(getattr(algo, name).state_dict().items(),
                                       getattr(ref, name).state_dict().values(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6, msg=f"{name}.{key}")
    if algo.alpha_var is not None:
        assert algo.alpha_var.item() == pytest.approx(ref.alpha_var.item(), rel=1e-6)
    assert torch.equal(algo.generator.get_state(), ref.generator.get_state())  # the same number of draws


def test_a_zero_power_is_refused_with_the_whole_message():
    message = (r"^FOCAL dml_power: 0 has no distance term; use -2 \(inverse square, the paper's\) or another nonzero "
               r"power$")
    with pytest.raises(ConfigError, match=message):
        FOCALConfig(dml_power=0.0)
    assert FOCALConfig(dml_power=1.0).dml_power == 1.0  # any other power is a config

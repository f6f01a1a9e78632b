"""FOCAL: Eq. 13's distance metric loss, the KL dual of BRAC, decoupled encoder training, where α·D goes."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mtrl.algos.focal import FOCAL, FOCALConfig, distance_metric_loss, kl_dual
from mtrl.errors import ConfigError
from mtrl.rl.batches import focal_sampler

K, OBS, ACT = 3, 4, 2
D = 2 * OBS + ACT + 1
TINY = FOCALConfig(z_dim=3, encoder_hidden=(16,), hidden=(32, 32), discriminator_hidden=(16,), batch_size=16,
                   context_size=8, discriminator_steps=2)


def make(seed=0, **overrides):
    torch.manual_seed(seed)
    return FOCAL(dataclasses.replace(TINY, **overrides), OBS, ACT, 1.0, "cpu")


def make_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    n = TINY.batch_size
    batch = {"observations": torch.randn(K, n, OBS, generator=g),
             "next_observations": torch.randn(K, n, OBS, generator=g),
             "actions": torch.rand(K, n, ACT, generator=g) * 2 - 1,
             "rewards": torch.randn(K, n, generator=g),
             "terminals": (torch.rand(K, n, generator=g) < 0.1).float(),
             "context": torch.randn(K, 2, TINY.context_size, D, generator=g)}
    batch["context"][..., -1] += torch.arange(K)[:, None, None] * 3.0  # tasks told apart by their rewards
    return batch


def test_distance_metric_loss_known_answer():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    z_same = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    same = (1.0 + 0.0) / 2  # ‖z_i − z'_i‖² averaged over the tasks
    loss, distance = distance_metric_loss(z, z_same, power=-2, beta=2.0, epsilon=0.1)
    assert distance.item() == pytest.approx(5.0)
    assert loss.item() == pytest.approx(same + 2.0 / (25 + 0.1))  # inverse square: β / (d² + ε)
    loss, _ = distance_metric_loss(z, z_same, power=-1, beta=1.0, epsilon=0.1)
    assert loss.item() == pytest.approx(same + 1.0 / (5 + 0.1))
    loss, _ = distance_metric_loss(z, z_same, power=2, beta=1.0, epsilon=0.1)
    assert loss.item() == pytest.approx(same - 25.0)  # a positive power pulls different tasks apart by -β d^n


def test_distance_metric_loss_averages_over_pairs_of_different_tasks():
    z = torch.tensor([[0.0], [1.0], [3.0]])
    loss, distance = distance_metric_loss(z, z.clone(), power=-1, beta=1.0, epsilon=0.0)
    assert distance.item() == pytest.approx((1 + 3 + 2) / 3)
    assert loss.item() == pytest.approx((1 / 1 + 1 / 3 + 1 / 2) / 3)


def test_kl_dual_at_the_true_density_ratio_is_the_kl():
    """E_{a~p, a'~b}[D] = E_p[log r] − E_b[r] + 1 is at most KL(p ‖ b), with equality at r = p/b (discrete actions,
    the discriminator a table of logits)."""
    p, b = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)

    def expected_estimate(ratio):
        logits = torch.log(torch.expm1(ratio))  # softplus(logits) = ratio
        return (p[:, None] * b[None, :] * kl_dual(logits[:, None], logits[None, :])).sum().item()

    kl = (p * (p / b).log()).sum().item()
    assert expected_estimate(p / b) == pytest.approx(kl, rel=1e-6)
    assert expected_estimate(p / b * 1.3) < kl and expected_estimate(torch.ones(3, dtype=torch.float64)) < kl


def test_every_update_is_finite_and_the_encoder_separates_tasks():
    algo = make()
    batch = make_batch()
    first = algo.update(batch)
    for _ in range(60):
        metrics = algo.update(batch)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["dml"] < first["dml"] and metrics["task_distance"] > first["task_distance"]


@pytest.mark.parametrize("coupled", [False, True])
def test_only_the_distance_metric_loss_trains_the_encoder_unless_coupled(coupled):
    """With the DML weight at 0, a decoupled encoder must not move: no Bellman gradient reaches it."""
    algo = make(coupled=coupled, dml_weight=0.0)
    before = [p.clone() for p in algo.encoder.parameters()]
    algo.update(make_batch())
    moved = any(not torch.equal(a, b) for a, b in zip(before, algo.encoder.parameters(), strict=True))
    assert moved == coupled


def test_alpha_enters_the_value_target_or_the_actor_loss():
    batch = make_batch()

    def first_update(regularisation, alpha):
        return make(regularisation=regularisation, alpha=alpha).update(batch)

    policy0, policy9 = first_update("policy", 0.0), first_update("policy", 9.0)
    value0, value9 = first_update("value", 0.0), first_update("value", 9.0)
    assert policy0 == value0  # α = 0: the two forms are the same algorithm
    assert policy9["critic_loss"] == policy0["critic_loss"] and policy9["actor_loss"] != policy0["actor_loss"]
    assert value9["critic_loss"] != value0["critic_loss"]


def test_acting_uses_the_mean_embedding_of_the_context():
    algo = make()
    rows = np.random.default_rng(0).normal(size=(5, D)).astype(np.float32)
    z = algo.sample_z(rows)
    expected = torch.tanh(algo.encoder.net(torch.as_tensor(rows))).mean(0).detach().numpy()
    np.testing.assert_allclose(z, expected, rtol=1e-6)
    assert np.array_equal(algo.sample_z(None), np.zeros(TINY.z_dim, np.float32))  # no context: the centre
    mean, var = algo.posterior(rows)
    assert np.array_equal(mean, z) and not var.any()
    actions = algo.act(np.zeros((4, OBS), np.float32), z)
    assert actions.shape == (4, ACT) and np.abs(actions).max() <= 1.0


def test_sampler_draws_two_context_sets_of_each_task_from_its_own_data():
    datasets = [{"observations": np.full((50, OBS), t, np.float32), "actions": np.zeros((50, ACT), np.float32),
                 "next_observations": np.full((50, OBS), t, np.float32), "rewards": np.arange(50, dtype=np.float32),
                 "terminals": np.zeros(50, np.float32), "timeouts": np.zeros(50, bool)} for t in range(K)]
    batch = focal_sampler(datasets, TINY)(np.random.default_rng(0))
    context = batch["context"]
    assert context.shape == (K, 2, TINY.context_size, D)
    assert all((context[t, :, :, 0] == t).all() for t in range(K))  # task t's rows only
    assert not np.array_equal(context[:, 0], context[:, 1])  # two independent draws


def test_a_zero_power_is_a_config_error():
    with pytest.raises(ConfigError, match="dml_power"):
        FOCALConfig(dml_power=0.0)


# ---------------------------------------------------------------- FOCAL's code's choices, as options


def test_reference_dml_form_known_answer():
    """FOCAL's code (`z_loss`): distances are root mean squares over z's coordinates, and a same-task pair costs
    sqrt(d² + 1e-3) rather than d²; the reported spread stays Euclidean."""
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    z_same = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    loss, distance = distance_metric_loss(z, z_same, power=-2, beta=1.0, epsilon=0.1, form="reference")
    same = (math.sqrt(1 / 2 + 1e-3) + math.sqrt(1e-3)) / 2
    assert distance.item() == pytest.approx(5.0)
    assert loss.item() == pytest.approx(same + 1.0 / (25 / 2 + 0.1))


def test_trained_alpha_takes_the_dual_step_towards_the_target_divergence():
    algo = make(train_alpha=True, alpha=5.0, alpha_lr=2.0, target_divergence=0.05)
    metrics = algo.update(make_batch())
    assert metrics["alpha"] == 5.0  # the update used the α it started with
    assert algo.alpha_var.item() == pytest.approx(5.0 + 2.0 * (metrics["divergence"] - 0.05), rel=1e-6)
    resumed = make(train_alpha=True, alpha=5.0, seed=7)
    resumed.load_state_dict(algo.state_dict())  # α is part of a resumable state
    assert resumed.alpha_var.item() == algo.alpha_var.item()
    assert "alpha_var" not in make().state_dict()  # a fixed α adds nothing to the checkpoint


def test_trained_alpha_is_used_clipped_to_zero_and_alpha_max():
    batch = make_batch()
    fixed = make(alpha=3.0).update(batch)
    clipped = make(train_alpha=True, alpha=10.0, alpha_max=3.0).update(batch)
    assert clipped == fixed  # the same losses: α = min(10, alpha_max) was used
    algo = make(train_alpha=True, alpha=-1.0)
    assert algo.update(batch)["alpha"] == 0.0 and algo.alpha_var.item() < 0  # stored unclipped, used ≥ 0
    assert make(alpha=0.0).update(batch)["actor_loss"] == make(train_alpha=True, alpha=-1.0).update(batch)[
        "actor_loss"]


def test_regularisation_none_is_soft_actor_critic_without_the_divergence():
    batch = make_batch()
    none = make(regularisation="none", alpha=9.0).update(batch)
    unweighted = make(regularisation="policy", alpha=0.0).update(batch)
    assert {k: v for k, v in none.items() if k != "alpha"} == {k: v for k, v in unweighted.items() if k != "alpha"}


def test_context_without_next_obs_reads_state_action_and_reward_only():
    algo = make(context_next_obs=False)
    assert algo.encoder.net[0].in_features == OBS + ACT + 1
    rows = torch.randn(5, D)
    other_next = rows.clone()
    other_next[:, OBS + ACT: 2 * OBS + ACT] += 1.0  # s' differs
    other_reward = rows.clone()
    other_reward[:, -1] += 1.0
    z = algo.encoder.embed(rows)
    assert torch.equal(algo.encoder.embed(other_next), z)
    assert not torch.equal(algo.encoder.embed(other_reward), z)
    assert not torch.equal(make().encoder.embed(other_next), make().encoder.embed(rows))  # default: s' is read
    assert math.isfinite(algo.update(make_batch())["dml"])


def test_discriminator_learning_rate_defaults_to_lr():
    assert make().discriminator_opt.param_groups[0]["lr"] == TINY.lr
    algo = make(discriminator_lr=1e-4)
    assert algo.discriminator_opt.param_groups[0]["lr"] == 1e-4 and algo.actor_opt.param_groups[0]["lr"] == TINY.lr

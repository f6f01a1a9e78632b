"""SAC (mtrl.algos.sac): acting, learning signals, targets, checkpoints, MBML App. J options, imitation, and the
task axis (T tasks trained as one model = T independent single-task SACs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtrl.algos.sac import SAC, SACConfig, imitate
from mtrl.nn import TanhGaussianActor, mlp, to_numpy_tree, to_torch_tree

OBS, ACT, B = 5, 3, 32
TINY = {"actor_hidden": (32, 32), "critic_hidden": (32, 32), "batch_size": B}
APP_J = {"separate_critic_batches": True, "identical_critic_init": True, "target_policy": True}


def make_sac(
    seed: int = 0, max_action: float = 1.0, condition: torch.Tensor | None = None, **overrides
) -> SAC:
    return SAC(SACConfig(**{**TINY, **overrides}), OBS, ACT, max_action, "cpu", critic_condition=condition,
               seeds=[seed])


def make_batch(seed: int, terminal: bool = False, tasks: int = 1) -> dict[str, torch.Tensor]:
    """A random mini-batch with a leading task axis: [tasks, B, ...]."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(tasks, B, OBS, generator=g)
    return {
        "observations": obs,
        "actions": torch.rand(tasks, B, ACT, generator=g) * 2 - 1,
        "rewards": torch.randn(tasks, B, generator=g),
        "next_observations": obs + 0.1 * torch.randn(tasks, B, OBS, generator=g),
        "terminals": torch.ones(tasks, B) if terminal else (torch.rand(tasks, B, generator=g) < 0.1).float(),
    }


def batches_for(sac: SAC, seed: int) -> list[dict[str, torch.Tensor]]:
    return [make_batch(seed + i) for i in range(sac.batches_per_update)]


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_act_shapes_bounds_and_determinism():
    sac = make_sac(max_action=2.0)
    obs = np.random.default_rng(0).standard_normal((1, 64, OBS)).astype(np.float32)  # [tasks, N, obs]
    single, batch = sac.act(obs[:, 0], deterministic=False), sac.act(obs, deterministic=False)
    assert single.shape == (1, ACT) and batch.shape == (1, 64, ACT)
    assert single.dtype == np.float32 and batch.dtype == np.float32
    assert np.all(np.abs(batch) <= 2.0)
    assert np.array_equal(sac.act(obs, deterministic=True), sac.act(obs, deterministic=True))
    assert not np.array_equal(sac.act(obs, deterministic=False), sac.act(obs, deterministic=False))
    # The deterministic action is the tanh of the Gaussian mean, as in the actor's own forward.
    expected = sac.actor(torch.from_numpy(obs), deterministic=True)[0].detach().numpy()
    np.testing.assert_allclose(sac.act(obs, deterministic=True), expected, atol=1e-6)
    # float64 input (what some environments return) is accepted.
    assert sac.act(obs[:, 0].astype(np.float64), deterministic=True).shape == (1, ACT)
    with pytest.raises(ValueError, match="tasks=1"):
        sac.act(obs[0, 0], deterministic=True)  # no task axis


def test_act_takes_one_observation_per_task():
    """[tasks, obs_dim] is one observation per task (not one batch every task's network sees)."""
    sac = SAC(SACConfig(**TINY), OBS, ACT, 1.0, "cpu", tasks=3, seeds=[0, 1, 2])
    obs = np.random.default_rng(0).standard_normal((3, OBS)).astype(np.float32)
    per_task = sac.act(obs, deterministic=True)
    assert per_task.shape == (3, ACT)
    np.testing.assert_array_equal(per_task, sac.act(obs[:, None], deterministic=True)[:, 0])


def test_update_returns_per_task_metrics_on_the_device():
    sac = SAC(SACConfig(**TINY), OBS, ACT, 1.0, "cpu", tasks=2, seeds=[0, 1])
    metrics = sac.update(make_batch(0, tasks=2))
    assert set(metrics) == {"q1_loss", "q2_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean"}
    for value in metrics.values():
        assert isinstance(value, torch.Tensor) and value.shape == (2,) and not value.requires_grad
        assert torch.isfinite(value).all()
    with pytest.raises(ValueError, match="task axis of 2"):
        sac.update(make_batch(0, tasks=1))


def test_critics_learn_a_one_step_bandit():
    """Every transition is terminal, so the optimal Q is the reward itself: r(s, a) = s·w + a·v."""
    sac = make_sac(critic_lr=3e-3)
    batch = make_batch(0, terminal=True)
    g = torch.Generator().manual_seed(1)
    batch["rewards"] = batch["observations"] @ torch.randn(OBS, generator=g) + batch["actions"] @ torch.randn(
        ACT, generator=g
    )  # [1, B]
    first = sac.update(batch)
    for _ in range(300):
        last = sac.update(batch)
    assert last["q1_loss"] < 0.05 * first["q1_loss"] and last["q2_loss"] < 0.05 * first["q2_loss"]
    x = torch.cat([batch["observations"], batch["actions"]], -1)
    q = sac.critic(x).detach()
    assert q.shape == (1, 2, B)
    assert torch.allclose(q, batch["rewards"][:, None].expand(-1, 2, -1), atol=0.3)


@pytest.mark.parametrize("target_entropy, direction", [(-100.0, -1), (100.0, 1)])
def test_temperature_follows_the_entropy_target(target_entropy, direction):
    """α falls when the policy is more random than the target and rises when it is less."""
    sac = make_sac(target_entropy=target_entropy, init_alpha=0.5)
    before = sac.log_alpha.item()
    for seed in range(3):
        sac.update(make_batch(seed))
    assert np.sign(sac.log_alpha.item() - before) == direction


def test_default_target_entropy_is_minus_action_dim():
    assert make_sac().target_entropy == -ACT


@pytest.mark.parametrize("overrides", [{}, APP_J], ids=["sac", "app_j"])
def test_targets_move_by_their_rates(overrides):
    sac = make_sac(tau=0.05, policy_tau=0.3, **overrides)
    for seed in range(2):  # make online and target weights differ first
        sac.update(*batches_for(sac, seed))
    critic_before = params(sac.critic_target)
    actor_before = params(sac.actor_target) if sac.actor_target is not None else None
    sac.update(*batches_for(sac, 10))
    for old, new, online in zip(
        critic_before, sac.critic_target.parameters(), sac.critic.parameters(), strict=True
    ):
        assert torch.allclose(new, old + 0.05 * (online - old), atol=1e-7)
        assert not torch.equal(new, old)
    if actor_before is not None:
        for old, new, online in zip(
            actor_before, sac.actor_target.parameters(), sac.actor.parameters(), strict=True
        ):
            assert torch.allclose(new, old + 0.3 * (online - old), atol=1e-7)


def _is_plain(tree) -> bool:
    """Only tensors and what the artifact tree stores without pickle (dict keys may be ints: optimiser states)."""
    if isinstance(tree, dict):
        return all(isinstance(k, (str, int)) and _is_plain(v) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return all(_is_plain(v) for v in tree)
    return tree is None or isinstance(tree, (torch.Tensor, bool, int, float, str))


@pytest.mark.parametrize("overrides", [{}, APP_J], ids=["sac", "app_j"])
def test_state_dict_round_trip_resumes_bit_identically(overrides, same_state):
    original = make_sac(seed=0, **overrides)
    for seed in range(3):
        original.update(*batches_for(original, seed))
    state = original.state_dict()
    assert _is_plain(state)
    assert {"actor", "critic", "critic_target", "log_alpha", "actor_opt", "critic_opt", "alpha_opt"} <= set(
        state
    )

    resumed = make_sac(seed=1, **overrides)  # different initial weights and generator
    resumed.load_state_dict(to_torch_tree(to_numpy_tree(state)))  # as if stored in and read from HDF5
    for seed in range(3, 6):
        mine, theirs = original.update(*batches_for(original, seed)), resumed.update(*batches_for(resumed, seed))
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert same_state(original, resumed)  # networks, targets (the target policy too), log α, optimisers, generator
    obs = np.zeros((1, OBS), dtype=np.float32)
    assert np.array_equal(original.act(obs, deterministic=False), resumed.act(obs, deterministic=False))


def test_state_dict_is_a_snapshot():
    sac = make_sac()
    state = sac.state_dict()
    snapshot = state["critic"]["layers.0.weight"].clone()
    sac.update(make_batch(0))
    assert torch.equal(state["critic"]["layers.0.weight"], snapshot)


def _members_equal(sac: SAC) -> bool:
    return all(torch.equal(p[:, 0], p[:, 1]) for p in sac.critic.parameters())


def test_identical_critic_init():
    assert _members_equal(make_sac(identical_critic_init=True))
    assert not _members_equal(make_sac(identical_critic_init=False))


def test_separate_critic_batches_make_identical_critics_diverge():
    """Identical critics trained on the same batches stay identical (twin Q gains nothing): App. J's reason
    for giving each its own batch."""
    same = make_sac(identical_critic_init=True)
    separate = make_sac(identical_critic_init=True, separate_critic_batches=True)
    assert (same.batches_per_update, separate.batches_per_update) == (1, 2)
    for seed in range(3):
        same.update(make_batch(seed))
        separate.update(make_batch(seed), make_batch(seed + 100))
    assert _members_equal(same)
    assert not _members_equal(separate)


def test_update_checks_the_number_of_batches():
    with pytest.raises(ValueError, match="2 batch"):
        make_sac(separate_critic_batches=True).update(make_batch(0))
    with pytest.raises(ValueError, match="1 batch"):
        make_sac().update(make_batch(0), make_batch(1))


def test_init_critics_from_distilled_q():
    z = torch.randn(4, requires_grad=True)  # as inferred by an encoder
    q_d = mlp(OBS + ACT + z.numel(), TINY["critic_hidden"], 1)
    sac = make_sac(condition=z)
    sac.init_critics_from(q_d.state_dict())
    batch = make_batch(0)
    s, a = batch["observations"], batch["actions"]
    x = torch.cat([s, a, z.expand(1, B, -1)], -1)  # input order of Q_D: [s, a, z]
    expected = q_d(x[0]).squeeze(-1)
    for critic in (sac.critic, sac.critic_target):
        q = critic(x)
        assert q.shape == (1, 2, B)
        assert torch.allclose(q, expected.expand(1, 2, -1), atol=1e-5)
    sac.update(batch)  # the condition is appended inside update too
    assert z.grad is None  # z is a fixed input: no gradient flows back to the encoder


def test_init_critics_from_rejects_a_mismatched_state():
    sac = make_sac(condition=torch.randn(4))
    with pytest.raises(ValueError, match="shape"):
        sac.init_critics_from(mlp(OBS + ACT, TINY["critic_hidden"], 1).state_dict())  # no z input
    with pytest.raises(ValueError, match="linear layers"):
        sac.init_critics_from(mlp(OBS + ACT + 4, (32, 32, 32), 1).state_dict())


def _imitation_data():
    torch.manual_seed(0)
    teacher = mlp(OBS, (16,), ACT)
    obs = torch.randn(512, OBS)
    with torch.no_grad():
        actions = 2.0 * torch.tanh(teacher(obs))
    return obs, actions


def _imitate(seed: int):
    obs, actions = _imitation_data()
    torch.manual_seed(1)
    student = TanhGaussianActor(OBS, ACT, (64, 64), max_action=2.0)
    g = torch.Generator().manual_seed(seed)
    losses = imitate(student, obs, actions, steps=500, batch_size=128, lr=1e-3, generator=g)
    return student, losses


def test_imitate_reproduces_the_teachers_actions():
    obs, actions = _imitation_data()
    student, losses = _imitate(seed=0)
    assert len(losses) == 500 and all(isinstance(v, float) for v in losses)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 5.0
    with torch.no_grad():
        predicted = student(obs, deterministic=True)[0]
    assert (predicted - actions).abs().mean() < 0.05
    assert _imitate(seed=0)[1] == losses  # deterministic given the seeds


def test_init_actor_from_sets_actor_and_target_policy():
    student = TanhGaussianActor(OBS, ACT, TINY["actor_hidden"], max_action=2.0)
    sac = make_sac(max_action=2.0, target_policy=True)
    sac.init_actor_from(student.state_dict())
    linears = [m for m in student.net if isinstance(m, torch.nn.Linear)]
    for module in (sac.actor, sac.actor_target):  # an ensemble of one: weights [1, in, out], biases [1, 1, out]
        for layer, linear in zip(module.net.layers, linears, strict=True):
            assert torch.equal(layer.weight[0], linear.weight.t()) and torch.equal(layer.bias[0, 0], linear.bias)
    obs = np.random.default_rng(0).standard_normal((8, OBS)).astype(np.float32)
    expected = student(torch.from_numpy(obs), deterministic=True)[0].detach().numpy()
    np.testing.assert_allclose(sac.act(obs[None], deterministic=True)[0], expected, atol=1e-6)


def test_damped_policy_moves_the_actor_by_policy_tau():
    """Reference sac-init: after one update the online policy is the Polyak mix (1 − τ)·old + τ·updated of its
    weights before the step and the weights the plain update would give; the target policy equals it."""
    damped = make_sac(**APP_J, damped_policy=True, policy_tau=0.1)
    plain = make_sac(**APP_J)  # same seed: same weights, same generator, so the same gradient steps
    before = params(damped.actor)
    damped.update(*batches_for(damped, 5))
    plain.update(*batches_for(plain, 5))
    for old, updated, mixed, target in zip(before, params(plain.actor), params(damped.actor),
                                           params(damped.actor_target), strict=True):
        assert not torch.equal(updated, old)
        torch.testing.assert_close(mixed, 0.9 * old + 0.1 * updated)
        torch.testing.assert_close(target, mixed, rtol=0, atol=0)


def test_damped_policy_needs_a_target_policy():
    with pytest.raises(ValueError, match="target_policy"):
        make_sac(damped_policy=True)


# ---------------------------------------------------------------- the task axis

def _as_task(batch: dict[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
    return {k: v[t : t + 1] for k, v in batch.items()}


@pytest.mark.parametrize("overrides", [{}, {**APP_J, "damped_policy": True}], ids=["sac", "app_j"])
def test_two_tasks_in_one_model_train_as_two_independent_sacs(overrides):
    """The task axis: a 2-task SAC fed task 0's and task 1's batches ends bit for bit where two single-task SACs
    with the same seeds, conditions, initial networks and batches end: weights, targets, log α, Adam moments,
    generators, every step's metrics and the actions drawn afterwards. Tasks that shared a gradient, a noise
    draw, a seed or a loss scale (a mean over tasks instead of a sum) fail, and so does the fused Adam
    (`elementwise_adam`); B·ACT = 96 per task, a multiple of 32 (`mtrl.algos.sac`: softplus)."""
    cfg = SACConfig(**{**TINY, **overrides})
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    q_ds = [mlp(OBS + ACT + 4, TINY["critic_hidden"], 1) for _ in range(2)]
    students = [TanhGaussianActor(OBS, ACT, TINY["actor_hidden"], max_action=2.0) for _ in range(2)]
    both = SAC(cfg, OBS, ACT, 2.0, "cpu", critic_condition=z, tasks=2, seeds=[11, 22])
    singles = [SAC(cfg, OBS, ACT, 2.0, "cpu", critic_condition=z[t], seeds=[seed]) for t, seed in enumerate((11, 22))]
    if overrides:  # sac-init: each task from its own imitated actor and (here distinct) Q_D
        both.init_critics_from([q.state_dict() for q in q_ds])
        both.init_actor_from([s.state_dict() for s in students])
        for t, single in enumerate(singles):
            single.init_critics_from(q_ds[t].state_dict())
            single.init_actor_from(students[t].state_dict())

    exact = {"rtol": 0, "atol": 0}
    for step in range(6):
        batches = [make_batch(10 * step + k, tasks=2) for k in range(both.batches_per_update)]
        joint = both.update(*batches)
        for t, single in enumerate(singles):
            alone = single.update(*(_as_task(b, t) for b in batches))
            for key, value in joint.items():
                assert value.shape == (2,)
                torch.testing.assert_close(value[t : t + 1], alone[key], **exact)
    for t, single in enumerate(singles):
        torch.testing.assert_close(to_torch_tree(to_numpy_tree(both.task_states()[t])),
                                   to_torch_tree(to_numpy_tree(single.state_dict())), **exact)
    obs = np.random.default_rng(1).standard_normal((2, OBS)).astype(np.float32)
    together = both.act(obs, deterministic=False)  # each task's noise from its own generator
    for t, single in enumerate(singles):
        np.testing.assert_array_equal(together[t], single.act(obs[t : t + 1], deterministic=False)[0])
    assert not torch.equal(both.actor.net.layers[0].weight[0], both.actor.net.layers[0].weight[1])
    assert not torch.equal(both.log_alpha[0], both.log_alpha[1])  # each task's α follows its own entropy


def test_task_states_are_single_task_checkpoints(same_state):
    """A task-batched SAC splits into single-task checkpoints (what `collect` writes and `evaluate` loads) and
    joins them again."""
    both = SAC(SACConfig(**TINY, **APP_J), OBS, ACT, 1.0, "cpu", tasks=2, seeds=[3, 4])
    for seed in range(2):
        both.update(*(make_batch(seed + k, tasks=2) for k in range(both.batches_per_update)))
    states = [to_torch_tree(to_numpy_tree(s)) for s in both.task_states()]
    alone = make_sac(seed=0, **APP_J)
    alone.load_state_dict(states[1])
    torch.testing.assert_close(alone.log_alpha, both.log_alpha[1:], rtol=0, atol=0)
    obs = np.zeros((2, OBS), np.float32)
    np.testing.assert_array_equal(alone.act(obs[1:], deterministic=True)[0], both.act(obs, deterministic=True)[1])
    joined = SAC(SACConfig(**TINY, **APP_J), OBS, ACT, 1.0, "cpu", tasks=2, seeds=[5, 6])
    joined.load_task_states(states)
    assert same_state(joined, both)


def test_critic_condition_needs_one_row_per_task():
    with pytest.raises(ValueError, match="tasks=2"):
        SAC(SACConfig(**TINY), OBS, ACT, 1.0, "cpu", critic_condition=torch.zeros(4), tasks=2)

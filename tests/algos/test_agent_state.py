"""The one checkpoint protocol (`mtrl.nn.AgentState`) on every algorithm, the seeded generator and the one
tanh-Gaussian (`TanhGaussianActor.sample`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtrl.algos.batch_pearl import BatchPEARL, BatchPEARLConfig
from mtrl.algos.bcq import BCQ, BCQConfig, BCQPolicy
from mtrl.algos.contextual_bcq import ContextualBCQ, ContextualBCQConfig
from mtrl.algos.ensemble import EnsembleConfig, EnsembleRegressor
from mtrl.algos.focal import FOCAL, FOCALConfig
from mtrl.algos.mbml import MBML, MBMLConfig
from mtrl.algos.sac import SAC, SACConfig
from mtrl.nn import (
    TanhGaussianActor,
    TaskBatchedState,
    seeded_generator,
    split_tasks,
    stack_tasks,
    to_numpy_tree,
    to_torch_tree,
)

OBS, ACT, MAX_ACTION = 3, 2, 1.0
H = (8,)
BCQ_CFG = BCQConfig(actor_hidden=H, critic_hidden=H, vae_hidden=H)
CONFIGS = {
    "bcq": BCQ_CFG,
    "contextual-bcq": ContextualBCQConfig(z_dim=2, encoder_hidden=H, critic_hidden=H, vae_hidden=H, actor_hidden=H),
    "batch-pearl": BatchPEARLConfig(z_dim=2, encoder_hidden=H, hidden=H),
    "focal": FOCALConfig(z_dim=2, encoder_hidden=H, hidden=H, discriminator_hidden=H),
    "sac": SACConfig(actor_hidden=H, critic_hidden=H),
    "sac-app-j": SACConfig(actor_hidden=H, critic_hidden=H, target_policy=True, separate_critic_batches=True),
    "mbml": MBMLConfig(z_dim=2, encoder_hidden=H, q_hidden=H, g_hidden=H, xi_hidden=H),
    "ensemble": EnsembleConfig(members=2, hidden=H),
}


def make(name: str, seed: int):
    torch.manual_seed(seed)
    cfg = CONFIGS[name]
    if name == "mbml":
        return MBML(cfg, OBS, ACT, MAX_ACTION, BCQPolicy(BCQ_CFG, OBS, ACT, MAX_ACTION, "cpu"), "cpu")
    if name == "ensemble":
        return EnsembleRegressor(cfg, OBS + ACT, 1, "cpu")
    cls = {"bcq": BCQ, "contextual-bcq": ContextualBCQ, "batch-pearl": BatchPEARL, "focal": FOCAL, "sac": SAC,
           "sac-app-j": SAC}[name]
    return cls(cfg, OBS, ACT, MAX_ACTION, "cpu")


def optimiser_steps(agent, steps: int = 2) -> None:
    """Move every optimiser (and so its parameters and moments) without knowing the algorithm's batches."""
    for _ in range(steps):
        for name in agent.TRAINING_PARTS:
            opt = getattr(agent, name)
            if isinstance(opt, torch.optim.Optimizer):
                params = [p for group in opt.param_groups for p in group["params"]]
                opt.zero_grad(set_to_none=True)
                sum((p - 0.1).pow(2).sum() for p in params).backward()
                opt.step()
    for generator in agent.generators if isinstance(agent, TaskBatchedState) else [agent.generator]:
        torch.randn(3, generator=generator)  # and the generator(s)


ALGOS = list(CONFIGS)


@pytest.mark.parametrize("name", ALGOS)
def test_state_dict_is_the_declared_parts_and_the_generator_as_copies(name):
    agent = make(name, 0)
    optimiser_steps(agent)
    state = agent.state_dict()
    declared = [n for n in (*agent.NETWORKS, *agent.TRAINING_PARTS) if getattr(agent, n) is not None]
    generator_key = "generators" if isinstance(agent, TaskBatchedState) else "generator"
    assert list(state) == [*declared, generator_key]
    assert any(isinstance(getattr(agent, n), torch.optim.Optimizer) for n in declared)  # optimisers are in
    before = to_numpy_tree(state)
    optimiser_steps(agent)
    after = to_numpy_tree(state)  # the agent moved on; the state it gave out did not
    np.testing.assert_array_equal(after[generator_key], before[generator_key])
    for net in agent.NETWORKS:
        for key, value in before[net].items():
            np.testing.assert_array_equal(after[net][key], value)


@pytest.mark.parametrize("name", ALGOS)
def test_load_state_dict_restores_everything_through_an_artifact_round_trip(name, same_state):
    agent = make(name, 0)
    optimiser_steps(agent)
    other = make(name, 1)  # other weights, optimiser moments and generator
    other.load_state_dict(to_torch_tree(to_numpy_tree(agent.state_dict())))
    assert same_state(agent, other)
    optimiser_steps(agent)
    optimiser_steps(other)
    assert same_state(agent, other)  # and they go on identically


@pytest.mark.parametrize("name", ALGOS)
def test_policy_state_rebuilds_the_acting_networks(name):
    agent = make(name, 0)
    optimiser_steps(agent)
    state = to_torch_tree(to_numpy_tree(agent.policy_state_dict()))
    assert list(state) == [*agent.SIZES, *agent.NETWORKS]
    policy = type(agent).from_policy_state(agent.cfg, state, "cpu")
    for size in agent.SIZES:
        assert getattr(policy, size) == getattr(agent, size)
    for net in agent.NETWORKS:
        mine, theirs = getattr(agent, net).state_dict(), getattr(policy, net).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), net


def test_task_states_split_and_join_a_task_batched_agent(same_state):
    """Per-task checkpoints of a 2-task agent, loaded in swapped order, swap the tasks: every tensor (weights,
    targets, Adam moments, generators) was split on its task axis and nothing else."""
    agent = BCQ(BCQ_CFG, OBS, ACT, MAX_ACTION, "cpu", tasks=2, seeds=[1, 2])
    optimiser_steps(agent)
    first, second = agent.task_states()
    swapped = BCQ(BCQ_CFG, OBS, ACT, MAX_ACTION, "cpu", tasks=2, seeds=[3, 4])
    swapped.load_task_states([to_torch_tree(to_numpy_tree(second)), to_torch_tree(to_numpy_tree(first))])
    single = BCQ(BCQ_CFG, OBS, ACT, MAX_ACTION, "cpu", seeds=[5])
    single.load_state_dict(swapped.task_states()[1])
    alone = BCQ(BCQ_CFG, OBS, ACT, MAX_ACTION, "cpu", seeds=[6])
    alone.load_state_dict(first)
    assert same_state(single, alone)
    assert not torch.equal(swapped.actor.net.layers[0].weight[0], agent.actor.net.layers[0].weight[0])


def test_split_and_stack_tasks_are_inverse_and_keep_shared_scalars():
    tree = {"w": torch.arange(6.0).reshape(3, 2), "step": torch.tensor(4.0), "lr": 0.1, "groups": [np.ones((3, 1))]}
    parts = split_tasks(tree, 3)
    assert [p["w"].tolist() for p in parts] == [[[0.0, 1.0]], [[2.0, 3.0]], [[4.0, 5.0]]]
    assert all(p["step"] == 4.0 and p["lr"] == 0.1 and p["groups"][0].shape == (1, 1) for p in parts)
    joined = stack_tasks(parts)
    assert torch.equal(joined["w"], tree["w"]) and joined["groups"][0].shape == (3, 1)
    with pytest.raises(ValueError, match="task axis of 2"):
        split_tasks(tree, 2)


def test_seeded_generator_from_a_seed_or_from_torchs_global_generator():
    expected = torch.randn(4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.randn(4, generator=seeded_generator("cpu", 5)), expected)
    torch.manual_seed(0)
    first = torch.randn(4, generator=seeded_generator("cpu"))
    torch.manual_seed(0)
    assert torch.equal(torch.randn(4, generator=seeded_generator("cpu")), first)
    assert not torch.equal(torch.randn(4, generator=seeded_generator("cpu")), first)


def test_tanh_gaussian_sample():
    torch.manual_seed(0)
    actor = TanhGaussianActor(OBS, ACT, H, max_action=2.0)
    obs = torch.randn(64, OBS)
    mean, std = actor.distribution(obs)

    deterministic = actor.sample(obs, deterministic=True)
    torch.testing.assert_close(deterministic.action, 2.0 * torch.tanh(mean), rtol=0, atol=0)
    assert torch.equal(deterministic.mean, mean) and torch.equal(deterministic.std, std)

    drawn = actor.sample(obs, torch.Generator().manual_seed(3))
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn.action, torch.tanh(mean + std * noise) * 2.0)  # noise from the given generator only
    # Its log-probability is that of the squashed distribution, log N(u) − Σ log(1 − tanh²u) (the constant
    # −act_dim·log max_action of the scaling is left out, by `sample` and `log_prob` alike).
    u = mean + std * noise
    direct = torch.distributions.Normal(mean, std).log_prob(u).sum(-1) - torch.log1p(-torch.tanh(u) ** 2).sum(-1)
    torch.testing.assert_close(drawn.log_prob, direct, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(actor.log_prob(obs, drawn.action), drawn.log_prob, rtol=1e-3, atol=1e-3)

    without = actor.sample(obs, torch.Generator().manual_seed(3), with_log_prob=False)
    assert without.log_prob is None and torch.equal(without.action, drawn.action)
    action, log_prob = actor(obs, generator=torch.Generator().manual_seed(3))  # forward is the same draw
    assert torch.equal(action, drawn.action) and torch.equal(log_prob, drawn.log_prob)

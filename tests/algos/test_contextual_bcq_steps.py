"""Contextual BCQ's step pinned directly (issue 23, docs/mutation.md): which rows BCQ's update receives (each
task's transitions beside its own z_m, drawn with the agent's generator from q_ψ(z | c_m) and replayed here;
only the critic's copy of [s, z] attached to ψ), the metrics it reports, and the networks, optimisers and targets
(BCQ's own losses are pinned in test_bcq_steps.py)."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from test_contextual_bcq import ACT, MAX_ACTION, OBS, TINY, K, make_algo, make_data, sample
from written_out import alternating_terminals, optimised_ids

from mtrl.algos import contextual_bcq as module
from mtrl.algos.contextual_bcq import ContextualBCQ


def _record_bcq_step(monkeypatch) -> list:
    """Wrap the `bcq_step` Contextual BCQ calls: every call's arguments and metrics are kept."""
    calls = []
    original = module.bcq_step

    def recording(agent, *args, **kwargs):
        metrics = original(agent, *args, **kwargs)
        calls.append((args, kwargs, metrics))
        return metrics

    monkeypatch.setattr(module, "bcq_step", recording)
    return calls


def _terminal_batch(seed=0):
    batch = sample(make_data(), TINY, torch.Generator().manual_seed(seed))
    batch["terminals"] = alternating_terminals(K, TINY.batch_size)
    return batch


def _record_steps(algo) -> list:
    """Wrap the agent's `_step`: the batch it got, q_ψ and the generator state at its start, per call."""
    snapshots = []
    step = algo._step

    def recording(batch):
        snapshots.append((batch, copy.deepcopy(algo.encoder), algo.generator.get_state()))
        return step(batch)

    algo._step = recording
    return snapshots


@pytest.mark.parametrize("per_task_updates", [True, False])
def test_bcq_gets_each_tasks_rows_beside_its_own_z(monkeypatch, per_task_updates):
    """Alg. 7: per task m (or, as the official code, the K tasks together), one z_m ~ q_ψ(z | c_m) shared by task
    m's rows, beside s for the VAE, ξ and the critic and beside s' for the target; actions, rewards and
    terminals flattened in the same task-major order; only the critic's [s, z] carries ψ's gradient."""
    algo = make_algo(dataclasses.replace(TINY, per_task_updates=per_task_updates))
    batch = _terminal_batch()
    calls = _record_bcq_step(monkeypatch)
    snapshots = _record_steps(algo)
    metrics = algo.update(batch)

    groups = [[m] for m in range(K)] if per_task_updates else [list(range(K))]
    assert len(calls) == len(snapshots) == len(groups)
    for tasks, (args, kwargs, _), (sub, encoder, generator) in zip(groups, calls, snapshots, strict=True):
        for key, value in batch.items():
            assert torch.equal(sub[key], value[tasks]), key
        with torch.no_grad():  # z_m = μ_m + σ_m·ε with the draw of the agent's generator
            mean, var = encoder(batch["context"][tasks])
            z = mean + var.sqrt() * torch.randn(mean.shape, generator=torch.Generator().set_state(generator))
        rows = len(tasks) * TINY.batch_size
        zz = z[:, None].expand(-1, TINY.batch_size, -1)
        state = torch.cat([batch["observations"][tasks], zz], -1).reshape(1, rows, OBS + TINY.z_dim)
        next_state = torch.cat([batch["next_observations"][tasks], zz], -1).reshape(1, rows, OBS + TINY.z_dim)
        obs, actions, rewards, next_obs, terminals = args
        critic_obs = kwargs["critic_obs"]
        torch.testing.assert_close(obs, state, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(critic_obs.detach(), state, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(next_obs, next_state, rtol=1e-6, atol=1e-6)
        assert torch.equal(actions, batch["actions"][tasks].reshape(1, rows, ACT))
        assert torch.equal(rewards, batch["rewards"][tasks].reshape(1, rows))
        assert torch.equal(terminals, batch["terminals"][tasks].reshape(1, rows))
        assert not obs.requires_grad and not next_obs.requires_grad and critic_obs.requires_grad
        assert len(tasks) == 1 or not torch.allclose(z[0], z[1])  # the tasks' rows get their own z
    for key in metrics:  # floats: the one step's metrics, or their mean over the K steps of Alg. 7's loop
        assert isinstance(metrics[key], float), key
        assert metrics[key] == pytest.approx(np.mean([float(c[2][key][0]) for c in calls]), rel=1e-6), key


def test_networks_optimisers_and_targets_are_bcqs_on_the_augmented_state():
    """Every BCQ network takes [s, z] with the configured widths; the critic optimiser holds the critics and q_ψ
    (Alg. 7 lines 12 and 14), the others their own network; the targets start as copies and are frozen."""
    cfg = dataclasses.replace(TINY, latent_dim=5, encoder_hidden=(6,), critic_hidden=(7,), vae_hidden=(8,),
                              actor_hidden=(9,), phi=0.3)
    algo = ContextualBCQ(cfg, OBS, ACT, MAX_ACTION, "cpu")
    state = OBS + cfg.z_dim
    assert algo.vae.latent_dim == 5 and algo.context_dim == 2 * OBS + ACT + 1
    assert [m.out_features for m in algo.encoder.net if isinstance(m, torch.nn.Linear)] == [6, 2 * cfg.z_dim]
    widths = {"critic q1": (algo.critic.q1_net, [state + ACT, 7, 1]),
              "critic q2": (algo.critic.q2_net, [state + ACT, 7, 1]),
              "vae encoder": (algo.vae.encoder, [state + ACT, 8, 10]),
              "vae decoder": (algo.vae.decoder, [state + 5, 8, ACT]),
              "actor": (algo.actor.net, [state + ACT, 9, ACT])}
    for name, (net, expected) in widths.items():
        assert [layer.in_dim for layer in net.layers] + [net.layers[-1].out_dim] == expected, name
        assert net.layers[0].members == 1, name  # one network for every task
    assert (algo.actor.phi, algo.actor.max_action, algo.vae.max_action) == (0.3, MAX_ACTION, MAX_ACTION)
    assert isinstance(algo.max_action, float) and algo.device == torch.device("cpu")

    assert optimised_ids(algo.critic_opt) == [id(p) for p in (*algo.critic.parameters(), *algo.encoder.parameters())]
    assert optimised_ids(algo.actor_opt) == [id(p) for p in algo.actor.parameters()]
    assert optimised_ids(algo.vae_opt) == [id(p) for p in algo.vae.parameters()]
    for net, target in ((algo.actor, algo.actor_target), (algo.critic, algo.critic_target)):
        assert not any(p.requires_grad for p in target.parameters())
        assert all(torch.equal(a, b) for a, b in zip(net.parameters(), target.parameters(), strict=True))

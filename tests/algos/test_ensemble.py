"""Vectorised regression ensembles: independent members, fitting, uncertainty, checkpoints, Alg. 3, and the
task axis (T tasks' ensembles trained as one model = T independent single-task ensembles)."""

import dataclasses

import numpy as np
import pytest
import torch

from mtrl.algos.ensemble import EnsembleConfig, EnsembleRegressor, relabel_with_ensemble
from mtrl.nn import to_numpy_tree, to_torch_tree

TINY = EnsembleConfig(members=5, hidden=(32, 32), lr=3e-3, batch_size=128, steps=600, holdout_fraction=0.2)


def grid_data():
    """r = sin(x) + a² on a 60 × 40 grid of (x, a) ∈ [−3, 3] × [−1, 1]."""
    x, a = np.meshgrid(np.linspace(-3, 3, 60), np.linspace(-1, 1, 40), indexing="ij")
    inputs = torch.tensor(np.stack([x.ravel(), a.ravel()], -1), dtype=torch.float32)
    return inputs, torch.sin(inputs[:, 0]) + inputs[:, 1] ** 2


def make(cfg=TINY, in_dim=2, out_dim=1, seed=0):
    return EnsembleRegressor(cfg, in_dim, out_dim, "cpu", seeds=[seed])


def fitted():
    ensemble = make()
    inputs, targets = grid_data()
    (metrics,) = ensemble.fit(inputs, targets)
    return ensemble, metrics


def test_members_start_different_and_fit_a_known_function():
    ensemble = make()
    first = ensemble.model.net.layers[0].weight
    assert all(not torch.equal(first[0], first[i]) for i in range(1, TINY.members))

    ensemble, metrics = fitted()
    assert metrics["holdout_mse"] < 0.01 and metrics["holdout_member_mse"] < 0.02, metrics
    inputs, targets = grid_data()
    members = ensemble.model(inputs).detach()[0]  # every member's prediction (task 0 of 1)
    assert members.shape == (TINY.members, len(inputs), 1)
    # Each member fits on its own...
    assert ((members[..., 0] - targets) ** 2).mean(1).max() < 0.02
    # ...and off the data, where nothing ties them together, they disagree far more than on it.
    _, std_on = ensemble.predict(inputs)
    far = torch.tensor([[30.0, 10.0], [-40.0, -8.0], [0.0, 25.0]])
    _, std_off = ensemble.predict(far)
    assert std_off.shape == (1, 3, 1)
    assert std_off.min() > 10 * std_on.mean()


def test_std_vanishes_where_members_agree():
    ensemble = make()
    ensemble.set_normalizer(*grid_data())
    with torch.no_grad():
        for p in ensemble.model.net.parameters():
            p.copy_(p[:1].expand_as(p))  # every member becomes member 0
    inputs = torch.randn(100, 2) * 5
    mean, std = ensemble.predict(inputs)
    assert mean.shape == std.shape == (1, 100, 1)
    assert std.abs().max() < 1e-6
    torch.testing.assert_close(mean[0], ensemble.model(inputs)[0, 0].detach())


def test_next_state_ensemble_predicts_the_state_not_the_difference():
    cfg = dataclasses.replace(TINY, predict_delta=True, steps=800, holdout_fraction=0.0)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(2000, 3, generator=g) * 10  # large states, small steps: the difference is learnt
    act = torch.rand(2000, 1, generator=g) * 2 - 1
    next_obs = obs + 0.1 * torch.cat([act, act**2, torch.tanh(obs[:, 1:2] / 10) * act], -1)
    ensemble = make(cfg, in_dim=4, out_dim=3)
    inputs = torch.cat([obs, act], -1)
    ensemble.fit(inputs, next_obs)
    mean, _ = ensemble.predict(inputs)
    assert (mean[0] - next_obs).abs().mean() < 0.02 * (next_obs - obs).abs().mean() + 0.01
    assert ensemble.evaluate(inputs, next_obs)[0]["mse"] < 1e-3


def test_state_dict_round_trip_keeps_normalisation_and_resumes_identically():
    ensemble, _ = fitted()
    stored = to_numpy_tree(ensemble.state_dict())
    inputs, targets = grid_data()
    batch = inputs[None, :128], targets[None, :128]  # a task axis of 1
    expected = ensemble.update(*batch)
    assert expected["loss"].shape == (1,)

    resumed = make(seed=1)
    resumed.load_state_dict(to_torch_tree(stored))
    got = resumed.update(*batch)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    mine, theirs = ensemble.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_relabel_mask_obeys_the_threshold_and_chunks_do_not_matter():
    ensemble = make(dataclasses.replace(TINY, steps=200), in_dim=5, out_dim=3)
    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(1000, 3)).astype(np.float32), rng.normal(size=(1000, 2)).astype(np.float32)
    ensemble.fit(torch.from_numpy(np.concatenate([obs, act], -1)), torch.from_numpy(obs * 2))
    inputs = np.concatenate([obs, act], -1) * 3  # partly off the data: a mix of confident and not
    _, std, _ = relabel_with_ensemble(ensemble, inputs, threshold=0.0)
    threshold = float(np.median(std.max(-1)))  # about half the transitions confident
    mean, std, mask = relabel_with_ensemble(ensemble, inputs, threshold, chunk_size=10**6)
    assert mean.shape == std.shape == (1, 1000, 3) and mask.shape == (1, 1000) and mask.dtype == bool
    np.testing.assert_array_equal(mask, std.max(-1) < threshold)
    assert 0 < mask.sum() < mask.size

    chunked = relabel_with_ensemble(ensemble, (obs * 3, act * 3), threshold, chunk_size=64)
    for one_pass, in_chunks in zip((mean, std, mask), chunked, strict=True):
        np.testing.assert_allclose(in_chunks, one_pass, rtol=1e-6, atol=1e-6)
    members = ensemble.model(torch.from_numpy(inputs)).detach().numpy()
    np.testing.assert_allclose(mean, members.mean(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, members.std(1), rtol=1e-4, atol=1e-5)


class _FixedStd:
    """Stands in for an ensemble whose members disagree by a known std per output dimension."""

    device, out_dim, tasks = torch.device("cpu"), 3, 1

    def __init__(self, std):
        self.std = torch.tensor(std, dtype=torch.float32)

    def predict(self, inputs):
        return torch.zeros(1, len(inputs), self.out_dim), self.std[None, : len(inputs)]


def test_next_state_confidence_follows_the_reference_rule():
    """WalkerParam's next states: the reference keeps a row when the mean over state dimensions of the
    ensemble std is below 0.2 (mtrl used to ask max < 0.1, rejecting rows 0 and 1)."""
    from mtrl.config import Config
    from mtrl.envs.registry import get_family

    std = [[0.05, 0.05, 0.45],  # mean 0.183: kept by the reference, rejected by a max rule
           [0.15, 0.15, 0.15],  # kept
           [0.25, 0.25, 0.10],  # mean 0.2, not below: rejected
           [0.90, 0.00, 0.00]]  # mean 0.3: rejected
    threshold = get_family("WalkerParam").spec.next_state_std_threshold
    statistic = Config().relabel.next_state_std_statistic
    _, _, mask = relabel_with_ensemble(_FixedStd(std), np.zeros((4, 2), np.float32), threshold, statistic)
    np.testing.assert_array_equal(mask[0], np.mean(np.float32(std), -1) < 0.2)
    np.testing.assert_array_equal(mask[0], [True, True, False, False])
    _, _, strict = relabel_with_ensemble(_FixedStd(std), np.zeros((4, 2), np.float32), 0.2, "max")
    np.testing.assert_array_equal(strict[0], [False, True, False, False])


def task_data(seed, n, scale):
    """One task's data: inputs [n, 4] = [s (3), a (1)] at its own scale, next states at their own offset."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 4, generator=g) * scale + seed
    return inputs, inputs[:, :3] + 0.1 * torch.sin(inputs[:, 3:]) * scale + seed


@pytest.mark.parametrize("predict_delta", [False, True])
def test_two_tasks_in_one_model_fit_as_two_independent_ensembles(predict_delta):
    """The task axis: a 2-task ensemble fitted on task 0's and task 1's data (different sizes and scales) ends
    where two single-task ensembles with the same seeds end: weights, standardisation, Adam moments, generators
    and metrics. Not bitwise: the forward and backward passes are, but fused Adam rounds a task's block that does
    not start on a SIMD-vector boundary differently (≤ 3e-7 here). Tasks that shared a normaliser, a holdout
    split, an index stream or a gradient fail."""
    cfg = dataclasses.replace(TINY, members=3, hidden=(16,), steps=40, batch_size=32, predict_delta=predict_delta)
    data = [task_data(0, 300, 1.0), task_data(1, 457, 5.0)]
    singles = [EnsembleRegressor(cfg, 4, 3, "cpu", seeds=[s]) for s in (11, 22)]
    alone = [e.fit(x, y)[0] for e, (x, y) in zip(singles, data, strict=True)]

    both = EnsembleRegressor(cfg, 4, 3, "cpu", tasks=2, seeds=[11, 22])
    together = both.fit([x for x, _ in data], [y for _, y in data])
    for t, single in enumerate(singles):
        torch.testing.assert_close(to_torch_tree(to_numpy_tree(both.task_states()[t])),
                                   to_torch_tree(to_numpy_tree(single.state_dict())), rtol=1e-5, atol=1e-6)
        assert together[t].keys() == alone[t].keys() == {"train_loss", "holdout_mse", "holdout_member_mse"}
        for key, value in alone[t].items():
            np.testing.assert_allclose(together[t][key], value, rtol=1e-5, atol=1e-7)
    # every task standardised with its own data: a shared normaliser would fail the comparison above
    assert not torch.allclose(both.model.input_std[0], both.model.input_std[1], rtol=0.5)
    # stored per task with the member axis after the task axis
    policy = both.task_policy_states()[1]
    assert policy["tasks"] == 1 and policy["model"]["net.layers.0.weight"].shape == (1, 3, 4, 16)
    assert policy["model"]["input_mean"].shape == (1, 4)
    # and per-task checkpoints join into a task-batched one exactly (the member axis back inside the task axis)
    joined = EnsembleRegressor(cfg, 4, 3, "cpu", tasks=2, seeds=[1, 2])
    joined.load_task_states([to_torch_tree(to_numpy_tree(single.state_dict())) for single in singles])
    for t, single in enumerate(singles):
        torch.testing.assert_close(joined.task_states()[t], single.state_dict(), rtol=0, atol=0)


def test_per_task_ensembles_stack_into_one_model_that_predicts_as_each_alone():
    """K per-task policy states stack into one K-task ensemble whose task t predicts (and relabels) exactly as
    ensemble t alone, on the same rows or on its own rows."""
    cfg = dataclasses.replace(TINY, members=3, hidden=(16,), steps=5, predict_delta=True)
    ensembles = []
    for t in range(3):
        ensemble = EnsembleRegressor(cfg, 4, 3, "cpu", seeds=[t])
        ensemble.fit(*task_data(t, 200, t + 1.0))
        ensembles.append(ensemble)
    states = [to_numpy_tree(e.policy_state_dict()) for e in ensembles]
    stacked = EnsembleRegressor.from_policy_state(cfg, to_torch_tree(EnsembleRegressor.stack_policy_states(states)))
    assert stacked.tasks == 3
    rows = task_data(5, 50, 2.0)[0]
    own = torch.stack([task_data(t, 50, 1.0)[0] for t in range(3)])
    shared_mean, shared_std = stacked.predict(rows)
    own_mean, own_std = stacked.predict(own)
    relabelled = relabel_with_ensemble(stacked, rows.numpy(), threshold=0.5, statistic="mean", chunk_size=16)
    for t, ensemble in enumerate(ensembles):
        mean, std = ensemble.predict(rows)
        assert torch.equal(shared_mean[t], mean[0]) and torch.equal(shared_std[t], std[0])
        mean, std = ensemble.predict(own[t])
        assert torch.equal(own_mean[t], mean[0]) and torch.equal(own_std[t], std[0])
        for batched, single in zip(relabelled, relabel_with_ensemble(ensemble, rows.numpy(), 0.5, "mean", 16),
                                   strict=True):
            np.testing.assert_array_equal(batched[t], single[0])
        assert ensemble.evaluate(own[t], own[t, :, :3]) == stacked.evaluate(list(own), list(own[:, :, :3]))[t:t + 1]

"""Vectorised regression ensembles: independent members, fitting, uncertainty, checkpoints and Alg. 3."""

import dataclasses

import numpy as np
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
    torch.manual_seed(seed)
    return EnsembleRegressor(cfg, in_dim, out_dim, "cpu")


def fitted():
    ensemble = make()
    inputs, targets = grid_data()
    return ensemble, ensemble.fit(inputs, targets)


def test_members_start_different_and_fit_a_known_function():
    ensemble = make()
    first = ensemble.model.net.layers[0].weight
    assert all(not torch.equal(first[0], first[i]) for i in range(1, TINY.members))

    ensemble, metrics = fitted()
    assert metrics["holdout_mse"] < 0.01 and metrics["holdout_member_mse"] < 0.02, metrics
    inputs, targets = grid_data()
    members = ensemble.model(inputs).detach()  # every member's prediction
    assert members.shape == (TINY.members, len(inputs), 1)
    # Each member fits on its own...
    assert ((members[..., 0] - targets) ** 2).mean(1).max() < 0.02
    # ...and off the data, where nothing ties them together, they disagree far more than on it.
    _, std_on = ensemble.predict(inputs)
    far = torch.tensor([[30.0, 10.0], [-40.0, -8.0], [0.0, 25.0]])
    _, std_off = ensemble.predict(far)
    assert std_off.min() > 10 * std_on.mean()


def test_std_vanishes_where_members_agree():
    ensemble = make()
    ensemble.set_normalizer(*grid_data())
    with torch.no_grad():
        for p in ensemble.model.net.parameters():
            p.copy_(p[:1].expand_as(p))  # every member becomes member 0
    inputs = torch.randn(100, 2) * 5
    mean, std = ensemble.predict(inputs)
    assert mean.shape == std.shape == (100, 1)
    assert std.abs().max() < 1e-6
    torch.testing.assert_close(mean, ensemble.model(inputs)[0].detach())


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
    assert (mean - next_obs).abs().mean() < 0.02 * (next_obs - obs).abs().mean() + 0.01
    assert ensemble.evaluate(inputs, next_obs)["mse"] < 1e-3


def test_state_dict_round_trip_keeps_normalisation_and_resumes_identically():
    ensemble, _ = fitted()
    stored = to_numpy_tree(ensemble.state_dict())
    inputs, targets = grid_data()
    batch = inputs[:128], targets[:128]
    expected = ensemble.update(*batch)

    resumed = make(seed=1)
    resumed.load_state_dict(to_torch_tree(stored))
    assert resumed.update(*batch) == expected
    mine, theirs = ensemble.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_relabel_mask_obeys_the_threshold_and_chunks_do_not_matter():
    torch.manual_seed(0)
    ensemble = make(dataclasses.replace(TINY, steps=200), in_dim=5, out_dim=3)
    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(1000, 3)).astype(np.float32), rng.normal(size=(1000, 2)).astype(np.float32)
    ensemble.fit(torch.from_numpy(np.concatenate([obs, act], -1)), torch.from_numpy(obs * 2))
    inputs = np.concatenate([obs, act], -1) * 3  # partly off the data: a mix of confident and not
    _, std, _ = relabel_with_ensemble(ensemble, inputs, threshold=0.0)
    threshold = float(np.median(std.max(-1)))  # about half the transitions confident
    mean, std, mask = relabel_with_ensemble(ensemble, inputs, threshold, chunk_size=10**6)
    assert mean.shape == std.shape == (1000, 3) and mask.shape == (1000,) and mask.dtype == bool
    np.testing.assert_array_equal(mask, std.max(-1) < threshold)
    assert 0 < mask.sum() < len(mask)

    chunked = relabel_with_ensemble(ensemble, (obs * 3, act * 3), threshold, chunk_size=64)
    for one_pass, in_chunks in zip((mean, std, mask), chunked, strict=True):
        np.testing.assert_allclose(in_chunks, one_pass, rtol=1e-6, atol=1e-6)
    members = ensemble.model(torch.from_numpy(inputs)).detach().numpy()
    np.testing.assert_allclose(mean, members.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, members.std(0), rtol=1e-4, atol=1e-5)


class _FixedStd:
    """Stands in for an ensemble whose members disagree by a known std per output dimension."""

    device, out_dim = torch.device("cpu"), 3

    def __init__(self, std):
        self.std = torch.tensor(std, dtype=torch.float32)

    def predict(self, inputs):
        return torch.zeros(len(inputs), self.out_dim), self.std[: len(inputs)]


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
    np.testing.assert_array_equal(mask, np.mean(np.float32(std), -1) < 0.2)
    np.testing.assert_array_equal(mask, [True, True, False, False])
    _, _, strict = relabel_with_ensemble(_FixedStd(std), np.zeros((4, 2), np.float32), 0.2, "max")
    np.testing.assert_array_equal(strict, [False, True, False, False])

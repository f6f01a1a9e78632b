"""The context encoder q_φ: product-of-Gaussians posterior, masking, KL."""

import math

import numpy as np
import pytest
import torch

from mtrl.algos.context import (
    ContextEncoder,
    context_dim,
    context_rows,
    gaussian_kl,
    kl_to_standard_normal,
    product_of_gaussians,
)

OBS, ACT, Z = 3, 2, 4


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return ContextEncoder(context_dim(OBS, ACT), Z, hidden=(16, 16))


def rows(n, *batch):
    return torch.randn(*batch, n, context_dim(OBS, ACT))


def test_posterior_narrows_as_rows_are_added(encoder):
    c = rows(10)
    variances = torch.stack([encoder(c[:n])[1] for n in range(1, 11)])
    assert (variances[1:] < variances[:-1]).all()


def test_posterior_is_permutation_invariant(encoder):
    c = rows(12)
    mean, var = encoder(c)
    mean_p, var_p = encoder(c[torch.randperm(12)])
    torch.testing.assert_close(mean_p, mean)
    torch.testing.assert_close(var_p, var)


def test_masked_padding_rows_do_not_change_the_posterior(encoder):
    a, b = rows(5), rows(8)
    padded = torch.stack([torch.cat([a, 1e3 * torch.randn(3, a.shape[-1])]), b])  # padding: any finite values
    mask = torch.tensor([[True] * 5 + [False] * 3, [True] * 8])
    mean, var = encoder(padded, mask)
    for i, alone in enumerate([a, b]):
        mean_i, var_i = encoder(alone)
        torch.testing.assert_close(mean[i], mean_i)
        torch.testing.assert_close(var[i], var_i)


def test_empty_set_gives_the_prior_and_finite_gradients(encoder):
    c = rows(6, 2)
    mask = torch.tensor([[False] * 6, [True] * 6])
    mean, var = encoder(c, mask)
    assert torch.equal(mean[0], torch.zeros(Z)) and torch.equal(var[0], torch.ones(Z))
    mean_none, var_none = encoder(rows(0))  # no rows at all
    assert torch.equal(mean_none, torch.zeros(Z)) and torch.equal(var_none, torch.ones(Z))
    (mean.sum() + var.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_product_of_gaussians_closed_form_and_broadcast_masks():
    mean = torch.tensor([[[1.0], [3.0]]])  # one set, two rows, z = 1
    var = torch.tensor([[[1.0], [3.0]]])
    # precisions 1 and 1/3: var = 3/4, mean = 3/4 · (1 + 1) = 1.5
    post_mean, post_var = product_of_gaussians(mean, var)
    torch.testing.assert_close(post_var, torch.tensor([[0.75]]))
    torch.testing.assert_close(post_mean, torch.tensor([[1.5]]))
    # a mask [1, 3, 2] selects three subsets of the same rows at once
    masks = torch.tensor([[[True, False], [False, True], [True, True]]])
    sub_mean, sub_var = product_of_gaussians(mean[:, None], var[:, None], masks)
    torch.testing.assert_close(sub_mean, torch.tensor([[[1.0], [3.0], [1.5]]]))
    torch.testing.assert_close(sub_var, torch.tensor([[[1.0], [3.0], [0.75]]]))


def test_gaussian_kl_matches_closed_form():
    mean_p, var_p = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0])
    mean_q, var_q = torch.tensor([-1.0, 0.0]), torch.tensor([4.0, 1.0])
    # dim 0: log(2/√2) + (2 + 4) / 8 − 1/2; dim 1: identical Gaussians, 0
    expected = 0.5 * math.log(2.0) + 0.75 - 0.5
    assert gaussian_kl(mean_p, var_p, mean_q, var_q).item() == pytest.approx(expected, rel=1e-6)
    p = torch.distributions.Normal(mean_p, var_p.sqrt())
    q = torch.distributions.Normal(mean_q, var_q.sqrt())
    assert gaussian_kl(mean_p, var_p, mean_q, var_q).item() == pytest.approx(
        torch.distributions.kl_divergence(p, q).sum().item(), rel=1e-6
    )
    # KL to N(0, I): 0.5 (var + mean² − 1 − log var) per dimension
    expected_prior = 0.5 * (2 + 1 - 1 - math.log(2.0))
    assert kl_to_standard_normal(mean_p, var_p).item() == pytest.approx(expected_prior, rel=1e-6)


def test_context_rows_numpy_and_torch():
    obs, act, nxt, rew = np.ones((5, OBS)), 2 * np.ones((5, ACT)), 3 * np.ones((5, OBS)), 4 * np.ones(5)
    out = context_rows(obs, act, nxt, rew)
    assert out.shape == (5, context_dim(OBS, ACT)) and out.dtype == np.float32
    assert out[0].tolist() == [1] * OBS + [2] * ACT + [3] * OBS + [4]
    out_t = context_rows(*(torch.as_tensor(x, dtype=torch.float32) for x in (obs, act, nxt, rew)))
    assert torch.equal(out_t, torch.as_tensor(out))

"""The context encoder's maths pinned by hand (issue 23): the product of independent Gaussians with masks, the
KL terms in closed form on every dimension, the reparameterised draw replayed from its generator, which half
of the network's output is the mean, and acting-time inference (Alg. 5) from no context and from nested rows."""

import math

import numpy as np
import pytest
import torch

from mtrl.algos.context import (
    MIN_VARIANCE,
    ContextEncoder,
    InfersTasks,
    context_dim,
    context_rows,
    gaussian_kl,
    kl_to_standard_normal,
    product_of_gaussians,
    rsample,
)

T = torch.tensor


def test_product_of_gaussians_by_hand_with_a_mask():
    """1/σ² = Σ 1/σ²_n and μ = σ² Σ μ_n/σ²_n over the selected rows, per dimension, per set. Set 1's second
    dimension has a total precision below 1 (a guard for empty sets must not touch it); the masked row holds
    values that would dominate either product."""
    mean = T([[[1.0, -2.0], [100.0, 100.0], [3.0, 2.0]],
              [[50.0, 50.0], [-1.0, 4.0], [2.0, 0.0]]], dtype=torch.float64)
    var = T([[[1.0, 4.0], [1e-3, 1e-3], [0.5, 4.0]],
             [[1e-3, 1e-3], [2.0, 8.0], [2.0, 8.0]]], dtype=torch.float64)
    mask = T([[True, False, True], [False, True, True]])
    post_mean, post_var = product_of_gaussians(mean, var, mask)
    # set 0: precisions (1, 2) → var 1/3, mean (1 + 2·3)/3; (1/4, 1/4) → var 2, mean 2·(−2/4 + 2/4) = 0
    # set 1: precisions (1/2, 1/2) → var 1, mean (−1 + 2)/2; (1/8, 1/8) → var 4, mean 4·(4/8 + 0) = 2
    torch.testing.assert_close(post_var, T([[1 / 3, 2.0], [1.0, 4.0]], dtype=torch.float64))
    torch.testing.assert_close(post_mean, T([[7 / 3, 0.0], [0.5, 2.0]], dtype=torch.float64))
    # without a mask every row counts: the same as an all-True mask
    for got, expected in zip(product_of_gaussians(mean, var), product_of_gaussians(mean, var, mask | True),
                             strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_single_row_is_its_own_posterior_and_no_row_the_prior():
    """One selected row of variance 3 or 0.2: the posterior is that factor (precisions above and below 1);
    nothing selected: N(0, I), whatever the rows hold."""
    mean, var = T([[[5.0], [-4.0]]]), T([[[3.0], [0.2]]])
    masks = T([[[True, False], [False, True], [False, False]]])
    post_mean, post_var = product_of_gaussians(mean[:, None], var[:, None], masks)
    torch.testing.assert_close(post_mean, T([[[5.0], [-4.0], [0.0]]]))
    torch.testing.assert_close(post_var, T([[[3.0], [0.2], [1.0]]]))


def test_masks_broadcast_into_subsets_of_each_set():
    """Factors [K, 1, N, z] with a mask [K, M, N]: subset m of set k is the product over set k's rows that
    mask[k, m] selects, as if those rows were combined alone."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 1, 5, 3, generator=g, dtype=torch.float64)
    var = torch.rand(2, 1, 5, 3, generator=g, dtype=torch.float64) + 0.1
    mask = torch.rand(2, 4, 5, generator=g) < 0.6
    mask[0, 0] = True
    post_mean, post_var = product_of_gaussians(mean, var, mask)
    assert post_mean.shape == post_var.shape == (2, 4, 3)
    for k in range(2):
        for m in range(4):
            rows = mask[k, m]
            alone_mean, alone_var = product_of_gaussians(mean[k, 0, rows], var[k, 0, rows])
            if not rows.any():
                alone_mean, alone_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
            torch.testing.assert_close(post_mean[k, m], alone_mean)
            torch.testing.assert_close(post_var[k, m], alone_var)


def test_gaussian_kl_closed_form_on_every_dimension():
    """½ (log σ²_q − log σ²_p + (σ²_p + (μ_p − μ_q)²)/σ²_q − 1), summed over the last axis only; no dimension is
    trivial, and the KL is asymmetric."""
    mean_p, var_p = T([[1.0, 0.5], [0.0, -1.0]], dtype=torch.float64), T([[2.0, 0.25], [1.0, 3.0]],
                                                                          dtype=torch.float64)
    mean_q, var_q = T([[-1.0, 0.0], [2.0, 1.0]], dtype=torch.float64), T([[4.0, 1.0], [0.5, 2.0]],
                                                                          dtype=torch.float64)
    expected = [
        0.5 * (math.log(4 / 2) + (2 + 4) / 4 - 1) + 0.5 * (math.log(1 / 0.25) + (0.25 + 0.25) / 1 - 1),
        0.5 * (math.log(0.5 / 1) + (1 + 4) / 0.5 - 1) + 0.5 * (math.log(2 / 3) + (3 + 4) / 2 - 1),
    ]
    kl = gaussian_kl(mean_p, var_p, mean_q, var_q)
    assert kl.shape == (2,)
    torch.testing.assert_close(kl, T(expected, dtype=torch.float64))
    reverse = gaussian_kl(mean_q, var_q, mean_p, var_p)
    assert not torch.allclose(reverse, kl)
    torch.testing.assert_close(gaussian_kl(mean_p, var_p, mean_p, var_p), torch.zeros(2, dtype=torch.float64))


def test_kl_to_the_prior_closed_form():
    """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (σ² + μ² − 1 − log σ²)."""
    mean, var = T([[1.0, -2.0, 0.0]], dtype=torch.float64), T([[2.0, 0.5, 1.0]], dtype=torch.float64)
    expected = 0.5 * ((2 + 1 - 1 - math.log(2)) + (0.5 + 4 - 1 - math.log(0.5)) + 0.0)
    kl = kl_to_standard_normal(mean, var)
    assert kl.shape == (1,)
    assert kl.item() == pytest.approx(expected, rel=1e-12)


def test_rsample_is_mean_plus_sigma_times_the_generators_noise():
    """z = μ + σ·ε with ε from the given generator, drawn in the mean's dtype; gradients: ∂z/∂μ = 1 and
    ∂z/∂σ² = ε / (2σ)."""
    mean = T([[1.0, -2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    var = T([[4.0, 0.25, 1.0]], dtype=torch.float64, requires_grad=True)
    z = rsample(mean, var, torch.Generator().manual_seed(3))
    noise = torch.randn(1, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert z.dtype == torch.float64
    torch.testing.assert_close(z.detach(), mean.detach() + var.detach().sqrt() * noise, rtol=0, atol=0)
    z.sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones(1, 3, dtype=torch.float64))
    torch.testing.assert_close(var.grad, noise / (2 * var.detach().sqrt()))
    # no generator: torch's global one
    torch.manual_seed(5)
    first = rsample(mean.detach(), var.detach())
    torch.manual_seed(5)
    assert torch.equal(rsample(mean.detach(), var.detach()), first)


def test_factors_are_the_first_half_as_mean_and_the_softplus_of_the_second_with_a_floor():
    torch.manual_seed(0)
    encoder = ContextEncoder(6, 2, hidden=(5,))
    with torch.no_grad():
        encoder.net[-1].bias[3] = -200.0  # softplus underflows: the floor
        encoder.net[-1].weight[3] = 0.0
    rows = torch.randn(2, 4, 6)
    out = encoder.net(rows).detach()
    mean, var = encoder.factors(rows)
    torch.testing.assert_close(mean, out[..., :2])
    torch.testing.assert_close(var[..., 0], torch.nn.functional.softplus(out[..., 2]))
    assert (var[..., 1] == MIN_VARIANCE).all()
    mask = torch.tensor([[True, False, True, True], [False] * 4])
    for got, expected in zip(encoder(rows, mask), product_of_gaussians(mean, var, mask), strict=True):
        torch.testing.assert_close(got, expected)


def test_encoder_has_the_configured_widths():
    encoder = ContextEncoder(9, 4, hidden=(7, 5))
    linear = [m for m in encoder.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(9, 7), (7, 5), (5, 8)]
    assert (encoder.row_dim, encoder.z_dim) == (9, 4)


class _Agent(InfersTasks):
    def __init__(self):
        torch.manual_seed(1)
        self.encoder = ContextEncoder(context_dim(2, 1), 3, hidden=(8,))
        self.device = torch.device("cpu")
        self.generator = torch.Generator().manual_seed(9)


def test_posterior_of_no_context_is_the_prior_and_of_nested_rows_their_product():
    """Alg. 5 starts from the prior: None or an empty context give N(0, I) exactly; rows of any leading shape
    (here 2 episodes × 3 steps, float64) are one set, cast to float32."""
    agent = _Agent()
    for context in (None, np.zeros((0, 6), np.float32)):
        mean, var = agent.posterior(context)
        np.testing.assert_array_equal(mean, np.zeros(3, np.float32))
        np.testing.assert_array_equal(var, np.ones(3, np.float32))
    rows = np.random.default_rng(0).normal(size=(2, 3, 6))
    mean, var = agent.posterior(rows)
    with torch.no_grad():
        expected = agent.encoder(torch.as_tensor(rows, dtype=torch.float32).reshape(6, 6))
    assert mean.shape == (3,) and mean.dtype == np.float32
    np.testing.assert_array_equal(mean, expected[0].numpy())
    np.testing.assert_array_equal(var, expected[1].numpy())


def test_sample_z_draws_from_the_agents_generator_unless_given_one():
    agent = _Agent()
    rows = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    mean, var = (torch.as_tensor(a) for a in agent.posterior(rows))
    z = agent.sample_z(rows)
    expected = mean + var.sqrt() * torch.randn(3, generator=torch.Generator().manual_seed(9))
    np.testing.assert_allclose(z, expected.numpy(), rtol=0, atol=1e-6)
    state = agent.generator.get_state()
    other = agent.sample_z(rows, generator=torch.Generator().manual_seed(4))
    assert torch.equal(agent.generator.get_state(), state)  # the agent's stream untouched
    expected = mean + var.sqrt() * torch.randn(3, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(other, expected.numpy(), rtol=0, atol=1e-6)


def test_context_rows_with_leading_axes():
    """[s, a, s', r] along the last axis for [episodes, steps, ...] inputs; NumPy rows are float32."""
    obs, act = np.full((2, 3, 2), 1.0), np.full((2, 3, 1), 2.0)
    nxt, rew = np.full((2, 3, 2), 3.0), np.arange(6.0).reshape(2, 3)
    out = context_rows(obs, act, nxt, rew)
    assert out.shape == (2, 3, context_dim(2, 1)) == (2, 3, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1, 2], [1, 1, 2, 3, 3, 5])
    out_t = context_rows(*(torch.as_tensor(a) for a in (obs, act, nxt, rew)))
    assert torch.equal(out_t, torch.as_tensor(out, dtype=torch.float64))

"""MBML's calibration keys (issue 32): heads trained on the posterior mean, a KL weight relative to the Q targets'
variance, and acting with the posterior mean."""

import numpy as np
import pytest
import torch
from test_mbml import make_algo, make_batch

import mtrl.algos.mbml as mbml_module
from mtrl.rl.policies import EmbeddingPolicy


def far_sample(mean, var, generator):
    """A 'sample' a thousand units from the mean: any loss that sees it moves."""
    return mean + 1e3


@pytest.mark.parametrize("heads_z", ["sample", "mean"])
def test_heads_see_the_posterior_mean_only_when_asked(heads_z, monkeypatch):
    reference = make_algo(heads_z=heads_z).losses(make_batch(make_algo()))
    monkeypatch.setattr(mbml_module, "rsample", far_sample)
    shifted = make_algo(heads_z=heads_z).losses(make_batch(make_algo()))
    for term in ("q", "g", "xi"):
        assert torch.equal(shifted[term], reference[term]) == (heads_z == "mean"), term
    assert torch.equal(shifted["kl"], reference["kl"])  # the KL never depends on the sample


@pytest.mark.parametrize("kl_scale", ["absolute", "q_target_variance"])
def test_kl_weight_is_beta_or_beta_times_the_q_targets_variance(kl_scale):
    algo = make_algo(kl_beta=0.3, kl_scale=kl_scale)
    batch = make_batch(algo)
    q_targets = algo._teacher_targets(batch["observations"], batch["actions"]).q
    losses = algo.losses(batch)
    expected = 0.3 * (q_targets.var().item() if kl_scale == "q_target_variance" else 1.0)
    assert losses["kl_weight"].item() == pytest.approx(expected, rel=1e-6)
    rest = losses["triplet"] + losses["q"] + losses["g"] + losses["xi"]
    assert (losses["total"] - rest).item() == pytest.approx(expected * losses["kl"].item(), rel=1e-4)


def test_acting_with_the_posterior_mean_is_deterministic_and_equals_the_mean():
    algo = make_algo()
    context = np.random.default_rng(0).normal(size=(10, algo.context_dim)).astype(np.float32)
    mean = EmbeddingPolicy(algo, seed=0, belief="mean")
    np.testing.assert_array_equal(mean.infer(context), algo.posterior(context)[0])
    np.testing.assert_array_equal(mean.infer(context), mean.infer(context))
    sample = EmbeddingPolicy(algo, seed=0)
    assert not np.array_equal(sample.infer(context), sample.infer(context))
    with pytest.raises(ValueError, match="belief must be"):
        EmbeddingPolicy(algo, seed=0, belief="mode")


def test_sample_then_mean_samples_to_explore_and_acts_with_the_mean_where_scored():
    algo = make_algo()
    context = np.random.default_rng(0).normal(size=(10, algo.context_dim)).astype(np.float32)
    policy = EmbeddingPolicy(algo, seed=0, belief="sample-then-mean")
    np.testing.assert_array_equal(policy.infer(context), algo.posterior(context)[0])
    assert not np.array_equal(policy.infer(context, explore=True), policy.infer(context, explore=True))
    mean = EmbeddingPolicy(algo, seed=0, belief="mean")  # "mean" never samples, not even to explore
    np.testing.assert_array_equal(mean.infer(context, explore=True), algo.posterior(context)[0])

"""Loss composition term by term and acting rules replayed with a fixed generator.

MBML's Eq. 10 terms are recomputed from the paper's formulas with the same random draws (the agent's generator
replayed), so a dropped or mis-weighted term, a wrong teacher network or a sign flip in Eq. 17's choice fails
here even where "the loss falls" would still hold.
"""

import dataclasses

import numpy as np
import pytest
import test_batch_pearl as pearl_tests  # tests/algos is on sys.path (its conftest), as pytest imports it
import torch
from test_mbml import ACT, LATENT, MAX_ACTION, OBS, make_algo, make_batch

from mtrl.algos.batch_pearl import BatchPEARL
from mtrl.algos.bcq import DECODE_LATENT_CLIP
from mtrl.algos.context import kl_to_standard_normal


def _manual_kl(mean, var):
    """KL(N(mean, var) ‖ N(0, I)) summed over z, written out."""
    return 0.5 * (var + mean.pow(2) - 1 - var.log()).sum(-1)


def test_mbml_losses_are_eq_10_term_by_term():
    """`neither` (no triplet, no relabelled sets): every term from the formulas, with the same draws."""
    beta = 0.7
    algo = make_algo("neither", kl_beta=beta)
    batch = make_batch(algo)
    start = algo.generator.get_state()
    terms = algo.losses(batch)

    g = torch.Generator().set_state(start)  # the draws of `losses`, in its order: ν, then z
    obs, actions = batch["observations"], batch["actions"]
    k, n = obs.shape[:2]
    with torch.no_grad():
        latent = torch.randn(k, n, LATENT, generator=g).clamp(-DECODE_LATENT_CLIP, DECODE_LATENT_CLIP)
        teachers = algo.teachers
        teacher_q = teachers.critic.q1(obs, actions)  # Q_i: the first twin of task i's critic
        candidate = teachers.vae.decode(obs, latent)  # G_i(s, ν)
        correction = teachers.actor(obs, candidate) - candidate  # ξ_i(s, â) − â
        mean, var = algo.encoder(batch["context"])
        z = (mean + var.sqrt() * torch.randn(mean.shape, generator=g))[:, None].expand(k, n, -1)

        q = (algo.q_d(torch.cat([obs, actions, z], -1)).squeeze(-1) - teacher_q).pow(2).mean()
        kl = _manual_kl(mean, var).mean()
        g_d = MAX_ACTION * torch.tanh(algo.g_d(torch.cat([obs, latent, z], -1)))
        g_term = (g_d - candidate).pow(2).sum(-1).mean()
        xi_d = algo.cfg.phi * MAX_ACTION * torch.tanh(algo.xi_d(torch.cat([obs, candidate, z], -1)))
        xi_term = (xi_d - correction).pow(2).sum(-1).mean()

    for name, value in {"q": q, "kl": kl, "g": g_term, "xi": xi_term}.items():
        assert value > 1e-3, name  # every term is non-trivial, so dropping it shows
        torch.testing.assert_close(terms[name].detach(), value, rtol=1e-5, atol=1e-6, msg=name)
    assert terms["triplet"].item() == 0.0
    torch.testing.assert_close(terms["total"].detach(), q + beta * kl + g_term + xi_term, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["mbml", "no-relabel"])
def test_mbml_total_is_the_sum_of_its_terms_with_the_kl_weight(variant):
    beta = 0.37
    algo = make_algo(variant, kl_beta=beta)
    terms = {key: value.detach() for key, value in algo.losses(make_batch(algo)).items()}
    assert terms["triplet"] > 0 and terms["kl"] > 0
    expected = terms["triplet"] + terms["q"] + beta * terms["kl"] + terms["g"] + terms["xi"]
    torch.testing.assert_close(terms["total"], expected, rtol=1e-6, atol=1e-6)


def test_mbml_kl_is_of_the_posterior_z_is_drawn_from():
    """kl = mean over tasks of KL(q(z | c_i) ‖ N(0, I)); in `neither`, q(z | c_i) is the encoder on c_i."""
    algo = make_algo("neither")
    batch = make_batch(algo)
    kl = algo.losses(batch)["kl"].detach()
    with torch.no_grad():
        mean, var = algo.encoder(batch["context"])
    torch.testing.assert_close(kl, kl_to_standard_normal(mean, var).mean())
    torch.testing.assert_close(kl, _manual_kl(mean, var).mean())


# ---------------------------------------------------------------- acting (Eq. 17)
@pytest.mark.parametrize("batched", [False, True])
def test_mbml_act_is_eq_17_argmax_of_q_d_over_corrected_candidates(batched):
    algo = make_algo("neither", num_candidates=16, phi=0.4)
    for p in algo.networks.parameters():  # larger weights: candidates that differ, Q_D values far apart
        p.data.mul_(3.0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6, OBS) if batched else (OBS,)).astype(np.float32)
    z = rng.normal(size=(algo.cfg.z_dim,)).astype(np.float32)
    action = algo.act(obs, z, generator=torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)
    m = algo.cfg.num_candidates
    s = torch.as_tensor(obs).reshape(-1, 1, OBS).expand(-1, m, -1)
    zz = torch.as_tensor(z).expand(s.shape[0], m, -1)
    with torch.no_grad():
        latent = torch.randn(s.shape[0], m, LATENT, generator=g).clamp(-DECODE_LATENT_CLIP, DECODE_LATENT_CLIP)
        candidates = MAX_ACTION * torch.tanh(algo.g_d(torch.cat([s, latent, zz], -1)))
        corrected = candidates + algo.cfg.phi * MAX_ACTION * torch.tanh(algo.xi_d(torch.cat([s, candidates, zz], -1)))
        corrected = corrected.clamp(-MAX_ACTION, MAX_ACTION)
        q = algo.q_d(torch.cat([s, corrected, zz], -1)).squeeze(-1)
    rows = torch.arange(s.shape[0])
    best, worst = corrected[rows, q.argmax(-1)], corrected[rows, q.argmin(-1)]
    assert not torch.allclose(best, worst)  # the rule matters on this example
    np.testing.assert_allclose(action.reshape(-1, ACT), best.numpy(), rtol=0, atol=1e-6)
    assert action.shape == np.shape(obs)[:-1] + (ACT,)


def test_mbml_act_draws_from_the_agents_generator_by_default():
    algo = make_algo("neither")
    obs, z = np.zeros(OBS, np.float32), np.zeros(algo.cfg.z_dim, np.float32)
    state = algo.generator.get_state()
    first = algo.act(obs, z)
    assert not torch.equal(algo.generator.get_state(), state)  # the agent's stream moved
    algo.generator.set_state(state)
    np.testing.assert_array_equal(algo.act(obs, z), first)


# ---------------------------------------------------------------- Batch PEARL: the encoder's loss
def _pearl(beta):
    cfg = dataclasses.replace(pearl_tests.TINY, kl_beta=beta)
    torch.manual_seed(0)  # the same initialisation whatever β
    return BatchPEARL(cfg, pearl_tests.OBS, pearl_tests.ACT, pearl_tests.MAX_ACTION, "cpu")


def _encoder_gradient_of_update(algo, batch):
    """The encoder's gradient at the step of the critic optimiser (the only one that holds q_φ)."""
    grads, step = [], algo.critic_opt.step

    def recording_step(*args, **kwargs):
        grads.append([p.grad.clone() for p in algo.encoder.parameters()])
        return step(*args, **kwargs)

    algo.critic_opt.step = recording_step
    algo.update(batch)
    return grads[0]


def test_batch_pearl_encoder_gradient_is_critic_plus_beta_kl():
    """Alg. 6 line 11: ∇φ (L_critic + β·KL). The gradient at β minus the one at β = 0 is β·∇φ KL."""
    beta = 2.5
    batch = pearl_tests.sample(pearl_tests.make_data(), pearl_tests.TINY, torch.Generator().manual_seed(1))
    with_kl = _encoder_gradient_of_update(_pearl(beta), batch)
    without = _encoder_gradient_of_update(_pearl(0.0), batch)
    fresh = _pearl(beta)
    kl = kl_to_standard_normal(*fresh.encoder(batch["context"])).mean()
    kl_grads = torch.autograd.grad(kl, list(fresh.encoder.parameters()))
    assert max(g.abs().max() for g in kl_grads) > 1e-4
    for a, b, k in zip(with_kl, without, kl_grads, strict=True):
        torch.testing.assert_close(a - b, beta * k, rtol=1e-4, atol=1e-6)

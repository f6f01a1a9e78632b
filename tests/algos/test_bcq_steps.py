"""BCQ's networks and losses against their formulas (found unpinned by mutation testing, docs/mutation.md):
ξ's bounded correction, the VAE's reparameterisation and clipped decoding latent, the VAE and critic losses of
one `bcq_step` term by term, and which networks each of its three backward passes reaches."""

import copy

import torch
from test_bcq import ACT, MAX_ACTION, OBS, TINY, make_bcq, make_data

from mtrl.algos import bcq
from mtrl.algos.bcq import BCQ, DECODE_LATENT_CLIP, KL_WEIGHT, VAE_LOG_STD_MAX, VAE_LOG_STD_MIN, BCQConfig, BCQPolicy


def _batch(n=32, seed=0):
    data = make_data(n, seed)
    return {key: value[None] for key, value in data.items()}  # task axis of 1


def test_perturbation_is_the_action_plus_a_bounded_correction_clipped_to_the_box():
    agent = make_bcq(TINY)
    xi = agent.actor
    with torch.no_grad():  # correction of dimension 0 near +Φ·max_action, of dimension 1 near −Φ·max_action
        xi.net.layers[-1].bias[..., 0] = 10.0
        xi.net.layers[-1].bias[..., 1] = -10.0
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(1, 64, OBS, generator=g)
    action = (torch.rand(1, 64, ACT, generator=g) * 2 - 1) * MAX_ACTION
    action[:, :16] = -MAX_ACTION  # at the bounds: the clip is on both sides
    action[:, 16:32] = MAX_ACTION
    with torch.no_grad():
        correction = xi.phi * MAX_ACTION * torch.tanh(xi.net(torch.cat([obs, action], -1)))
        out = xi(obs, action)
    torch.testing.assert_close(out, (action + correction).clamp(-MAX_ACTION, MAX_ACTION))
    assert (out == -MAX_ACTION).any() and (out == MAX_ACTION).any()
    assert correction.abs().max() > 0.5 * xi.phi * MAX_ACTION  # the bound scales with max_action (2.0 here)


def test_vae_forward_reparameterises_with_a_clamped_log_std():
    vae = make_bcq(TINY).vae
    latent = vae.latent_dim
    with torch.no_grad():  # push one log-std beyond each clamp
        vae.encoder.layers[-1].bias[..., latent] = 30.0
        vae.encoder.layers[-1].bias[..., latent + 1] = -30.0
    batch = _batch()
    obs, actions = batch["observations"], batch["actions"]
    state = vae.generators[0].get_state()
    with torch.no_grad():
        recon, mean, std = vae(obs, actions)
        vae.generators[0].set_state(state)
        raw_mean, log_std = vae.encoder(torch.cat([obs, actions], -1)).chunk(2, -1)
        expected_std = log_std.clamp(VAE_LOG_STD_MIN, VAE_LOG_STD_MAX).exp()
        noise = torch.randn(obs.shape[1], latent, generator=vae.generators[0])[None]
        expected_recon = vae.decode(obs, raw_mean + expected_std * noise)
    torch.testing.assert_close(std, expected_std)
    assert std.max() == torch.tensor(VAE_LOG_STD_MAX).exp() and std.min() == torch.tensor(VAE_LOG_STD_MIN).exp()
    torch.testing.assert_close(mean, raw_mean)
    torch.testing.assert_close(recon, expected_recon)


def test_decoding_latents_are_standard_normal_clipped_to_half():
    vae = make_bcq(TINY).vae
    latent = vae.sample_latent((1, 2000), torch.device("cpu"))
    assert latent.shape == (1, 2000, vae.latent_dim)
    assert latent.min() == -DECODE_LATENT_CLIP and latent.max() == DECODE_LATENT_CLIP
    inside = latent[latent.abs() < DECODE_LATENT_CLIP]
    assert 0.3 < len(inside) / latent.numel() < 0.45  # P(|N(0, 1)| < 0.5) = 0.383
    assert inside.std() > 0.2


def test_constructor_defaults_and_latent_width():
    policy = BCQPolicy(TINY, OBS, ACT, MAX_ACTION, "cpu")
    assert policy.tasks == 1 and len(policy.generators) == 1
    wide = BCQPolicy(BCQConfig(actor_hidden=(8,), critic_hidden=(8,), vae_hidden=(8,), latent_dim=3), OBS, ACT,
                     MAX_ACTION, "cpu")
    assert wide.vae.latent_dim == 3
    agent = make_bcq(TINY)
    for target in (agent.actor_target, agent.critic_target):
        assert not any(p.requires_grad for p in target.parameters())  # targets move by Polyak updates only


def test_one_step_losses_term_by_term(monkeypatch):
    agent = make_bcq(TINY)
    before = copy.deepcopy(agent)
    targets = []
    original = bcq.soft_clipped_target
    monkeypatch.setattr(bcq, "soft_clipped_target", lambda *args: targets.append(original(*args)) or targets[-1])
    batch = _batch()
    metrics = agent.update(batch)
    obs, actions = batch["observations"], batch["actions"]
    with torch.no_grad():
        # VAE: the same noise (the generator replayed) through the networks as they were
        recon, mean, std = before.vae(obs, actions)
        recon_loss = (recon - actions).pow(2).mean()
        kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
        # critics: not changed by the VAE step; y as the target function gave it
        q1, q2 = before.critic(obs, actions)
        (y,) = targets
        critic_loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
    torch.testing.assert_close(metrics["recon_loss"][0], recon_loss)
    torch.testing.assert_close(metrics["kl_loss"][0], kl)
    torch.testing.assert_close(metrics["vae_loss"][0], recon_loss + KL_WEIGHT * kl)
    torch.testing.assert_close(metrics["critic_loss"][0], critic_loss)
    torch.testing.assert_close(metrics["q_mean"][0], q1.mean())
    assert kl > 1e-3 and abs(q1 - y).mean() > 1e-3 and abs(q2 - y).mean() > 1e-3


def test_each_backward_pass_reaches_one_network(gradient_passes):
    agent = BCQ(TINY, OBS, ACT, MAX_ACTION, "cpu")
    assert gradient_passes(agent, _batch()) == [{"vae"}, {"critic"}, {"actor"}]

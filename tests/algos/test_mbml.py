"""MBML distillation: losses, gradient routing, Alg. 4 sets, Eq. 11, variants, acting, checkpoints."""

import dataclasses

import numpy as np
import pytest
import torch

from mtrl.algos.bcq import BCQConfig, BCQPolicy
from mtrl.algos.context import gaussian_kl, kl_to_standard_normal
from mtrl.algos.mbml import (
    MBML,
    MBMLConfig,
    hard_negative_triplet_loss,
    random_subset_mask,
    sample_relabelled_subset,
    triplet_loss,
)
from mtrl.nn import to_numpy_tree, to_torch_tree

K, OBS, ACT, MAX_ACTION, LATENT = 3, 4, 2, 2.0, 4
VARIANTS = ["mbml", "no-triplet", "no-relabel", "neither"]
TINY = MBMLConfig(
    z_dim=3,
    encoder_hidden=(16,),
    q_hidden=(32, 32),
    g_hidden=(32,),
    xi_hidden=(32,),
    lr=1e-3,
    batch_size=16,
    context_size=8,
    relabelled_context_size=8,
    no_relabel_context_size=8,
    neither_context_size=8,
    hard_negative_sets=3,
)


def make_teachers(k=K):
    """K frozen BCQ teachers as one task-batched policy, as distill builds them."""
    hidden = (16, 16)
    cfg = BCQConfig(actor_hidden=hidden, critic_hidden=hidden, vae_hidden=hidden, latent_dim=LATENT)
    return BCQPolicy(cfg, OBS, ACT, MAX_ACTION, "cpu", tasks=k, seeds=list(range(k)))


def make_algo(variant="mbml", seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = dataclasses.replace(TINY, **overrides)
    return MBML(cfg, OBS, ACT, MAX_ACTION, make_teachers(), "cpu", variant=variant)


def make_batch(algo, seed=1, confident=0.7, mask=None):
    """A random batch of the shapes `batch_shapes` asks for; relabelled rows are context rows of task j with
    a new reward, as the relabel stage produces them, and NaN where the ensemble is not confident (`mask`
    [K_i, K_j, context_size], else a random one with that fraction confident: asymmetric in (i, j))."""
    g = torch.Generator().manual_seed(seed)
    shapes = algo.batch_shapes()
    batch = {key: torch.randn(shape, generator=g) for key, shape in shapes.items() if key != "relabel_mask"}
    if "relabelled_context" in batch:
        relabelled = batch["context"][None].repeat(K, 1, 1, 1)
        relabelled[..., -1] = torch.randn(relabelled.shape[:-1], generator=g)
        batch["relabelled_context"] = relabelled
        batch["relabel_mask"] = torch.rand(shapes["relabel_mask"], generator=g) < confident if mask is None else mask
        relabelled[~batch["relabel_mask"]] = torch.nan
    return batch


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_updates_with_finite_losses_and_acts_in_bounds(variant):
    algo = make_algo(variant)
    metrics = algo.update(make_batch(algo))
    assert {"total", "q", "kl", "g", "xi", "triplet"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert (metrics["triplet"] == 0.0) == (variant in ("no-triplet", "neither"))
    assert all(torch.isfinite(p).all() for p in algo.networks.parameters())

    obs = 10 * np.random.default_rng(0).normal(size=(64, OBS))
    z = algo.sample_z(make_batch(algo)["observations"].new_zeros(0, algo.context_dim))
    actions = algo.act(obs, z)
    assert actions.shape == (64, ACT) and np.abs(actions).max() <= MAX_ACTION
    assert algo.act(obs[0], z).shape == (ACT,)
    zs = np.stack([algo.sample_z() for _ in range(64)])  # one z per observation
    assert algo.act(obs, zs).shape == (64, ACT)


def test_batch_keys_and_shapes_are_checked():
    algo = make_algo("mbml")
    batch = make_batch(algo)
    del batch["relabel_mask"]
    with pytest.raises(ValueError, match="relabel_mask"):
        algo.update(batch)
    assert set(make_algo("neither").batch_shapes()) == {"observations", "actions", "context"}
    assert make_algo("no-relabel").batch_shapes()["context"] == (K, 3, 8, algo.context_dim)


def test_triplet_loss_zero_when_margin_is_met_and_positive_otherwise():
    def gaussians(*means):
        mean = torch.tensor(means).reshape(1, 1, 1)
        return mean, torch.ones_like(mean)

    valid = torch.ones(1, 1, dtype=torch.bool)
    anchor, near, far = gaussians(0.0), gaussians(0.1), gaussians(10.0)  # KL: 0.005 and 50
    loss, active = triplet_loss(anchor, near, far, 2.0, valid)
    assert loss.item() == 0.0 and active.item() == 0.0
    loss, active = triplet_loss(anchor, far, near, 2.0, valid)
    assert loss.item() == pytest.approx(50.0 - 0.005 + 2.0) and active.item() == 1.0
    loss, _ = triplet_loss(anchor, anchor, anchor, 2.0, valid)  # indistinguishable: the margin
    assert loss.item() == pytest.approx(2.0)


def test_pair_without_confident_rows_gives_zero_loss_and_zero_gradient():
    torch.manual_seed(0)
    mean = [torch.randn(2, 2, 3, requires_grad=True) for _ in range(3)]
    var = [torch.rand(2, 2, 3) + 0.5 for _ in range(3)]
    valid = torch.tensor([[False, True], [False, False]])  # only pair (0, 1) has a triplet
    loss, _ = triplet_loss(*zip(mean, var, strict=True), 2.0, valid)
    a, p, n = ((m[0, 1], v[0, 1]) for m, v in zip(mean, var, strict=True))
    expected = torch.relu(gaussian_kl(*a, *p) - gaussian_kl(*a, *n) + 2.0)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for m in mean:
        assert torch.count_nonzero(m.grad[~valid]) == 0

    # Through the whole update: no confident row anywhere → exactly zero triplet loss and encoder gradient.
    algo = make_algo("mbml")
    batch = make_batch(algo, confident=0.0)
    triplet = algo.losses(batch)["triplet"]
    assert triplet.item() == 0.0
    grads = torch.autograd.grad(triplet, list(algo.encoder.parameters()), allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_triplet_matches_eq_13_when_every_row_is_used():
    # All rows confident and c̃_i as large as ∪_j c_{j→i}: x_{j→i} = c_{j→i}, x_j = c_j, c_{i,j} = c_i.
    algo = make_algo("mbml", relabelled_context_size=(K - 1) * TINY.context_size)
    batch = make_batch(algo, confident=1.1)
    enc, m = algo.encoder, algo.cfg.triplet_margin
    expected = torch.stack(
        [
            torch.stack(
                [
                    torch.relu(
                        gaussian_kl(*enc(batch["relabelled_context"][i, j]), *enc(batch["context"][i]))
                        - gaussian_kl(*enc(batch["relabelled_context"][i, j]), *enc(batch["context"][j]))
                        + m
                    )
                    for j in range(K)
                    if j != i
                ]
            ).mean()
            for i in range(K)
        ]
    ).mean()
    losses = algo.losses(batch)
    torch.testing.assert_close(losses["triplet"], expected)
    assert losses["pair_coverage"].item() == 1.0
    assert losses["relabelled_rows"].item() == (K - 1) * TINY.context_size


def test_reference_triplet_sets_use_every_confident_row_of_the_pair():
    # The official code's sets: x_{j→i} = all confident rows of c_{j→i}, however small c̃_i is. With every row
    # confident that is Eq. 13 over the full sets (as above), while Alg. 4's sets would hold 1 row in all.
    algo = make_algo("mbml", relabelled_context_size=1, triplet_sets="reference")
    batch = make_batch(algo, confident=1.1)
    enc, m, ctx, rel = algo.encoder, algo.cfg.triplet_margin, batch["context"], batch["relabelled_context"]
    expected = torch.stack([
        torch.stack([torch.relu(gaussian_kl(*enc(rel[i, j]), *enc(ctx[i])) - gaussian_kl(*enc(rel[i, j]), *enc(ctx[j]))
                                + m) for j in range(K) if j != i]).mean()
        for i in range(K)
    ]).mean()
    losses = algo.losses(batch)
    torch.testing.assert_close(losses["triplet"], expected)
    assert losses["pair_coverage"].item() == 1.0
    alg4 = make_algo("mbml", relabelled_context_size=1).losses(batch)
    assert alg4["pair_coverage"].item() == pytest.approx(1 / (K - 1))  # one drawn row covers one pair per task


@pytest.mark.parametrize("sets", ["alg4", "reference"])
def test_the_only_triplet_is_the_pair_whose_model_is_confident(sets):
    """Only task 0's models are confident, on every row of c_1: c̃_0 = c_{1→0} while c̃_1 and c̃_2 are empty, and
    the only triplet is pair (0, 1): anchor c_{1→0}, positive c_0, negative c_1 (Eq. 13).

    Catches a transposed pair: planting `confident.transpose(0, 1)` in `sample_relabelled_subset`,
    `relabelled[source, tasks[:, None], row]` for c̃_i, or `batch["relabel_mask"].transpose(0, 1)` /
    `relabelled.transpose(0, 1)` in the reference sets, fails here."""
    algo = make_algo("mbml", relabelled_context_size=(K - 1) * TINY.context_size, triplet_sets=sets)
    mask = torch.zeros(K, K, TINY.context_size, dtype=torch.bool)
    mask[0, 1] = True
    batch = make_batch(algo, mask=mask)
    enc, m, ctx, rel = algo.encoder, algo.cfg.triplet_margin, batch["context"], batch["relabelled_context"]
    losses = algo.losses(batch)
    with torch.no_grad():
        anchor = enc(rel[0, 1])
        triplet = torch.relu(gaussian_kl(*anchor, *enc(ctx[0])) - gaussian_kl(*anchor, *enc(ctx[1])) + m)
        posteriors = [enc(torch.cat([ctx[0], rel[0, 1]])), enc(ctx[1]), enc(ctx[2])]  # q(z | c_i ∪ c̃_i)
        kl = torch.stack([kl_to_standard_normal(*p) for p in posteriors]).mean()
    torch.testing.assert_close(losses["triplet"].detach(), triplet)
    torch.testing.assert_close(losses["kl"].detach(), kl)
    assert losses["pair_coverage"].item() == pytest.approx(1 / (K * (K - 1)))


def test_reference_triplet_sets_ignore_unconfident_rows():
    algo = make_algo("mbml", triplet_sets="reference")
    batch = make_batch(algo, confident=0.3)  # unconfident relabelled rows are NaN
    losses = algo.losses(batch)
    off = ~torch.eye(K, dtype=torch.bool)
    covered = batch["relabel_mask"].any(-1)[off].float().mean()
    assert torch.isfinite(losses["total"]) and losses["pair_coverage"].item() == pytest.approx(covered.item())
    losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in algo.encoder.parameters() if p.grad is not None)


def test_encoder_learns_from_triplet_and_q_but_not_from_g_or_xi():
    algo = make_algo("mbml")
    losses = algo.losses(make_batch(algo))
    params = list(algo.encoder.parameters())

    def encoder_grad(term):
        grads = torch.autograd.grad(losses[term], params, retain_graph=True, allow_unused=True)
        return sum(0.0 if g is None else g.abs().sum().item() for g in grads)

    assert encoder_grad("triplet") > 0 and encoder_grad("q") > 0 and encoder_grad("kl") > 0
    assert encoder_grad("g") == 0 and encoder_grad("xi") == 0


def test_distillation_losses_fall_on_a_fixed_problem():
    algo = make_algo("no-triplet", seed=3, lr=3e-3)
    batch = make_batch(algo, seed=4)
    history = [algo.update(batch) for _ in range(100)]
    for term in ("q", "g", "xi"):
        first, last = history[0][term], np.mean([h[term] for h in history[-10:]])
        assert last < 0.5 * first, (term, first, last)


def test_eq_11_picks_the_hardest_pairs():
    # z is 1-D with unit variances, so d = KL = ½ Δμ². Task 0 sets at 0, 1, 3; task 1 sets at 10, 4, 12.
    mean = torch.tensor([[0.0, 1.0, 3.0], [10.0, 4.0, 12.0]]).unsqueeze(-1).requires_grad_()
    var = torch.ones_like(mean)
    loss, active = hard_negative_triplet_loss(mean, var, margin=1.0)
    # task 0: hardest positive 0↔3 (4.5), hardest negative 3↔4 (0.5); task 1: 4↔12 (32) and 4↔3 (0.5)
    assert loss.item() == pytest.approx(((4.5 - 0.5 + 1.0) + (32.0 - 0.5 + 1.0)) / 2)
    assert active.item() == 1.0
    loss.backward()
    assert mean.grad[0, 1].item() == 0.0 and mean.grad[1, 0].item() == 0.0  # sets in no hardest pair
    assert torch.count_nonzero(mean.grad) == 4
    # tasks far apart relative to their spread: the margin is met, no loss
    loss, active = hard_negative_triplet_loss(
        torch.tensor([[[0.0], [1.0]], [[20.0], [21.0]]]), torch.ones(2, 2, 1), 1.0
    )
    assert loss.item() == 0.0 and active.item() == 0.0


def test_alg_4_sets():
    """c̃_i holds distinct confident rows of the other tasks; the random mask is asymmetric in (i, j), so a planted
    `confident.transpose(0, 1)` in `sample_relabelled_subset` fails here."""
    g = torch.Generator().manual_seed(0)
    confident = torch.rand(4, 4, 6, generator=g) < 0.3
    confident[2] = False
    confident[2, 0, :2] = True  # task 2: exactly two confident rows, both from task 0
    source, row, chosen = sample_relabelled_subset(confident, size=5, generator=g)
    assert source.shape == (4, 5)
    picked = confident[torch.arange(4)[:, None], source, row]
    assert picked[chosen].all() and (source[chosen] != torch.arange(4)[:, None].expand(4, 5)[chosen]).all()
    eligible = (confident & ~torch.eye(4, dtype=torch.bool)[:, :, None]).flatten(1).sum(1)
    assert chosen.sum(1).tolist() == eligible.clamp(max=5).tolist()
    assert sorted(row[2][chosen[2]].tolist()) == [0, 1] and (source[2][chosen[2]] == 0).all()
    # no row is drawn twice
    for i in range(4):
        drawn = list(zip(source[i][chosen[i]].tolist(), row[i][chosen[i]].tolist(), strict=True))
        assert len(set(drawn)) == len(drawn)

    sizes = torch.tensor([[0, 3], [6, 9]])
    mask = random_subset_mask(sizes, 6, generator=g)
    assert mask.sum(-1).tolist() == [[0, 3], [6, 6]]


def test_state_dict_resumes_exactly_and_policy_state_acts_identically():
    algo = make_algo("mbml")
    batch = make_batch(algo)
    for _ in range(3):
        algo.update(batch)
    stored = to_numpy_tree(algo.state_dict())  # what an HDF5 round trip gives back
    expected = algo.update(batch)

    torch.manual_seed(99)  # a fresh agent with other weights and generator, the same teachers
    resumed = MBML(
        algo.cfg,
        OBS,
        ACT,
        MAX_ACTION,
        algo.teachers,
        "cpu",
        variant=algo.variant,
    )
    resumed.load_state_dict(to_torch_tree(stored))
    assert resumed.update(batch) == expected

    policy = MBML.from_policy_state(algo.cfg, to_torch_tree(to_numpy_tree(algo.policy_state_dict())), "cpu")
    obs, z = np.random.default_rng(0).normal(size=(5, OBS)), algo.sample_z()
    actions = [agent.act(obs, z, generator=torch.Generator().manual_seed(7)) for agent in (algo, policy)]
    np.testing.assert_array_equal(*actions)
    np.testing.assert_array_equal(
        algo.posterior(batch["context"][0])[1], policy.posterior(batch["context"][0])[1]
    )


def altered(cfg, name):
    """`cfg` with field `name` changed to another valid value."""
    value = getattr(cfg, name)
    return {name: "reference" if value == "alg4" else "alg4"} if name == "triplet_sets" else {name: value * 2 + 1}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_variant_ignores_the_fields_the_registry_says_it_does_not_read(variant):
    """The registry leaves these fields out of the variant's fingerprints: changing one must change nothing
    in its batches or its update, or its artifacts would wrongly stay up to date."""
    from mtrl.methods import get_method

    unused = get_method(variant).unused_fields
    assert unused and set(unused) <= {f.name for f in dataclasses.fields(MBMLConfig)}
    reference = make_algo(variant)
    batch = make_batch(reference)
    expected = reference.losses(batch)
    for name in unused:
        other = make_algo(variant, **altered(TINY, name))
        assert other.batch_shapes() == reference.batch_shapes(), name
        losses = other.losses(batch)
        assert all(torch.equal(losses[k], expected[k]) for k in expected), name


def test_the_fields_a_variant_reads_change_its_update():
    """The converse, for the fields only some variants read: each reader's update or batch depends on it."""
    from mtrl.methods import get_method

    for variant in VARIANTS:
        read = {f.name for f in dataclasses.fields(MBMLConfig)} - set(get_method(variant).unused_fields)
        reference = make_algo(variant, triplet_margin=50.0)
        batch = make_batch(reference)
        for name in read & {"triplet_margin", "triplet_sets", "context_size", "relabelled_context_size",
                            "no_relabel_context_size", "hard_negative_sets", "neither_context_size"}:
            other = make_algo(variant, **{"triplet_margin": 50.0, **altered(dataclasses.replace(
                TINY, triplet_margin=50.0), name)})
            if other.batch_shapes() != reference.batch_shapes():
                continue  # the batch it asks for changed
            assert not torch.equal(other.losses(batch)["total"], reference.losses(batch)["total"]), (variant, name)

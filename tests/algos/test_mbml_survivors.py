"""MBML behaviour that mutation testing (docs/mutation.md) found unpinned: error messages, metric names, the
configured network sizes, which sets condition distillation, the reference triplet sets with partial
confidence, and Eq. 9/11/13's statistics computed by brute force."""

import dataclasses

import pytest
import torch
from test_mbml import LATENT, OBS, TINY, K, make_algo, make_batch, make_teachers

from mtrl.algos.context import gaussian_kl, kl_to_standard_normal
from mtrl.algos.mbml import MBML, hard_negative_triplet_loss, random_subset_mask, triplet_loss


def test_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"variant must be one of .*got 'other'"):
        MBML(TINY, OBS, 2, 1.0, make_teachers(), "cpu", variant="other")
    with pytest.raises(ValueError, match=r"noise width is undetermined: .*\{4, 7\}"):
        MBML(TINY, OBS, 2, 1.0, make_teachers(), "cpu", latent_dim=7)
    acting_only = MBML(TINY, OBS, 2, 1.0, None, "cpu", latent_dim=LATENT)
    with pytest.raises(ValueError, match=r"^MBML.update needs the per-task BCQ teachers$"):
        acting_only.losses({})
    algo = make_algo("neither")
    batch = make_batch(algo)
    batch["actions"] = batch["actions"][:, :3]
    with pytest.raises(ValueError, match=r"batch\['actions'\] has shape \(3, 3, 2\), expected \(3, 16, 2\)"):
        algo.losses(batch)
    batch = make_batch(algo)
    batch["context"] = batch["context"] > 0
    with pytest.raises(ValueError, match=r"batch\['context'\] has dtype torch.bool"):
        algo.losses(batch)


def test_acting_only_agent_has_no_tasks_and_builds_on_the_cpu_by_default():
    algo = make_algo("neither")
    acting_only = MBML(TINY, OBS, 2, 1.0, None, "cpu", latent_dim=LATENT)
    assert acting_only.tasks == 0 and acting_only.batch_shapes()["observations"][0] == 0
    restored = MBML.from_policy_state(algo.cfg, algo.policy_state_dict())  # no device: the CPU
    assert restored.device == torch.device("cpu")


def test_networks_have_the_configured_widths():
    cfg = dataclasses.replace(TINY, encoder_hidden=(5, 6), q_hidden=(7,), g_hidden=(8,), xi_hidden=(9,))
    algo = MBML(cfg, OBS, 2, 1.0, make_teachers(), "cpu")
    for net, widths in ((algo.encoder, (5, 6)), (algo.q_d, (7,)), (algo.g_d, (8,)), (algo.xi_d, (9,))):
        linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        assert tuple(m.out_features for m in linear[:-1]) == widths


@pytest.mark.parametrize("variant", ["mbml", "no-relabel"])
def test_triplet_variants_report_the_fraction_of_active_hinges(variant):
    algo = make_algo(variant)
    metrics = algo.update(make_batch(algo))
    assert 0.0 <= metrics["triplet_active"] <= 1.0


def test_no_relabel_distils_with_the_first_context_set():
    algo = make_algo("no-relabel")
    batch = make_batch(algo)
    kl = algo.losses(batch)["kl"].detach()
    with torch.no_grad():
        first = kl_to_standard_normal(*algo.encoder(batch["context"][:, 0])).mean()
        second = kl_to_standard_normal(*algo.encoder(batch["context"][:, 1])).mean()
    torch.testing.assert_close(kl, first)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("variant", ["mbml", "no-triplet"])
def test_without_confident_rows_the_posterior_is_that_of_the_own_context(variant):
    """c̃_i is empty: its unfilled slots must not enter q(z | c_i ∪ c̃_i)."""
    algo = make_algo(variant)
    batch = make_batch(algo, confident=0.0)
    kl = algo.losses(batch)["kl"].detach()
    with torch.no_grad():
        expected = kl_to_standard_normal(*algo.encoder(batch["context"])).mean()
    torch.testing.assert_close(kl, expected)


def test_reference_triplet_sets_with_partial_confidence_by_hand():
    """x_{j→i} = the confident rows of c_{j→i}, x_j the same rows of c_j, c_{i,j} a uniform |x_j| rows of c_i;
    pairs without a row add nothing, and a task's loss is the mean over its valid pairs (replayed draws)."""
    algo = make_algo("mbml", triplet_sets="reference", triplet_margin=3.0)
    batch = make_batch(algo)
    n = TINY.context_size
    counts = {(0, 1): 1, (0, 2): 3, (1, 0): 0, (1, 2): 5, (2, 0): 2, (2, 1): 0}  # tasks 1, 2: one valid pair
    mask = torch.zeros(K, K, n, dtype=torch.bool)
    for (i, j), c in counts.items():
        mask[i, j, n - c:] = True
    mask[torch.arange(K), torch.arange(K)] = True  # the diagonal is ignored
    relabelled = batch["context"][None].repeat(K, 1, 1, 1)
    relabelled[..., -1] = torch.randn(relabelled.shape[:-1], generator=torch.Generator().manual_seed(2))
    relabelled[~mask] = torch.nan  # as make_batch: unconfident rows may hold anything
    batch["relabel_mask"], batch["relabelled_context"] = mask, relabelled
    start = algo.generator.get_state()
    triplet = algo.losses(batch)["triplet"].detach()

    g = torch.Generator().set_state(start)  # replay: ν, then Alg. 4's c̃_i, then the positive subsets
    torch.randn(K, TINY.batch_size, LATENT, generator=g)
    torch.rand(K, K * n, generator=g)
    from_task = mask & ~torch.eye(K, dtype=torch.bool)[:, :, None]
    positive_rows = random_subset_mask(from_task.sum(-1), n, g)
    enc, ctx, rel, m = algo.encoder, batch["context"], batch["relabelled_context"], 3.0
    per_task = []
    with torch.no_grad():
        for i in range(K):
            hinges = []
            for j in range(K):
                if j == i or counts[(i, j)] == 0:
                    continue
                rows = from_task[i, j]
                anchor = enc(rel[i, j][rows])
                positive, negative = enc(ctx[i][positive_rows[i, j]]), enc(ctx[j][rows])
                hinges.append(torch.relu(gaussian_kl(*anchor, *positive) - gaussian_kl(*anchor, *negative) + m))
            per_task.append(torch.stack(hinges).mean())
    torch.testing.assert_close(triplet, torch.stack(per_task).mean(), rtol=1e-5, atol=1e-6)


def test_triplet_loss_statistics_by_brute_force():
    g = torch.Generator().manual_seed(3)
    anchor, positive, negative = ((torch.randn(3, 3, 2, generator=g), torch.rand(3, 3, 2, generator=g) + 0.5)
                                  for _ in range(3))
    valid = torch.tensor([[False, True, True], [True, False, False], [False, False, False]])
    hinge = gaussian_kl(*anchor, *positive) - gaussian_kl(*anchor, *negative)
    margin = 0.5 - hinge[0, 1].item()  # pair (0, 1) gets a hinge of 0.5: active, and below 1
    loss, active = triplet_loss(anchor, positive, negative, margin, valid)
    h = torch.relu(hinge + margin)
    expected = ((h[0, 1] + h[0, 2]) / 2 + h[1, 0]) / 2  # tasks 0 and 1 have pairs; task 2 has none
    torch.testing.assert_close(loss, expected)
    assert active.item() == pytest.approx(((h > 0) & valid).sum().item() / 3)


def test_hard_negative_loss_by_brute_force():
    g = torch.Generator().manual_seed(4)
    k, n = 3, 2
    mean, var = torch.randn(k, n, 2, generator=g) * 2, torch.rand(k, n, 2, generator=g) + 0.5
    d = [[[[gaussian_kl(mean[i, a], var[i, a], mean[j, b], var[j, b]).item() for b in range(n)] for j in range(k)]
          for a in range(n)] for i in range(k)]
    gaps = []
    for i in range(k):
        positive = max(d[i][a][i][b] for a in range(n) for b in range(n))
        negative = min(d[i][a][j][b] for a in range(n) for j in range(k) if j != i for b in range(n))
        gaps.append(positive - negative)
    # a margin that makes every hinge positive (the loss sees each task's own hardest pairs), then one that
    # makes task 0's hinge 0.5 (active, and below 1)
    for margin in (30.0 - min(gaps), 0.5 - gaps[0]):
        loss, active = hard_negative_triplet_loss(mean, var, margin)
        hinges = [max(gap + margin, 0.0) for gap in gaps]
        assert loss.item() == pytest.approx(sum(hinges) / k, rel=1e-5)
        assert active.item() == pytest.approx(sum(h > 0 for h in hinges) / k)


def test_random_subsets_are_independent_across_entries():
    g = torch.Generator().manual_seed(5)
    sizes = torch.tensor([3, 3])
    differ = sum(not torch.equal(*random_subset_mask(sizes, 8, g)) for _ in range(20))
    assert differ >= 15  # the same 3 of 8 rows for both entries has probability 1/56 per draw

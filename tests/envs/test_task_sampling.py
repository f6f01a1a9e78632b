"""The shape of the task distributions and of MBML's set sampling, by chi-square tests with fixed seeds.

Each test draws many samples from a fixed seed, bins them, and compares the counts with the distribution the
docstring promises (a statistic above the 0.1 % critical value fails; with a fixed seed the test is
deterministic). A sampler that drops the square root of the sector's radius, narrows an interval, or favours
some rows fails here.
"""

import numpy as np
import torch

from mtrl.algos.mbml import random_subset_mask, sample_relabelled_subset
from mtrl.envs import sampling

CHI2_999 = {4: 18.47, 8: 26.12, 9: 27.88, 11: 31.26, 19: 43.82}  # chi-square critical values at p = 0.001, by dof


def chi2_uniform(counts):
    counts = np.asarray(counts, float).ravel()
    expected = counts.sum() / len(counts)
    return ((counts - expected) ** 2 / expected).sum()


def assert_uniform(values, low, high, bins=10):
    assert values.min() >= low and values.max() <= high
    counts, _ = np.histogram(values, bins=bins, range=(low, high))
    assert chi2_uniform(counts) < CHI2_999[bins - 1], counts


def test_uniform_scalar_and_box_cover_their_whole_interval_evenly():
    rng = np.random.default_rng(0)
    scalar = sampling.uniform_scalar(rng, 5000, low=0.5, high=3.0)
    assert scalar.shape == (5000, 1)
    assert_uniform(scalar[:, 0], 0.5, 3.0)
    box = sampling.uniform_box(rng, 5000, low=-1.0, high=1.0)
    assert box.shape == (5000, 2)
    for axis in range(2):
        assert_uniform(box[:, axis], -1.0, 1.0)
    assert abs(np.corrcoef(box.T)[0, 1]) < 0.05  # independent coordinates


def test_points_on_arc_have_uniform_angles_at_the_radius():
    points = sampling.points_on_arc(np.random.default_rng(1), 5000, radius=2.0, max_angle=np.pi)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 2.0)
    assert_uniform(np.arctan2(points[:, 1], points[:, 0]), 0.0, np.pi)


def test_stratified_arc_puts_one_angle_in_each_slice():
    n = 8
    points = sampling.stratified_points_on_arc(np.random.default_rng(2), n, radius=1.0, max_angle=np.pi)
    angles = np.arctan2(points[:, 1], points[:, 0])
    assert np.array_equal(np.floor(angles / (np.pi / n)), np.arange(n))
    within = np.concatenate([  # position inside its slice: uniform over many draws
        (np.arctan2(p[:, 1], p[:, 0]) / (np.pi / n)) % 1.0
        for p in (sampling.stratified_points_on_arc(np.random.default_rng(s), n, 1.0, np.pi) for s in range(500))])
    assert_uniform(within, 0.0, 1.0)


def test_points_in_sector_are_uniform_over_its_area():
    points = sampling.points_in_sector(np.random.default_rng(3), 8000, max_radius=2.0, max_angle=np.pi / 2)
    radius = np.linalg.norm(points, axis=1)
    assert radius.max() <= 2.0
    assert_uniform((radius / 2.0) ** 2, 0.0, 1.0)  # area inside radius r grows as r²
    assert_uniform(np.arctan2(points[:, 1], points[:, 0]), 0.0, np.pi / 2)


def test_umaze_goals_alternate_arms_and_are_uniform_in_each():
    goals = sampling.umaze_goals(np.random.default_rng(4), 6000)
    assert (goals[0::2, 1] > 0).all() and (goals[1::2, 1] < 0).all()
    assert_uniform(goals[:, 0], -0.8, 0.2)
    assert_uniform(np.abs(goals[:, 1]), 0.6, 1.4)


def test_walker_scales_are_log_uniform_per_parameter():
    scales = sampling.walker_param_scales(np.random.default_rng(5), 4000, log_scale_limit=3.0)
    assert scales.shape == (4000, sampling.WALKER_PARAM_DIM)
    assert_uniform(np.log(scales[:, 0]) / np.log(1.5), -3.0, 3.0)  # body mass: base 1.5
    assert_uniform(np.log(scales[:, 8 + 24]) / np.log(1.3), -3.0, 3.0)  # first dof damping: base 1.3


def test_cycle_repeats_the_choices_in_order():
    assert sampling.cycle(None, 5, [[1.0], [2.0]]).ravel().tolist() == [1.0, 2.0, 1.0, 2.0, 1.0]


def test_relabelled_subset_is_uniform_over_the_confident_rows_of_the_other_tasks():
    """Alg. 4 line 6: c̃_i draws among the confident rows of c_{j→i}, j ≠ i, each as likely, without replacement."""
    k, n, size = 3, 6, 4
    confident = torch.zeros(k, k, n, dtype=torch.bool)
    confident[0, 1, :4] = True  # task 0: 4 rows from task 1 ...
    confident[0, 2, 1:] = True  # ... 5 from task 2 ...
    confident[0, 0, :] = True  # ... and its own rows, which are never eligible
    confident[1, 0, :3] = True  # task 1: only 3 eligible rows, fewer than `size`
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(k, n, dtype=torch.long)
    draws = 3000
    for _ in range(draws):
        source, row, chosen = sample_relabelled_subset(confident, size, g)
        picked = set(zip(source[0].tolist(), row[0].tolist(), strict=True))
        assert len(picked) == size and chosen[0].all()  # without replacement
        for j, t in picked:
            assert confident[0, j, t] and j != 0
            counts[j, t] += 1
        assert chosen[1].sum() == 3 and set(zip(source[1][chosen[1]].tolist(), row[1][chosen[1]].tolist(),
                                                strict=True)) == {(0, 0), (0, 1), (0, 2)}
        assert not chosen[2].any()
    eligible = counts[confident[0] & ~torch.eye(k, dtype=torch.bool)[0][:, None]]
    assert eligible.sum() == draws * size and len(eligible) == 9
    assert chi2_uniform(eligible.numpy()) < CHI2_999[8]


def test_random_subset_mask_draws_exactly_size_rows_uniformly():
    g = torch.Generator().manual_seed(1)
    sizes = torch.tensor([[0, 3], [12, 20]])
    counts = torch.zeros(12)
    for _ in range(2000):
        mask = random_subset_mask(sizes, 12, g)
        assert mask.sum(-1).tolist() == [[0, 3], [12, 12]]
        counts += mask[0, 1].float()
    assert chi2_uniform(counts.numpy()) < CHI2_999[11]

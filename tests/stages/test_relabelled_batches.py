"""Where every column of MBML's batches comes from (mtrl.rl.batches), on synthetic data whose values encode
their origin: task j, dataset row t, column c, and for relabelled values the relabelling task i.

A batch that mixes up tasks or rows, keeps the original rewards where relabelled ones belong, or relabels the
next state of a reward-only family, fails here with the offending column named.
"""

from types import SimpleNamespace

import numpy as np
import pytest
from pairs import asymmetric_pair_mask, is_asymmetric

from mtrl.algos.context import context_rows
from mtrl.algos.mbml import MBMLConfig
from mtrl.errors import ConfigError
from mtrl.rl.batches import RelabelledContexts, baseline_sampler, context_sets, mbml_sampler

K, N, OBS, ACT = 3, 40, 2, 1
D = 2 * OBS + ACT + 1
S_COLS, A_COLS, NEXT_COLS, R_COL = slice(0, OBS), slice(OBS, OBS + ACT), slice(OBS + ACT, 2 * OBS + ACT), D - 1


def code(task, row, column):
    """The value at (task j, dataset row t, column c) of the original data: readable back by `decode`."""
    return 1000.0 * (task + 1) + 10.0 * row + column


def decode(value):
    task, rest = divmod(value, 1000.0)
    return int(task) - 1, int(rest // 10)


def datasets():
    """K datasets of N rows; column c of [s, a, s', r] holds code(j, t, c) (the reward negated)."""
    out = []
    for j in range(K):
        t = np.arange(N)[:, None]
        out.append({"observations": code(j, t, np.arange(OBS)).astype(np.float32),
                    "actions": code(j, t, OBS + np.arange(ACT)).astype(np.float32),
                    "next_observations": code(j, t, OBS + ACT + np.arange(OBS)).astype(np.float32),
                    "rewards": -code(j, t[:, 0], R_COL).astype(np.float32),
                    "terminals": np.zeros(N, np.float32)})
    return out


def relabelled_code(i, j, m, column=0):
    """Relabelled values by task i's models of relabel row m of task j: 1e5·(i + 1) above the original code."""
    return 1e5 * (i + 1) + code(j, m, column)


class FakeRelabelArtifact:
    """The arrays of relabel.h5 that `RelabelledContexts.load` reads; both masks differ between pairs (i, j) and
    (j, i), as real ensembles' confidence does."""

    def __init__(self, dynamics: bool, m: int = 7):
        rng = np.random.default_rng(3)
        self.arrays = {"indices": np.stack([np.sort(rng.choice(N, m, replace=False)) for _ in range(K)])}
        i, j, r = np.meshgrid(np.arange(K), np.arange(K), np.arange(m), indexing="ij")
        self.arrays["rewards"] = relabelled_code(i, j, r, R_COL).astype(np.float32)
        self.arrays["reward_mask"] = asymmetric_pair_mask(K, m, seed=1)
        if dynamics:
            cols = OBS + ACT + np.arange(OBS)
            self.arrays["next_observations"] = relabelled_code(i[..., None], j[..., None], r[..., None], cols)
            self.arrays["next_state_mask"] = asymmetric_pair_mask(K, m, seed=2, keep=0.7)

    def array(self, name):
        return self.arrays[name]

    def __contains__(self, name):
        return name in self.arrays


@pytest.mark.parametrize("dynamics", [False, True])
def test_relabelled_contexts_every_column_comes_from_the_right_task_row_and_model(dynamics):
    data, art = datasets(), FakeRelabelArtifact(dynamics)
    contexts = RelabelledContexts.load(art, data)
    indices = art.arrays["indices"]
    m = indices.shape[1]
    # rows: relabel row r of task j is dataset row indices[j, r] of task j, with its own reward
    for j in range(K):
        for r in range(m):
            t = indices[j, r]
            expected = context_rows(*(data[j][key][t] for key in
                                      ("observations", "actions", "next_observations", "rewards")))
            np.testing.assert_array_equal(contexts.rows[j, r], expected)
    expected_mask = art.arrays["reward_mask"] & (art.arrays["next_state_mask"] if dynamics else True)
    np.testing.assert_array_equal(contexts.mask, expected_mask)

    size = 25
    context, relabelled, mask = contexts.sample(np.random.default_rng(0), size)
    assert context.shape == (K, size, D) and relabelled.shape == (K, K, size, D) and mask.shape == (K, K, size)
    row_of = {(j, int(t)): r for j in range(K) for r, t in enumerate(indices[j])}
    for j in range(K):
        for s in range(size):
            task, t = decode(context[j, s, 0])
            assert task == j, "context c_j holds rows of task j"
            r = row_of[(j, t)]  # the relabel row it was drawn as
            np.testing.assert_array_equal(context[j, s], contexts.rows[j, r])
            for i in range(K):
                row = relabelled[i, j, s]
                np.testing.assert_array_equal(row[S_COLS], context[j, s, S_COLS], err_msg="s: the original")
                np.testing.assert_array_equal(row[A_COLS], context[j, s, A_COLS], err_msg="a: the original")
                assert row[R_COL] == relabelled_code(i, j, r, R_COL), f"r of c_{{{j}->{i}}}: task {i}'s relabel"
                if dynamics:
                    cols = OBS + ACT + np.arange(OBS)
                    np.testing.assert_array_equal(row[NEXT_COLS], relabelled_code(i, j, r, cols).astype(np.float32),
                                                  err_msg="s': task i's relabelled next state")
                else:
                    np.testing.assert_array_equal(row[NEXT_COLS], context[j, s, NEXT_COLS],
                                                  err_msg="s': the original (reward-only family)")
                assert mask[i, j, s] == contexts.mask[i, j, r], "mask of the same (i, j, row)"


@pytest.mark.parametrize("dynamics", [False, True])
def test_the_mask_of_pair_i_j_is_the_confidence_of_task_i_models_on_task_j_rows(dynamics):
    """Only pair (0, 1) is confident (for a dynamics family: only its next states; its rewards both ways): the
    sampled relabel_mask keeps c_{1->0} and nothing of c_{0->1}. The fixtures are asymmetric in (i, j) too.

    Catches a transposed pair: planting `self.mask.transpose(1, 0, 2)` in `RelabelledContexts.sample`, or
    `art.array("next_state_mask").transpose(1, 0, 2)` in `load`, fails here; both passed the whole suite
    while the fixture masks were symmetric in i and j."""
    art = FakeRelabelArtifact(dynamics)
    assert is_asymmetric(art.arrays["reward_mask"]) and (not dynamics or is_asymmetric(art.arrays["next_state_mask"]))
    only_0_1 = np.zeros_like(art.arrays["reward_mask"])
    only_0_1[0, 1] = True
    if dynamics:
        art.arrays["reward_mask"] = only_0_1 | only_0_1.transpose(1, 0, 2)
        art.arrays["next_state_mask"] = only_0_1
    else:
        art.arrays["reward_mask"] = only_0_1
    _, _, mask = RelabelledContexts.load(art, datasets()).sample(np.random.default_rng(0), 10)
    np.testing.assert_array_equal(mask, np.broadcast_to(only_0_1[..., :1], mask.shape))


def test_mbml_sampler_pairs_observations_with_their_actions_per_task():
    data = datasets()
    cfg = MBMLConfig(batch_size=64, context_size=16, neither_context_size=16, no_relabel_context_size=8,
                     hard_negative_sets=3)
    contexts = RelabelledContexts.load(FakeRelabelArtifact(False), data)
    for variant in ("mbml", "neither", "no-relabel"):
        batch = mbml_sampler(data, cfg, variant, contexts if variant == "mbml" else None)(np.random.default_rng(1))
        assert batch["observations"].shape == (K, 64, OBS)
        for j in range(K):
            for s in range(64):
                task, t = decode(batch["observations"][j, s, 0])
                assert task == j
                np.testing.assert_array_equal(batch["actions"][j, s], data[j]["actions"][t])
        if variant == "mbml":
            assert set(batch) == {"observations", "actions", "context", "relabelled_context", "relabel_mask"}
        else:
            context = batch["context"]
            assert context.shape == ((K, 16, D) if variant == "neither" else (K, 3, 8, D))
            _assert_rows_of_own_task(context, data)


def _assert_rows_of_own_task(context, data):
    for j in range(K):
        rows = context[j].reshape(-1, D)
        for row in rows:
            task, t = decode(row[0])
            assert task == j
            expected = context_rows(*(data[j][key][t] for key in
                                      ("observations", "actions", "next_observations", "rewards")))
            np.testing.assert_array_equal(row, expected)


def test_context_sets_are_whole_rows_of_the_tasks_own_data():
    data = datasets()
    _assert_rows_of_own_task(context_sets(data, np.random.default_rng(2), (4, 5)), data)


def test_every_row_can_be_drawn_and_rows_are_drawn_uniformly():
    """Row 0 and the last row included: counts over many draws are flat (chi-square, fixed seed)."""
    data = datasets()
    rng = np.random.default_rng(4)
    contexts = RelabelledContexts.load(FakeRelabelArtifact(False, m=N), data)  # every dataset row relabelled
    cfg = MBMLConfig(batch_size=200, context_size=200, neither_context_size=200)
    counts = {"relabel": np.zeros(N), "batch": np.zeros(N), "context": np.zeros(N), "baseline": np.zeros(N)}
    baseline = baseline_sampler(data, SimpleNamespace(batch_size=200, context_size=200))
    for _ in range(10):
        context, _, _ = contexts.sample(rng, 200)
        batch = mbml_sampler(data, cfg, "neither", None)(rng)
        base = baseline(rng)
        for key, values in (("relabel", context[0, :, 0]), ("batch", batch["observations"][0, :, 0]),
                            ("context", batch["context"][0, :, 0]), ("baseline", base["observations"][0, :, 0])):
            np.add.at(counts[key], [decode(v)[1] for v in values], 1)
    for key, c in counts.items():
        assert c.min() > 0, f"{key}: a row is never drawn"
        expected = c.sum() / N
        assert ((c - expected) ** 2 / expected).sum() < 72.06, key  # chi-square, 39 dof, p = 0.001


def test_baseline_batches_are_whole_transitions_of_each_task_and_a_context_of_its_own_rows():
    data = datasets()
    for j in range(K):
        data[j]["terminals"] = (np.arange(N) % 3 == 0).astype(np.float32)
    batch = baseline_sampler(data, SimpleNamespace(batch_size=32, context_size=12))(np.random.default_rng(5))
    assert set(batch) == {"observations", "actions", "rewards", "next_observations", "terminals", "context"}
    assert batch["observations"].shape == (K, 32, OBS) and batch["context"].shape == (K, 12, D)
    for j in range(K):
        for s in range(32):
            task, t = decode(batch["observations"][j, s, 0])
            assert task == j
            for key in ("actions", "rewards", "next_observations", "terminals"):
                np.testing.assert_array_equal(batch[key][j, s], data[j][key][t], err_msg=key)
    _assert_rows_of_own_task(batch["context"], data)
    one = baseline_sampler(data[:1], SimpleNamespace(batch_size=4, context_size=2))(np.random.default_rng(6))
    assert one["observations"].shape == (1, 4, OBS)  # a single task


def test_relabel_artifact_of_another_task_count_is_refused():
    data = datasets()
    art = FakeRelabelArtifact(False)
    art.arrays["indices"] = art.arrays["indices"][:-1]
    with pytest.raises(ValueError):
        RelabelledContexts.load(art, data)
    single = FakeRelabelArtifact(False)  # one task: loads (nothing to relabel across, but no crash)
    single.arrays = {key: value[:1] if key == "indices" else value[:1, :1] for key, value in single.arrays.items()}
    assert RelabelledContexts.load(single, data[:1]).rows.shape[0] == 1


def test_relabel_variants_need_relabel_h5():
    with pytest.raises(ConfigError, match="variant mbml needs relabel.h5; run `mtrl relabel` first"):
        mbml_sampler(datasets(), MBMLConfig(), "mbml", None)

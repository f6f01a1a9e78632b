"""What `relabel` (MBML Alg. 3, Eq. 7) writes, unit-sized: tiny datasets written with the artifact writer, the
reward and next-state ensembles replaced by fakes whose predictions encode (model task i, data task j, dataset
row t) and whose std follows a fixed pattern, so every kept row, value and statistic of relabel.h5 can be
checked by hand. No pipeline run, no training.
"""

import logging

import numpy as np
import pytest
import torch

from mtrl.algos.ensemble import EnsembleRegressor
from mtrl.artifacts import ArtifactMeta, ArtifactWriter, open_artifact
from mtrl.config import load_config
from mtrl.errors import ConfigError
from mtrl.pipeline import layout
from mtrl.pipeline.base import RunOptions, UnitContext
from mtrl.stages.relabel import Relabel, _threshold, relabel_statistics

GOALS = np.array([[1.0, 0.0], [0.0, 1.0], [-0.5, 0.5]])  # three PointGoalArc-like goals (train tasks)
LENGTHS = (12, 10, 14)  # dataset rows per task: the shortest bounds the relabelled subset
OBS = ACT = 2  # the point families



def make_config(*overrides):
    """The defaults on PointGoalArc with 3 training and 2 test tasks, built without a config file (the mutation
    runner copies only mtrl/ and tests/)."""
    return load_config(None, overrides=("env.family=PointGoalArc", "env.n_train=3", "env.n_test=2", *overrides))


def code(j, t):
    """Column 0 of task j's observation in dataset row t: the fakes read (j, t) back from it."""
    return 1000.0 * (j + 1) + t


def decode(x0):
    j, t = np.divmod(np.rint(x0).astype(int), 1000)
    return j - 1, t


def reward_std(i, j, t):
    """The fake reward ensemble's std: 0.005, 0.015, 0.025 or 0.035 (never on a threshold used below); it differs
    between pairs (i, j) and (j, i), as real ensembles' confidence does."""
    return 0.005 + 0.01 * ((i + 2 * j + t) % 4)


NEXT_STD = np.array([[0.004, 0.006],   # mean 0.005, max 0.006: confident by either statistic (threshold 0.01)
                     [0.002, 0.014],   # mean 0.008, max 0.014: confident by the mean only
                     [0.012, 0.016]])  # mean 0.014: confident by neither


def next_state_case(i, j, t):
    """The row of NEXT_STD for model i on row t of task j: asymmetric in (i, j), as `reward_std`."""
    return (2 * i + j + t) % 3


class FakeEnsemble:
    """Model `task`'s predictions on rows [obs, act]: reward 1e5·(i + 1) + code(j, t); next state
    (2e5·(i + 1) + code, 3e5·(i + 1) + code); std by `reward_std` / `NEXT_STD`."""

    made = []  # (cfg, task, target) of every ensemble built

    def __init__(self, cfg, state, device):
        self.task, self.dynamics = int(state["task"]), bool(state["dynamics"])
        self.tasks, self.device, self.out_dim = 1, torch.device("cpu"), 2 if self.dynamics else 1
        assert device == torch.device("cpu"), "built on the unit's device"
        FakeEnsemble.made.append((cfg, self.task, "dynamics" if self.dynamics else "rewards"))

    def predict(self, x):
        i, x0 = self.task, x[:, 0].numpy().astype(np.float64)
        assert x.shape[1] == OBS + ACT, "the ensemble sees (observation, action)"
        j, t = decode(x0)
        if self.dynamics:
            mean = np.stack([2e5 * (i + 1) + x0, 3e5 * (i + 1) + x0], -1)
            std = NEXT_STD[next_state_case(i, j, t)]
        else:
            mean, std = (1e5 * (i + 1) + x0)[:, None], reward_std(i, j, t)[:, None]
        return torch.as_tensor(mean[None], dtype=torch.float32), torch.as_tensor(std[None], dtype=torch.float32)


@pytest.fixture(autouse=True)
def fake_ensembles(monkeypatch):
    FakeEnsemble.made = []
    monkeypatch.setattr(EnsembleRegressor, "from_policy_state", staticmethod(FakeEnsemble))


def next_observations(j, n):
    """Task j's next states: row t sits at distance 0.05·t from goal (t mod 3) along x, so true rewards differ."""
    t = np.arange(n)
    return (GOALS[t % 3] + np.stack([0.05 * t, np.zeros(n)], -1)).astype(np.float32)


def build_run(run_dir, family="PointGoalArc", kind="replay", dynamics=False, info_keys=()):
    """tasks.h5, one dataset per task (of `kind`) and fake ensembles' weights, as the earlier stages leave them."""
    with ArtifactWriter(layout.tasks(run_dir), ArtifactMeta("tasks", "tasks", {})) as w:
        w.array("train_tasks", GOALS if family != "PointRobotWind" else GOALS * 0.01)
        w.array("test_tasks", np.array([[0.7, 0.7]]) if family != "PointRobotWind" else np.zeros((1, 2)))
        w.attrs["family"] = family
    for j, n in enumerate(LENGTHS):
        t = np.arange(n)
        with ArtifactWriter(layout.dataset(run_dir, j, kind), ArtifactMeta("dataset", "collect", {})) as w:
            w.array("observations", np.stack([code(j, t), 0.1 * t], -1).astype(np.float32))
            w.array("actions", np.full((n, ACT), 0.5, np.float32))
            w.array("rewards", np.full(n, -9.0, np.float32))  # the original rewards: never in relabel.h5
            w.array("next_observations", next_observations(j, n))
            w.array("terminals", np.zeros(n, np.float32))
            w.array("timeouts", np.zeros(n, np.float32))
            for key in info_keys:
                w.array(f"infos/{key}", np.zeros(n, np.float32))
            w.attrs["task"] = j
        for target in ("rewards", "dynamics") if dynamics else ("rewards",):
            with ArtifactWriter(layout.ensemble(run_dir, target, j),
                                ArtifactMeta("ensemble", f"fit-{target}", {})) as w:
                w.tree("weights", {"task": np.array(j), "dynamics": np.array(target == "dynamics")})


def run_relabel(config, run_dir, source="learned", seed=7):
    stage = Relabel()
    (unit,) = [u for u in stage.units(config, run_dir) if u.key == source]
    ctx = UnitContext(stage, config, unit, RunOptions(run_dir=run_dir, device="cpu"), {}, seed,
                      logging.getLogger("mtrl.test.relabel"))
    stage.run_unit(ctx)
    art = open_artifact(layout.relabel(run_dir, source), "relabel")
    return {key: art.array(key) for key in art.file if key != "stats"} | {"stats": art.tree("stats"),
                                                                            "source": art.attrs["source"]}


def expected_indices(seed, m):
    """Each task's relabelled rows: a sorted subset of m distinct rows, drawn in task order from the unit's seed."""
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.choice(n, m, replace=False)) for n in LENGTHS])


def test_each_pair_holds_model_i_on_task_j_rows_kept_below_the_threshold(tmp_path):
    """rewards[i, j, r] is task i's ensemble mean on row indices[j, r] of task j (not the original reward), and
    a row is kept where that ensemble's std is below relabel.reward_std_threshold."""
    config = make_config("relabel.max_transitions=8", "relabel.reward_std_threshold=0.03")
    build_run(tmp_path)
    out = run_relabel(config, tmp_path)
    indices = out["indices"]
    np.testing.assert_array_equal(indices, expected_indices(7, 8))
    i, j, r = np.meshgrid(range(3), range(3), range(8), indexing="ij")
    t = indices[j, r]
    assert out["rewards"].dtype == np.float32 and out["rewards"].shape == (3, 3, 8)
    np.testing.assert_array_equal(out["rewards"], 1e5 * (i + 1) + code(j, t))
    np.testing.assert_allclose(out["reward_std"], reward_std(i, j, t), rtol=1e-6)
    assert out["reward_mask"].dtype == bool
    np.testing.assert_array_equal(out["reward_mask"], reward_std(i, j, t) < 0.03)
    assert 0 < out["reward_mask"].mean() < 1
    assert [(cfg is config.rewards, task, target) for cfg, task, target in FakeEnsemble.made] == \
        [(True, 0, "rewards"), (True, 1, "rewards"), (True, 2, "rewards")]
    assert "next_observations" not in out and "next_state_mask" not in out  # a reward family: states stay
    assert out["source"] == "learned"


def test_the_family_threshold_applies_unless_configured():
    assert _threshold(None, 0.02) == 0.02
    assert _threshold(0.5, 0.02) == 0.5
    assert _threshold(0.0, 0.02) == 0.0  # an explicit 0 is a threshold, not "unset"


def test_the_reward_threshold_defaults_to_the_familys(tmp_path):
    build_run(tmp_path)
    out = run_relabel(make_config("relabel.max_transitions=8"), tmp_path)  # PointGoalArc: 0.02
    np.testing.assert_array_equal(out["reward_mask"], out["reward_std"] < 0.02)
    assert 0 < out["reward_mask"].mean() < 1


def test_the_subset_is_seeded_and_bounded_by_the_shortest_dataset(tmp_path):
    build_run(tmp_path)
    config = make_config("relabel.max_transitions=50")
    first = run_relabel(config, tmp_path, seed=3)["indices"]
    np.testing.assert_array_equal(first, expected_indices(3, min(LENGTHS)))  # 10 rows of each task
    np.testing.assert_array_equal(run_relabel(config, tmp_path, seed=3)["indices"], first)
    assert not np.array_equal(run_relabel(config, tmp_path, seed=4)["indices"], first)


def test_true_rewards_and_error_statistics_of_a_reward_family(tmp_path, caplog):
    """true_rewards[i, j] is task i's reward function on task j's relabelled rows; the statistics compare the
    relabelled rewards with it; the log line reports the other tasks' rows."""
    build_run(tmp_path)
    with caplog.at_level(logging.INFO, "mtrl.test.relabel"):
        out = run_relabel(make_config("relabel.max_transitions=8"), tmp_path)
    indices = out["indices"]
    truth = np.stack([[-np.linalg.norm(next_observations(j, LENGTHS[j])[indices[j]] - GOALS[i], axis=-1)
                       for j in range(3)] for i in range(3)])
    assert out["true_rewards"].dtype == np.float32
    np.testing.assert_allclose(out["true_rewards"], truth, rtol=1e-6)
    stats = out["stats"]
    np.testing.assert_array_equal(stats["keep_fraction"], out["reward_mask"].mean(-1))
    error = np.abs(out["rewards"] - truth)
    np.testing.assert_allclose(stats["error_all"], error.mean(-1), rtol=1e-5)
    kept = out["reward_mask"]
    expected_kept = [[error[i, j][kept[i, j]].mean() if kept[i, j].any() else np.nan for j in range(3)]
                     for i in range(3)]
    np.testing.assert_allclose(stats["error_kept"], expected_kept, rtol=1e-5)
    off = ~np.eye(3, dtype=bool)
    (message,) = [r.getMessage() for r in caplog.records if r.name == "mtrl.test.relabel"]
    assert message == (f"relabel learned: kept {kept.mean(-1)[off].mean():.1%} of other tasks' rows, |error| kept "
                       f"{np.nanmean(np.array(expected_kept)[off]):.4f} all {error.mean(-1)[off].mean():.4f}")


def test_relabel_statistics_by_hand():
    """Two tasks, three rows: keep fraction and mean |error| on all rows and on kept rows (NaN: none kept);
    a row counts as kept only where the next state is confident too."""
    out = {"rewards": np.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [[5.0, 5.0, 5.0], [1.0, 1.0, 1.0]]]),
           "reward_mask": np.array([[[True, True, False], [False, False, False]],
                                    [[True, False, False], [True, True, True]]])}
    truth = np.array([[[1.0, 1.0, 1.0], [0.0, 3.0, 0.0]], [[4.0, 5.0, 8.0], [1.0, 1.0, 4.0]]])
    stats = relabel_statistics(out, truth)
    np.testing.assert_allclose(stats["keep_fraction"], [[2 / 3, 0.0], [1 / 3, 1.0]])
    np.testing.assert_allclose(stats["error_all"], [[1.0, 1.0], [4 / 3, 1.0]])
    np.testing.assert_allclose(stats["error_kept"], [[0.5, np.nan], [1.0, 1.0]])
    both = out | {"next_state_mask": np.array([[[False, True, True], [True, True, True]],
                                               [[True, True, True], [True, False, True]]])}
    stats = relabel_statistics(both, truth)
    np.testing.assert_allclose(stats["keep_fraction"], [[1 / 3, 0.0], [1 / 3, 2 / 3]])
    np.testing.assert_allclose(stats["error_kept"], [[1.0, np.nan], [1.0, 1.5]])
    assert set(relabel_statistics(both, None)) == {"keep_fraction"}  # no ground truth: no errors


@pytest.mark.parametrize("statistic", ["mean", "max"])
def test_a_dynamics_family_relabels_next_states_and_keeps_rows_confident_in_both(tmp_path, caplog, statistic):
    """PointRobotWind: next_observations[i, j, r] is task i's next-state ensemble mean; next_state_std is the
    mean (reference) or max over state dimensions of its std, below the family's 0.01; the keep fraction counts
    rows whose reward and next state are both confident. No true reward (tasks share it): no error statistics."""
    build_run(tmp_path, "PointRobotWind", dynamics=True)
    with caplog.at_level(logging.INFO, "mtrl.test.relabel"):
        out = run_relabel(make_config("env.family=PointRobotWind", "relabel.max_transitions=9",
                                      f"relabel.next_state_std_statistic={statistic}"), tmp_path)
    i, j, r = np.meshgrid(range(3), range(3), range(9), indexing="ij")
    t = out["indices"][j, r]
    np.testing.assert_array_equal(out["rewards"], 1e5 * (i + 1) + code(j, t))
    np.testing.assert_array_equal(out["reward_mask"], reward_std(i, j, t) < 0.02)  # the points' reward default
    assert out["next_observations"].shape == (3, 3, 9, 2) and out["next_observations"].dtype == np.float32
    np.testing.assert_array_equal(out["next_observations"][..., 0], 2e5 * (i + 1) + code(j, t))
    np.testing.assert_array_equal(out["next_observations"][..., 1], 3e5 * (i + 1) + code(j, t))
    std = NEXT_STD[next_state_case(i, j, t)]
    row = std.mean(-1) if statistic == "mean" else std.max(-1)
    np.testing.assert_allclose(out["next_state_std"], row, rtol=1e-6)
    np.testing.assert_array_equal(out["next_state_mask"], row < 0.01)
    assert out["next_state_mask"].dtype == bool
    both = out["reward_mask"] & out["next_state_mask"]
    assert both.any() and not np.array_equal(both, out["reward_mask"])
    np.testing.assert_array_equal(out["stats"]["keep_fraction"], both.mean(-1))
    assert set(out["stats"]) == {"keep_fraction"} and "true_rewards" not in out
    (message,) = [r.getMessage() for r in caplog.records if r.name == "mtrl.test.relabel"]
    assert message == f"relabel learned: kept {both.mean(-1)[~np.eye(3, dtype=bool)].mean():.1%} of other tasks' rows"
    assert [(task, target) for _, task, target in FakeEnsemble.made] == \
        [(0, "rewards"), (1, "rewards"), (2, "rewards"), (0, "dynamics"), (1, "dynamics"), (2, "dynamics")]


@pytest.mark.parametrize("family", ["PointGoalArc", "PointRobotWind"])
def test_a_pair_is_kept_for_the_confidence_of_model_i_on_task_j_not_of_model_j_on_task_i(tmp_path, monkeypatch,
                                                                                        family):
    """Only task 0's models are confident, and only on task 1's rows (for a dynamics family: only its next-state
    models; every reward model is confident): relabel.h5 keeps every row of pair (0, 1) and none of (1, 0).

    Catches a transposed pair: planting `.transpose(1, 0, 2)` on the `reward_mask` of `Relabel._relabel`, or on
    the `next_state_mask` of `run_unit`, fails here."""

    def pair_0_1(i, j):
        return (i == 0) & (j == 1)

    dynamics = family == "PointRobotWind"
    monkeypatch.setattr(f"{__name__}.reward_std", lambda i, j, t: np.where(pair_0_1(i, j) | dynamics, 0.005, 0.035))
    monkeypatch.setattr(f"{__name__}.next_state_case", lambda i, j, t: np.where(pair_0_1(i, j), 0, 2))
    build_run(tmp_path, family, dynamics=dynamics)
    out = run_relabel(make_config(f"env.family={family}", "relabel.max_transitions=8"), tmp_path)
    kept = out["reward_mask"] & out.get("next_state_mask", True)
    expected = np.zeros((3, 3, 8), bool)
    expected[0, 1] = True
    np.testing.assert_array_equal(kept, expected)


def test_configured_next_state_threshold_and_ensemble_configs(tmp_path):
    build_run(tmp_path, "PointRobotWind", dynamics=True)
    config = make_config("env.family=PointRobotWind", "relabel.max_transitions=9",
                          "relabel.next_state_std_threshold=0.007", "relabel.reward_std_threshold=0.03")
    out = run_relabel(config, tmp_path)
    np.testing.assert_array_equal(out["next_state_mask"], out["next_state_std"] < 0.007)
    np.testing.assert_array_equal(out["reward_mask"], out["reward_std"] < 0.03)
    assert 0 < out["next_state_mask"].mean() < out["reward_mask"].mean()
    cfgs = {target: {id(cfg) for cfg, _, t in FakeEnsemble.made if t == target} for target in ("rewards", "dynamics")}
    assert cfgs == {"rewards": {id(config.rewards)}, "dynamics": {id(config.dynamics)}}


def test_ground_truth_source_relabels_with_the_true_reward_and_keeps_every_row(tmp_path):
    """distill.relabel=ground-truth adds a unit that needs no ensemble: the true rewards of SparsePointRobot (which
    checks that the dataset's infos are passed), std 0, all kept, zero error."""
    build_run(tmp_path, "SparsePointRobot", info_keys=("dense_reward",))
    config = make_config("env.family=SparsePointRobot", "relabel.max_transitions=8", "distill.relabel=ground-truth")
    out = run_relabel(config, tmp_path, "ground-truth")
    assert FakeEnsemble.made == []
    indices = out["indices"]
    np.testing.assert_array_equal(indices, expected_indices(7, 8))
    distance = np.stack([[np.linalg.norm(next_observations(j, LENGTHS[j])[indices[j]] - GOALS[i], axis=-1)
                          for j in range(3)] for i in range(3)])
    truth = np.where(distance <= 0.2, 1 - distance, 0.0)
    assert (truth > 0).any() and (truth == 0).any()
    np.testing.assert_allclose(out["rewards"], truth, rtol=1e-6)
    np.testing.assert_array_equal(out["true_rewards"], out["rewards"])
    assert out["rewards"].dtype == out["reward_std"].dtype == np.float32
    assert out["reward_std"].shape == (3, 3, 8) and not out["reward_std"].any()
    assert out["reward_mask"].dtype == bool and out["reward_mask"].all() and out["reward_mask"].shape == (3, 3, 8)
    np.testing.assert_array_equal(out["stats"]["keep_fraction"], np.ones((3, 3)))
    np.testing.assert_allclose(out["stats"]["error_all"], 0, atol=1e-6)
    np.testing.assert_allclose(out["stats"]["error_kept"], 0, atol=1e-6)
    assert out["source"] == "ground-truth"


def test_units_and_their_inputs(tmp_path):
    """One `learned` unit reading the tasks, every task's dataset of data.kind and reward ensemble (next-state
    ensembles too for a dynamics family); ground-truth relabelling adds a unit without ensembles."""
    config = make_config("data.kind=medium")
    (unit,) = Relabel().units(config, tmp_path)
    assert unit.key == "learned" and unit.params == {"source": "learned"}
    assert unit.outputs["relabel"].path == tmp_path / "relabel.h5" and unit.outputs["relabel"].kind == "relabel"
    assert list(unit.inputs) == ["tasks", "dataset_0", "dataset_1", "dataset_2", "rewards_0", "rewards_1",
                                 "rewards_2"]
    assert unit.inputs["tasks"] == layout.tasks_input(tmp_path)
    assert unit.inputs["dataset_1"] == layout.dataset_input(tmp_path, 1, "medium")
    assert unit.inputs["dataset_1"].path == tmp_path / "datasets" / "medium" / "task_01.h5"
    rewards = unit.inputs["rewards_2"]
    assert (rewards.path, rewards.kind, rewards.stage) == (tmp_path / "rewards" / "task_02.h5", "ensemble",
                                                           "fit-rewards")

    (unit,) = Relabel().units(make_config("env.family=PointRobotWind", "env.n_train=2"), tmp_path)
    assert list(unit.inputs) == ["tasks", "dataset_0", "dataset_1", "rewards_0", "rewards_1", "dynamics_0",
                                 "dynamics_1"]
    dynamics = unit.inputs["dynamics_1"]
    assert (dynamics.path, dynamics.kind, dynamics.stage) == (tmp_path / "dynamics" / "task_01.h5", "ensemble",
                                                              "fit-dynamics")

    learned, truth = Relabel().units(make_config("distill.relabel=ground-truth"), tmp_path)
    assert learned.key == "learned" and "rewards_0" in learned.inputs
    assert truth.key == "ground-truth" and truth.params == {"source": "ground-truth"}
    assert truth.outputs["relabel"].path == tmp_path / "relabel_ground_truth.h5"
    assert list(truth.inputs) == ["tasks", "dataset_0", "dataset_1", "dataset_2"]


def test_ground_truth_is_refused_for_a_family_whose_tasks_differ_in_dynamics(tmp_path):
    config = make_config("env.family=PointRobotWind", "distill.relabel=ground-truth")
    with pytest.raises(ConfigError, match="distill.relabel=ground-truth needs a family whose tasks differ in "
                                          "reward; PointRobotWind tasks differ in dynamics"):
        Relabel().units(config, tmp_path)

import numpy as np
import pytest
from smoke import run_stages, smoke_config

from mtrl.artifacts import open_artifact
from mtrl.errors import ConfigError
from mtrl.pipeline.runner import plan_unit


def test_bcq_artifact_holds_best_and_final_networks(smoke_run):
    config, run_dir = smoke_run
    with open_artifact(run_dir / "bcq" / "task_01.h5", "bcq") as art:
        weights, curve = art.tree("weights"), art.tree("curve")
        assert set(weights) == {"best", "final"}
        assert list(curve["steps"]) == [150, 300]
        assert art.attrs["best_return"] == curve["return_mean"].max()


def test_per_task_stages_are_up_to_date_after_the_run(smoke_run):
    from mtrl.pipeline.registry import get_stage

    config, run_dir = smoke_run
    for name in ("collect", "train-bcq", "fit-rewards", "relabel", "distill", "evaluate", "sac-init"):
        stage = get_stage(name)
        assert all(plan_unit(stage, config, u).up_to_date for u in stage.units(config, run_dir)), name
    assert get_stage("fit-dynamics").units(config, run_dir) == []  # PointGoalArc tasks share dynamics


def test_changing_the_bcq_config_makes_bcq_and_everything_after_it_stale(smoke_run):
    from mtrl.pipeline.registry import get_stage

    config, run_dir = smoke_run
    changed = smoke_config("bcq.steps=301")
    bcq, rewards = get_stage("train-bcq"), get_stage("fit-rewards")
    assert not plan_unit(bcq, changed, bcq.units(changed, run_dir)[0]).up_to_date
    assert plan_unit(rewards, changed, rewards.units(changed, run_dir)[0]).up_to_date


def test_relabel_masks_obey_the_threshold_and_own_task_matches_truth(smoke_run):
    config, run_dir = smoke_run
    with open_artifact(run_dir / "relabel.h5", "relabel") as art:
        std, mask = art.array("reward_std"), art.array("reward_mask")
        rewards, truth = art.array("rewards"), art.array("true_rewards")
        stats = art.tree("stats")
        indices = art.array("indices")
    threshold = 0.02  # PointGoalArc's reward_std_threshold
    assert np.array_equal(mask, std < threshold)
    k, _, m = rewards.shape
    assert indices.shape == (k, m) and (np.diff(indices, axis=1) > 0).all()
    own = np.arange(k)
    # a task's own ensemble relabels its own data close to the true rewards (rewards in [-1.5, 0])
    assert np.abs(rewards[own, own] - truth[own, own]).mean() < 0.1
    np.testing.assert_allclose(stats["keep_fraction"], mask.mean(-1))
    assert stats["error_all"].shape == (k, k) and np.isfinite(stats["error_all"]).all()
    kept = mask.sum(-1) > 0
    assert np.isfinite(stats["error_kept"][kept]).all() and np.isnan(stats["error_kept"][~kept]).all()


def test_ground_truth_relabelling_equals_the_reward_function(smoke_run, tmp_path):
    import shutil

    config, run_dir = smoke_run
    run = tmp_path / "gt"
    shutil.copytree(run_dir, run)
    gt = smoke_config("distill.relabel=ground-truth")
    run_stages(gt, run, ["relabel"])
    with open_artifact(run / "relabel_ground_truth.h5", "relabel") as art:
        assert np.array_equal(art.array("rewards"), art.array("true_rewards"))
        assert art.array("reward_mask").all()
        assert np.allclose(art.tree("stats")["error_all"], 0, atol=1e-6)  # float32 storage


def test_ground_truth_relabelling_is_refused_for_dynamics_families(tmp_path):
    from mtrl.pipeline.registry import get_stage

    config = smoke_config("env.family=PointRobotWind", "distill.relabel=ground-truth")
    with pytest.raises(ConfigError, match="needs a family whose tasks differ in reward"):
        get_stage("relabel").units(config, tmp_path)


def test_dynamics_family_fits_next_state_ensembles_and_relabels_next_states(tmp_path):
    config = smoke_config("env.family=PointRobotWind", "env.n_train=2", "collect.steps=400",
                          "relabel.max_transitions=100")
    run_stages(config, tmp_path, ["tasks", "collect", "fit-rewards", "fit-dynamics", "relabel"])
    with open_artifact(tmp_path / "dynamics" / "task_00.h5", "ensemble") as art:
        assert art.attrs["out_dim"] == 2
    with open_artifact(tmp_path / "relabel.h5", "relabel") as art:
        assert art.array("next_observations").shape == (2, 2, 100, 2)
        assert np.array_equal(art.array("next_state_mask"), art.array("next_state_std") < 0.01)
        assert "true_rewards" not in art  # rewards are task-independent here: no ground truth to compare

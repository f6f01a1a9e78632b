"""Stage train-baseline: artifacts like distill's, evaluation by `mtrl evaluate`, fingerprints, resume."""

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from smoke import run_stages, smoke_config

from mtrl.algos.batch_pearl import BatchPEARL
from mtrl.algos.contextual_bcq import ContextualBCQ
from mtrl.algos.focal import FOCAL
from mtrl.artifacts import open_artifact
from mtrl.cli import main
from mtrl.configlib import to_dict
from mtrl.errors import ConfigError, StageError
from mtrl.pipeline.registry import get_stage
from mtrl.pipeline.runner import plan_unit
from mtrl.rl.policies import load_multitask_policy

ALGOS = {"contextual-bcq": ContextualBCQ, "batch-pearl": BatchPEARL, "focal": FOCAL}
# Random-action datasets (no SAC update): the stage only needs transitions, and they take a second to collect.
# FOCAL is not in the smoke profile's list: these tests add it, with networks of the smoke profile's size.
FAST_DATA = ("collect.steps=200", "collect.eval_every=200", "collect.checkpoint_every=200",
             "baselines.algos=[contextual-bcq,batch-pearl,focal]",
             "baselines.focal={z_dim: 4, encoder_hidden: [32, 32], hidden: [64, 64], discriminator_hidden: [64, 64], "
             "batch_size: 32, context_size: 16}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config, run_dir) with the smoke profile's tasks and datasets, and both baselines trained."""
    config = smoke_config(*FAST_DATA)
    run_dir = tmp_path_factory.mktemp("baselines")
    run_stages(config, run_dir, ["tasks", "collect", "train-baseline"])
    return config, run_dir


def copy_data(run_dir, to):
    """A fresh run directory with the same config, tasks and datasets, but no policy."""
    to.mkdir()
    for name in ("config.yaml", "tasks.h5"):
        shutil.copy(run_dir / name, to / name)
    shutil.copytree(run_dir / "datasets", to / "datasets")
    return to


@pytest.mark.parametrize("algo", ALGOS)
def test_policy_artifact_has_distills_layout_and_loads_for_evaluation(run, algo):
    config, run_dir = run
    with open_artifact(run_dir / "policies" / f"{algo}.h5", "policy") as art:
        assert art.attrs["method"] == algo
        assert art.meta("algo_config") == to_dict(config.baselines.sections[algo])
        losses, curve = art.tree("losses"), art.tree("eval_curve")
        assert "critic_loss" in losses and all(len(v) == config.baselines.epochs for v in losses.values())
        assert all(np.isfinite(v).all() for v in losses.values())
        assert list(curve["epochs"]) == [2, 4] and np.isfinite(curve["test_score"]).all()
        policy = load_multitask_policy(art, "cpu", seed=0)
    assert isinstance(policy.algo, ALGOS[algo])
    belief = policy.infer(None)
    assert belief.shape == (config.baselines.sections[algo].z_dim,)
    actions = policy.act(np.zeros((3, 2), np.float32), np.stack([belief] * 3))
    assert actions.shape == (3, 2) and np.abs(actions).max() <= 1.0  # agents act in [-1, 1]


def test_evaluate_command_evaluates_the_baselines_on_train_and_test_tasks(run, tmp_path):
    config, run_dir = run
    result = CliRunner().invoke(main, ["evaluate", "--run-dir", str(run_dir), "--threads", "1",
                                       "--policy", "contextual-bcq", "--policy", "batch-pearl", "--policy", "focal"])
    assert result.exit_code == 0, result.output
    for algo in ALGOS:
        with open_artifact(run_dir / "eval" / f"{algo}.h5", "eval") as art:
            returns, summary = art.tree("returns"), art.meta("summary")
        assert returns["train_returns"].shape == (3, 1, config.evaluate.episodes)
        assert returns["test_returns"].shape == (2, 1, config.evaluate.episodes)
        assert summary["test_score"] == pytest.approx(returns["test_returns"][:, :, 2:].mean())
    names = [u.key for u in get_stage("evaluate").units(config, run_dir)]
    assert names[-3:] == ["contextual-bcq", "batch-pearl", "focal"]  # evaluated by default when configured


def test_each_baseline_is_fingerprinted_by_its_own_config(run):
    config, run_dir = run
    stage = get_stage("train-baseline")

    def up_to_date(cfg):
        return {u.key: plan_unit(stage, cfg, u).up_to_date for u in stage.units(cfg, run_dir)}

    assert up_to_date(config) == {"contextual-bcq": True, "batch-pearl": True, "focal": True}
    changed = smoke_config(*FAST_DATA, "baselines.batch-pearl.kl_beta=0.5")
    assert up_to_date(changed) == {"contextual-bcq": True, "batch-pearl": False, "focal": True}
    changed = smoke_config(*FAST_DATA, "baselines.focal.alpha=3.0")
    assert up_to_date(changed) == {"contextual-bcq": True, "batch-pearl": True, "focal": False}
    assert up_to_date(smoke_config(*FAST_DATA, "baselines.epochs=5")) == dict.fromkeys(ALGOS, False)
    assert up_to_date(smoke_config(*FAST_DATA, "distill.epochs=5")) == dict.fromkeys(ALGOS, True)


@pytest.mark.parametrize("algo", ALGOS)
def test_interrupted_training_resumes_to_the_identical_policy(run, tmp_path, monkeypatch, algo):
    config, run_dir = run
    interrupted = copy_data(run_dir, tmp_path / "interrupted")
    update, calls = ALGOS[algo].update, []

    def failing_update(self, batch):
        calls.append(1)
        if len(calls) > 25:  # after the checkpoint of epoch 2 (10 updates per epoch)
            raise RuntimeError("killed")
        return update(self, batch)

    monkeypatch.setattr(ALGOS[algo], "update", failing_update)
    stage_config = smoke_config(*FAST_DATA, f"baselines.algos=[{algo}]")
    with pytest.raises(StageError, match="killed"):
        run_stages(stage_config, interrupted, ["train-baseline"])
    assert (interrupted / "checkpoints" / "train-baseline" / f"{algo}.h5").exists()
    monkeypatch.undo()

    run_stages(stage_config, interrupted, ["train-baseline"])
    assert "train-baseline " + algo + ": resuming at epoch 2" in (interrupted / "logs" / "mtrl.log").read_text()
    with (open_artifact(interrupted / "policies" / f"{algo}.h5", "policy") as resumed,
          open_artifact(run_dir / "policies" / f"{algo}.h5", "policy") as uninterrupted):
        assert resumed.fingerprint == uninterrupted.fingerprint
        for name in ("weights", "losses", "eval_curve"):
            a, b = resumed.tree(name), uninterrupted.tree(name)
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_algo_option_selects_and_unknown_algos_are_rejected(run, tmp_path):
    config, run_dir = run
    only = copy_data(run_dir, tmp_path / "only")
    result = CliRunner().invoke(main, ["train-baseline", "--run-dir", str(only), "--threads", "1",
                                       "--algo", "batch-pearl"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (only / "policies").glob("*.h5")) == ["batch-pearl.h5"]
    with pytest.raises(ConfigError, match="baselines.algos"):
        smoke_config("baselines.algos=[pearl]")

"""Stages train-iwpl and adapt (seed 003) on the smoke profile: what they write, that adapt shares sac-init's
budget and test tasks, what its fingerprint covers, and that an interrupted train-iwpl resumes to the
uninterrupted result."""

from __future__ import annotations

import numpy as np
import pytest
from smoke import SMOKE_CONFIG, run_stages, smoke_config

from mtrl.artifacts import open_artifact
from mtrl.errors import ConfigError, StageError
from mtrl.pipeline.registry import get_stage
from mtrl.pipeline.runner import plan_unit

VARIANTS = "adapt.variants=[both,value]"


@pytest.fixture(scope="module")
def iwpl_run(tmp_path_factory):
    config = smoke_config(VARIANTS)
    run_dir = tmp_path_factory.mktemp("iwpl") / "run"
    run_stages(config, run_dir, ["tasks", "train-iwpl", "adapt"])
    return config, run_dir


def test_train_iwpl_writes_one_shared_prior_and_features_and_a_curve_per_training_task(iwpl_run):
    config, run_dir = iwpl_run
    with open_artifact(run_dir / "iwpl.h5", "iwpl") as art:
        weights = art.tree("weights")
        assert weights["prior"]["net.layers.0.weight"].shape[0] == 1  # one prior for every task
        assert weights["features"]["layers.0.weight"].shape[0] == 1
        assert weights["critic"]["weight"].shape == (config.env.n_train, config.iwpl.algo.feature_dim)
        for t in range(config.env.n_train):
            assert art.tree(f"curve_task_{t:02d}")["steps"][-1] == config.iwpl.steps
    assert not (run_dir / "checkpoints").exists()  # the per-task checkpoints are gone once the unit is done


def test_adapt_runs_each_variant_on_sac_inits_test_tasks_and_schedule(iwpl_run):
    config, run_dir = iwpl_run
    budget = config.sac_init
    expected_steps = np.arange(budget.eval_every, budget.steps + 1, budget.eval_every)
    for variant in ("both", "value"):
        for t in range(config.env.n_test):
            with open_artifact(run_dir / "adapt" / variant / f"task_{t:02d}.h5", "adapt") as art:
                np.testing.assert_array_equal(art.tree("curves")["steps"], expected_steps)
                assert art.attrs["run"] == f"iwpa-{variant}" and art.attrs["test_task"] == t
    assert not (run_dir / "adapt" / "behaviour").exists()


def test_adapt_fingerprint_covers_the_shared_budget_only(iwpl_run):
    config, run_dir = iwpl_run
    stage = get_stage("adapt")

    def up_to_date(*overrides):
        changed = smoke_config(VARIANTS, *overrides)
        return all(plan_unit(stage, changed, unit).up_to_date for unit in stage.units(changed, run_dir))

    assert up_to_date()
    assert up_to_date("sac_init.rollout_steps=7", "sac_init.policies=[]", "adapt.target_return=-3")
    assert not up_to_date(f"sac_init.steps={config.sac_init.steps + 100}")
    assert not up_to_date("adapt.algo.num_actions=4")


def test_without_variants_neither_stage_has_work_and_bad_variants_are_rejected(tmp_path):
    config = smoke_config()
    assert get_stage("train-iwpl").units(config, tmp_path) == [] and get_stage("adapt").units(config, tmp_path) == []
    with pytest.raises(ConfigError, match="'adapt.variants': 'fast' is not one of"):
        smoke_config("adapt.variants=[fast]")
    with pytest.raises(ConfigError, match="iwpl.algo.shared_features: true"):
        smoke_config("adapt.variants=[both]", "iwpl.algo.shared_features=false")
    with pytest.raises(ConfigError, match="'adapt.algo.feature_dim' and 'iwpl.algo.feature_dim' differ"):
        smoke_config("adapt.variants=[both]", "adapt.algo.feature_dim=3")


def test_commands_without_variants_fail_in_one_line(tmp_path):
    from test_cli import assert_one_line_error, invoke

    for command in ("train-iwpl", "adapt"):
        assert_one_line_error(*invoke(command, "--config", SMOKE_CONFIG, "--profile", "smoke", "--run-dir",
                                      tmp_path / "run"), "'adapt.variants' is empty", "--variant")
    assert not (tmp_path / "run").exists()


def test_report_counts_interactions_to_the_target_return_and_the_ratio_to_sac_from_scratch(iwpl_run, tmp_path):
    """IWPA's curves join sac-init's in the adaptation figure and table; with adapt.target_return the report
    gives each run's first evaluation reaching it and SAC from scratch's count over it."""
    from mtrl.report import write_report

    config, run_dir = iwpl_run
    target = -25.0
    with_scratch = smoke_config(VARIANTS, "sac_init.policies=[]", "sac_init.baselines=[random]",
                                f"adapt.target_return={target}")
    run_stages(with_scratch, run_dir, ["sac-init"])
    write_report([run_dir], tmp_path / "report")
    text = (tmp_path / "report" / "results.md").read_text()
    assert (tmp_path / "report" / "fig8_sac_init.png").exists()
    curves = {}
    for name, folder in (("iwpa-both", "adapt/both"), ("iwpa-value", "adapt/value"), ("random", "sac_init/random")):
        per_task = []
        for t in range(config.env.n_test):
            with open_artifact(run_dir / folder / f"task_{t:02d}.h5") as art:
                per_task.append(art.tree("curves"))
        steps, mean = per_task[0]["steps"], np.mean([c["return_mean"] for c in per_task], axis=0)
        curves[name] = steps[np.argmax(mean >= target)] if (mean >= target).any() else None
    assert curves["random"] is not None  # the smoke budget reaches this target
    for name, steps in curves.items():
        line = next(line for line in text.splitlines() if line.startswith(f"| {name} | ") and " of 1 |" in line)
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if steps is None:
            assert cells[2:] == ["not reached", "—"], line
        else:
            assert float(cells[2].split()[0]) == steps, line
            assert float(cells[3].split()[0]) == pytest.approx(curves["random"] / steps, rel=5e-3), line


def test_interrupted_train_iwpl_resumes_to_the_uninterrupted_result(iwpl_run, tmp_path, monkeypatch):
    """Killed after its step-200 checkpoint, train-iwpl resumes from its per-task checkpoints (the shared prior,
    features and α included) and writes exactly what the uninterrupted run wrote."""
    from mtrl.algos.iwpl import IWPL

    config, run_dir = iwpl_run
    update, calls = IWPL.update, []

    def failing_update(self, batch):
        calls.append(1)
        if len(calls) == 150:  # updates start at step 100: this is step 250, after the checkpoint at 200
            raise RuntimeError("killed")
        return update(self, batch)

    monkeypatch.setattr(IWPL, "update", failing_update)
    with pytest.raises(StageError, match="killed"):
        run_stages(config, tmp_path / "run", ["tasks", "train-iwpl"])
    assert len(list((tmp_path / "run" / "checkpoints" / "train-iwpl" / "iwpl").glob("task_*.h5"))) == 3
    monkeypatch.setattr(IWPL, "update", update)
    run_stages(config, tmp_path / "run", ["train-iwpl"])
    with open_artifact(run_dir / "iwpl.h5") as a, open_artifact(tmp_path / "run" / "iwpl.h5") as b:
        assert a.fingerprint == b.fingerprint
        for name, tree in (("weights", a.tree("weights")), ("curve_task_02", a.tree("curve_task_02"))):
            other = b.tree(name)
            for key, value in _leaves(tree):
                np.testing.assert_array_equal(value, _get(other, key), err_msg=key)


def _leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _get(tree, key):
    for part in key:
        tree = tree[part]
    return tree

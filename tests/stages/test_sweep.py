"""`mtrl sweep`: trials recorded, the pick chosen on training tasks only and installed, a resumed sweep repeating an
uninterrupted one, and a bad grid refused before any work."""

import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mtrl.artifacts import open_artifact
from mtrl.artifacts.store import Artifact
from mtrl.cli import main
from mtrl.configlib import flatten

GRID = "distill.algo.kl_beta=0.1,0.01"


def sweep(run_dir, *grid, method="mbml"):
    result = CliRunner().invoke(main, ["sweep", "--run-dir", str(run_dir), "--method", method, "--threads", "1",
                                       *(arg for g in grid for arg in ("--grid", g))])
    return result.exit_code, result.output


def weights(path):
    with open_artifact(path) as art:
        return flatten(art.tree("weights"))


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def swept(smoke_run, tmp_path_factory):
    """A copy of the smoke run with MBML swept over two KL weights, uninterrupted."""
    _, run_dir = smoke_run
    copy = tmp_path_factory.mktemp("swept") / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report"))
    code, output = sweep(copy, GRID)
    assert code == 0, output
    return copy


def test_trials_are_recorded_and_the_pick_is_installed(smoke_run, swept):
    from mtrl.pipeline.runner import plan_unit
    from mtrl.stages.distill import Distill
    from mtrl.stages.sweep import SCORE_EVALUATIONS

    config, run_dir = smoke_run
    with open_artifact(swept / "sweeps" / "mbml.h5", "sweep") as art:
        trials, pick, picked = art.meta("trials"), int(art.attrs["pick"]), art.meta("picked")
    assert [t["values"] for t in trials] == [{"distill.algo.kl_beta": 0.1}, {"distill.algo.kl_beta": 0.01}]
    for trial in trials:
        with open_artifact(swept / trial["artifact"]) as art:
            curve = art.tree("eval_curve")
            assert art.meta("algo_config")["kl_beta"] == trial["values"]["distill.algo.kl_beta"]
            assert art.fingerprint == trial["fingerprint"]
        assert trial["train_score"] == pytest.approx(curve["train_score"][-SCORE_EVALUATIONS:].mean())
    assert pick == int(np.argmax([t["train_score"] for t in trials])) and picked == trials[pick]["values"]
    assert same_weights(swept / "policies" / "mbml.h5", swept / trials[pick]["artifact"])
    # the trial at the config's own value is the policy distill trains: same seed, same weights
    assert same_weights(swept / "sweeps" / "mbml" / "trial_00.h5", run_dir / "policies" / "mbml.h5")
    # mtrl status / mtrl run see the installed pick as distill's up-to-date output, not as something to retrain
    assert plan_unit(Distill(), config, Distill().units(config, swept)[0]).up_to_date
    result = CliRunner().invoke(main, ["report", str(swept), "--out", str(swept / "report")])
    assert result.exit_code == 0, result.output
    text = (swept / "report" / "results.md").read_text()
    assert "## Sweeps (`mtrl sweep`)" in text and "| `sweeps/mbml/trial_01.h5` | 0.01 |" in text


def test_the_pick_follows_training_scores_and_never_reads_test_scores(swept, tmp_path, monkeypatch):
    """Test scores favour the other trial, and reading any test score raises: the pick follows training scores."""
    run = tmp_path / "run"
    shutil.copytree(swept, run)
    reading = Artifact._get

    def no_test_scores(self, name):
        if "test_score" in name and "sweeps" in str(self.path):
            raise AssertionError(f"the sweep read {name} of {self.path}")
        return reading(self, name)

    for favoured in (1, 0):
        for trial in (0, 1):
            with h5py.File(run / "sweeps" / "mbml" / f"trial_{trial:02d}.h5", "a") as f:
                f["eval_curve/train_score"][...] = 5.0 if trial == favoured else -5.0
                f["eval_curve/test_score"][...] = -50.0 if trial == favoured else 50.0
        monkeypatch.setattr(Artifact, "_get", no_test_scores)
        code, output = sweep(run, GRID)
        monkeypatch.undo()
        assert code == 0, output
        with open_artifact(run / "sweeps" / "mbml.h5") as art:
            assert int(art.attrs["pick"]) == favoured
        assert same_weights(run / "policies" / "mbml.h5", run / "sweeps" / "mbml" / f"trial_{favoured:02d}.h5")


def test_a_resumed_sweep_repeats_an_uninterrupted_one(swept, tmp_path):
    """Killed after its first trial: the rerun keeps that trial, trains the second, and ends where the
    uninterrupted sweep ended (same scores, same pick, same weights)."""
    run = tmp_path / "run"
    shutil.copytree(swept, run)
    for path in (run / "sweeps" / "mbml" / "trial_01.h5", run / "sweeps" / "mbml.h5", run / "policies" / "mbml.h5"):
        path.unlink()
    kept = (run / "sweeps" / "mbml" / "trial_00.h5").stat().st_mtime_ns
    code, output = sweep(run, GRID)
    assert code == 0, output
    assert (run / "sweeps" / "mbml" / "trial_00.h5").stat().st_mtime_ns == kept  # up to date: not recomputed
    for name in ("sweeps/mbml/trial_01.h5", "policies/mbml.h5"):
        assert same_weights(run / name, swept / name)
    with open_artifact(run / "sweeps" / "mbml.h5") as resumed, open_artifact(swept / "sweeps" / "mbml.h5") as whole:
        assert resumed.meta("trials") == whole.meta("trials") and resumed.attrs["pick"] == whole.attrs["pick"]


@pytest.mark.parametrize(("grid", "message"), [
    ("distill.algo.nope=1,2", "unknown config key 'distill.algo.nope'"),
    ("distill.algo.kl_beta=0.1,abc", "config key 'distill.algo.kl_beta': expected a number, got 'abc'"),
    ("distill.algo.kl_beta=0.1,-1", "config key 'distill.algo.kl_beta': -1.0 is out of range"),
    ("distill.algo.kl_beta", "--grid 'distill.algo.kl_beta': expected KEY=V1,V2,..."),
    ("evaluate.episodes=2,3", "--grid evaluate.episodes: not a training key of mbml"),
    ("distill.eval_every=1,2", "--grid distill.eval_every: not a training key of mbml"),  # sets the score itself
    ("distill.checkpoint_every=1,2", "--grid distill.checkpoint_every: not a training key of mbml"),
])
def test_a_bad_grid_is_one_line_before_any_work(smoke_run, tmp_path, grid, message):
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("report"))
    config = (run / "config.yaml").read_text()
    code, output = sweep(run, grid)
    assert code == 2 and output.strip().splitlines() == [output.strip()] and message in output, output
    assert "Traceback" not in output and not (run / "sweeps").exists()
    assert (run / "config.yaml").read_text() == config


def test_a_key_the_method_does_not_read_is_refused(smoke_run, tmp_path):
    """No-triplet has no triplet loss: a margin grid would train identical trials."""
    _, run_dir = smoke_run
    code, output = sweep(run_dir, "distill.algo.triplet_margin=1,2", method="no-triplet")
    assert code == 2 and "not a training key of no-triplet" in output
    assert not (run_dir / "sweeps").exists()


def test_a_baselines_evaluation_schedule_is_not_swept(smoke_run, tmp_path):
    """The evaluations during training are what score a trial: a grid over their schedule would judge trials apart."""
    _, run_dir = smoke_run
    code, output = sweep(run_dir, "baselines.eval_every=1,2", method="batch-pearl")
    assert code == 2 and "--grid baselines.eval_every: not a training key of batch-pearl" in output, output
    assert not (run_dir / "sweeps").exists()

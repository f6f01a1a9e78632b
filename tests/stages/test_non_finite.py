"""Non-finite numbers never become a complete artifact: in the data a stage reads, in the weights it trains,
in the config."""

import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from smoke import run_stages, smoke_config

from mtrl.artifacts import open_artifact
from mtrl.cli import main
from mtrl.errors import ConfigError, StageError


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_config_numbers_must_be_finite(value):
    with pytest.raises(ConfigError, match="collect.sac.actor_lr': expected a finite number"):
        smoke_config(f"collect.sac.actor_lr={value}")


def fingerprint_and_mtime(path):
    with open_artifact(path) as art:
        return art.fingerprint, path.stat().st_mtime_ns


def test_nan_rewards_in_a_dataset_fail_the_stage_in_one_line_and_leave_its_outputs_alone(smoke_run, tmp_path):
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    with h5py.File(run / "datasets" / "task_00.h5", "a") as f:  # the artifact still reads as complete
        f["rewards"][3] = np.nan
        f["rewards"][7] = np.inf
    before = fingerprint_and_mtime(run / "rewards" / "task_00.h5")
    result = CliRunner().invoke(main, ["fit-rewards", "--run-dir", str(run), "--tasks", "0", "--force",
                                       "--threads", "1"])
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "datasets/task_00.h5: 'rewards' has non-finite values in 2 of" in line
    assert "mtrl collect --force --tasks 0" in line and "Traceback" not in result.output
    assert fingerprint_and_mtime(run / "rewards" / "task_00.h5") == before


def test_a_diverged_training_fails_its_unit_and_writes_nothing(smoke_run, tmp_path, monkeypatch):
    from mtrl.algos.bcq import BCQ

    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = fingerprint_and_mtime(run / "bcq" / "task_00.h5")
    update = BCQ.update

    def diverges(self, batch):
        metrics = update(self, batch)
        with torch.no_grad():
            next(self.actor.parameters())[0, 0, 0] = float("nan")
        return metrics

    monkeypatch.setattr(BCQ, "update", diverges)
    with pytest.raises(StageError, match="train-bcq task_00: final/actor.* non-finite .* training diverged"):
        run_stages(smoke_config(), run, ["train-bcq"], tasks=(0,), force=True)
    assert fingerprint_and_mtime(run / "bcq" / "task_00.h5") == before

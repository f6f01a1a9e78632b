"""`--log tensorboard`: every training curve also as TensorBoard scalars equal to the curve in the artifact."""

import csv
import subprocess
import sys

import numpy as np
from click.testing import CliRunner
from smoke import SMOKE_CONFIG

from mtrl.artifacts import open_artifact
from mtrl.cli import main
from mtrl.tblog import TensorBoardCurves


def scalars(log_dir):
    """tag -> (steps, values) of the event files in `log_dir`, read back by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: (np.array([e.step for e in acc.Scalars(tag)]), np.array([e.value for e in acc.Scalars(tag)]))
            for tag in acc.Tags()["scalars"]}


def collect_args(run_dir, *extra):
    return ["collect", "--config", str(SMOKE_CONFIG), "--profile", "smoke", "--run-dir", str(run_dir),
            "--threads", "1", "--tasks", "0", *extra]


def test_a_units_event_file_holds_its_curve(tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, collect_args(run_dir, "--log", "tensorboard"))
    assert result.exit_code == 0, result.output
    with open_artifact(run_dir / "sac" / "task_00.h5") as art:
        curve = art.tree("curve")
    with open(run_dir / "sac" / "task_00.curve.csv", newline="") as fh:
        header = next(csv.reader(fh))
    found = scalars(run_dir / "tensorboard" / "sac" / "task_00")
    assert set(found) == {f"curve/{column}" for column in header[1:]}
    for column in header[1:]:
        steps, values = found[f"curve/{column}"]
        np.testing.assert_array_equal(steps, curve["steps"])
        np.testing.assert_array_equal(values, curve[column].astype(np.float32))  # TensorBoard keeps float32
    assert len(curve["steps"]) > 0


def test_rewriting_an_artifact_replaces_its_event_files(tmp_path):
    sink = TensorBoardCurves(tmp_path)
    for scale in (1.0, 2.0):
        rows = np.column_stack([np.arange(3.0) * 10, np.arange(3.0) * scale])
        sink(tmp_path / "bcq" / "task_01.h5", {"curve": (["steps", "return_mean"], rows)})
    log_dir = tmp_path / "tensorboard" / "bcq" / "task_01"
    assert len(list(log_dir.iterdir())) == 1
    steps, values = scalars(log_dir)["curve/return_mean"]
    assert steps.tolist() == [0, 10, 20] and values.tolist() == [0.0, 2.0, 4.0]
    assert sorted(p.name for p in log_dir.parent.iterdir()) == ["task_01"]  # no temporary left behind


def test_without_the_package_the_option_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    result = CliRunner().invoke(main, collect_args(tmp_path / "run", "--log", "tensorboard"))
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --log tensorboard needs the tensorboard package: "
                                     "pip install 'mtrl-batch[tensorboard]'")
    assert not (tmp_path / "run").exists()


def test_without_the_option_nothing_is_written_or_imported(smoke_run):
    _, run_dir = smoke_run
    assert not (run_dir / "tensorboard").exists()
    code = ("import importlib, pkgutil, sys, mtrl\n"
            "for m in pkgutil.walk_packages(mtrl.__path__, 'mtrl.'):\n"
            "    if m.name != 'mtrl.__main__': importlib.import_module(m.name)\n"
            "assert 'tensorboard' not in sys.modules, 'imported tensorboard'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

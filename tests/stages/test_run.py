import os
import signal
import subprocess
import sys
import time

from smoke import SMOKE_CONFIG

from mtrl.config import load_run_config
from mtrl.pipeline.registry import PIPELINE, get_stage
from mtrl.pipeline.runner import plan_unit

SMALL = ["--profile", "smoke", "--threads", "1", "--set", "env.n_train=2", "--set", "distill.epochs=2",
         "--set", "distill.variants=[mbml, neither]", "--set", "baselines.algos=[]"]


def mtrl_run(run_dir, *extra):
    return [sys.executable, "-m", "mtrl", "run", "--config", str(SMOKE_CONFIG), "--run-dir", str(run_dir), *SMALL,
            *extra]


def test_run_killed_midway_continues_without_recomputing_finished_stages(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(mtrl_run(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((run_dir / "bcq").glob("*.h5")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    datasets = {p: p.stat().st_mtime_ns for p in (run_dir / "datasets").glob("*.h5")}
    assert len(datasets) == 2, "collect should have finished before the kill"

    result = subprocess.run(mtrl_run(run_dir), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "collect: 0 to run, 2 up to date" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in datasets} == datasets  # not rewritten
    config = load_run_config(run_dir)
    for name in PIPELINE:  # every stage's every artifact is now up to date
        stage = get_stage(name)
        assert all(plan_unit(stage, config, unit).up_to_date for unit in stage.units(config, run_dir)), name
    assert (run_dir / "eval" / "mbml.h5").exists() and (run_dir / "sac_init" / "mbml" / "task_01.h5").exists()
    assert not list((run_dir / "checkpoints").rglob("*.h5"))

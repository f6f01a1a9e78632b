"""`mtrl launch slurm` against a real Slurm: one tiny array job (collect of one task, 200 steps).

Runs only where `sbatch` is on PATH and a controller answers (`scripts/slurm/local_cluster.sh --start-only`
starts one on a Debian machine); skipped otherwise, e.g. in CI. Select it alone with `pytest -m slurm`."""

import os
import shutil
import subprocess
import sys

import pytest
from smoke import ROOT, SMOKE_CONFIG

from mtrl.artifacts import open_artifact


def cluster_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(
    not cluster_answers(), reason="no Slurm cluster answers here (sbatch missing or `scontrol ping` fails); "
                                  "start one with scripts/slurm/local_cluster.sh --start-only")]


def test_a_real_array_job_writes_a_complete_artifact(tmp_path):
    run = tmp_path / "run"  # tmp_path is on this node's disk: fine for a single-node cluster
    env = os.environ | {"PYTHONPATH": str(ROOT)}  # the jobs import this checkout's mtrl
    cmd = [sys.executable, "-m", "mtrl", "launch", "slurm", "--config", SMOKE_CONFIG, "--profile", "smoke",
           "--run-dir", run, "--set", "collect.steps=200", "--set", "collect.eval_every=100",
           "--tasks", "0", "--until", "collect", "--cpus", "1", "--mem-gb", "1", "--time-min", "10", "--threads", "1",
           "--wait"]
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted per-task stages (tasks 0: collect)" in out.stdout
    assert "done: everything up to collect is up to date" in out.stdout
    job = out.stdout.split("submitted per-task stages")[1].split("job ")[1].split()[0]
    with open_artifact(run / "datasets" / "task_00.h5", "dataset") as art:
        assert art.fingerprint
    assert not (run / "datasets" / "task_01.h5").exists()  # --tasks 0: the other tasks were not submitted
    logs = list((run / "logs" / "slurm").glob(f"{job}_*log.out"))  # one task: a plain job, not an array
    assert len(logs) == 1 and "Job completed successfully" in logs[0].read_text()
    sacct = subprocess.run(["sacct", "--noheader", "--jobs", job, "--format=JobID,State"], capture_output=True,
                           text=True)
    if sacct.returncode == 0 and sacct.stdout.strip():  # accounting is optional on a cluster
        assert sacct.stdout.split()[:2] == [job, "COMPLETED"], sacct.stdout

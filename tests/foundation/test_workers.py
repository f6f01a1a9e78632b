"""Worker processes: they die with the command that started them (no orphan writes into a run directory)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtrl.launch.local import run_jobs

ROOT = Path(__file__).resolve().parents[2]


def write_pid_then_sleep(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_workers_die_within_seconds_of_a_killed_parent(tmp_path):
    script = ("import sys; from test_workers import write_pid_then_sleep; from mtrl.launch.local import run_jobs; "
              "run_jobs(write_pid_then_sleep, [(str(i), f'{sys.argv[1]}/w{i}') for i in range(2)], workers=2, "
              "threads=1)")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "foundation")])}
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env)
    try:
        files = [tmp_path / "w0", tmp_path / "w1"]
        assert wait_for(lambda: all(f.exists() and f.read_text() for f in files), 60), "workers did not start"
        workers = [int(f.read_text()) for f in files]
        assert all(alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in workers), 5), "a worker outlived its parent"
    finally:
        parent.kill()


def test_jobs_run_in_workers_and_report_failures_per_job():
    results = run_jobs(_maybe_fail, [("a", 1), ("b", 0)], workers=2, threads=1)
    assert [(r.key, r.error) for r in results] == [("a", None), ("b", "ZeroDivisionError: division by zero")]


def _maybe_fail(x):
    return 1 / x

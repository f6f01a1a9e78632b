"""Unit locks: a second command on a unit another one is computing waits, says so, then skips or computes it."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from filelock import FileLock, Timeout
from toy_stages import ToyConfig, ToySection, TrainToy

from mtrl.cli import main
from mtrl.pipeline.base import RunOptions
from mtrl.pipeline.locks import unit_lock_path
from mtrl.pipeline.runner import run_stage

ROOT = Path(__file__).resolve().parents[2]


class GatedToy(TrainToy):
    """TrainToy whose units record that they ran and wait for the test's signal before training."""

    def __init__(self):
        self.computed: list[str] = []
        self.started, self.proceed = threading.Event(), threading.Event()

    def run_unit(self, ctx):
        self.computed.append(ctx.unit.key)
        self.started.set()
        assert self.proceed.wait(30)
        super().run_unit(ctx)


def wait_for(predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_second_command_waits_for_a_unit_in_progress_then_skips_it(tmp_path):
    stage, config = GatedToy(), ToyConfig(toy=ToySection(tasks=2, steps=5))
    first = threading.Thread(target=run_stage, args=(stage, config, RunOptions(tmp_path, tasks=(0,))))
    first.start()
    assert stage.started.wait(30)  # the first command is inside task_00
    second = threading.Thread(target=run_stage, args=(stage, config, RunOptions(tmp_path)))
    second.start()
    log = tmp_path / "logs" / "mtrl.log"
    wait_for(lambda: "another mtrl command or job is computing it; waiting" in log.read_text())
    stage.proceed.set()
    first.join(30), second.join(30)
    assert stage.computed == ["task_00", "task_01"]  # task_00 once, by the first command
    assert "train-toy task_00: up to date (computed by another command)" in log.read_text()


def test_a_released_lock_lets_the_waiting_command_compute(tmp_path):
    """`mtrl run` on a run directory where another process holds the first unit: it says it waits, and once
    the lock is released (the other process ended without writing it) it computes the unit itself."""
    holder = FileLock(unit_lock_path(tmp_path, "tasks", "all"))
    holder.acquire()
    command = [sys.executable, "-m", "mtrl", "run", "--config", str(ROOT / "configs" / "point_goal_arc.yaml"),
               "--profile", "smoke", "--run-dir", str(tmp_path), "--until", "tasks"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        lines = []
        wait_for(lambda: lines.append(proc.stderr.readline()) or "waiting" in lines[-1])
        assert proc.poll() is None and not (tmp_path / "tasks.h5").exists()
    finally:
        holder.release()
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert (tmp_path / "tasks.h5").exists()


def test_a_killed_holder_never_leaves_a_stale_lock(tmp_path):
    path = unit_lock_path(tmp_path, "train-bcq", "task_00")
    code = f"from filelock import FileLock; lock = FileLock({str(path)!r}); lock.acquire(); " \
           "print('held', flush=True); import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    lock = FileLock(path)
    with pytest.raises(Timeout):
        lock.acquire(timeout=0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock.acquire(timeout=5)
    lock.release()


def test_two_commands_on_overlapping_groups_compute_every_task_exactly_once(tmp_path):
    """`mtrl collect --tasks 0-3` and `--tasks 2-5`, started together on one run directory (each one task-batched
    group): afterwards each of the 6 tasks was written by exactly one of them and `mtrl status` finds it up to
    date. The test holds task_02's lock until both commands wait on it, so their groups overlap in time every run.
    The command that waited trains its whole group (so its tasks' numbers are an uninterrupted run's) but says
    that it does not rewrite the tasks the other command wrote.

    Fails on a planted bug that skips a group after waiting as soon as ANY of its units is up to date (tasks 0-1
    or 4-5 are never computed), and failed on the code before the fix, where the second command rewrote the
    whole group, tasks 2-3 included (written twice)."""
    from smoke import run_stages, smoke_config

    config = smoke_config("env.n_train=6", "collect.steps=200", "collect.eval_every=200",
                          "collect.checkpoint_every=200")
    run_stages(config, tmp_path, ["tasks"])
    holder = FileLock(unit_lock_path(tmp_path, "collect", "task_02"))
    holder.acquire()
    command = [sys.executable, "-m", "mtrl", "collect", "--run-dir", str(tmp_path), "--threads", "1", "--tasks"]
    procs = [subprocess.Popen([*command, tasks], stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for tasks in ("0-3", "2-5")]
    try:
        log = tmp_path / "logs" / "mtrl.log"
        wait_for(lambda: log.read_text().count("another mtrl command or job is computing it; waiting") == 2, 120)
    finally:
        holder.release()
    outputs = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    written = [task for output in outputs for task in _written_tasks(output)]
    assert sorted(written) == [0, 1, 2, 3, 4, 5], outputs  # each task once, by one of the two commands
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    collect = [line.split() for line in result.output.splitlines() if line.startswith("collect ")]
    assert len(collect) == 12 and all(row[2:4] == ["up", "to"] for row in collect), result.output


def _written_tasks(output: str) -> list[int]:
    """The tasks of every group a command's console output says it computed (`collect task_02..task_05 (4 tasks):
    done in …` or `collect task_04: done in …`), less those it says it trained again without rewriting them."""
    tasks = []
    for group in re.findall(r"^collect (\S+)(?: \(\d+ tasks\))?: done in", output, re.MULTILINE):
        first, _, last = group.partition("..")
        tasks += range(int(first[-2:]), int((last or first)[-2:]) + 1)
    for kept in re.findall(r"^collect \S+(?: \(\d+ tasks\))?: (.*) up to date; trained again", output, re.MULTILINE):
        for key in kept.split(", "):
            tasks.remove(int(key[-2:]))
    return tasks

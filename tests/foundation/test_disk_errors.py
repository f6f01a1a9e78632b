"""Full, read-only and forbidden disks: one line `error: …`, exit 2, no temporary file left, nothing damaged."""

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mtrl.artifacts import ArtifactMeta, ArtifactWriter, open_artifact
from mtrl.cli import main
from mtrl.errors import DiskError
from mtrl.fsio import disk_error
from mtrl.runlog import log, setup_logging


def no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` (logs aside) with a hash of its content."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and "logs" not in p.parts}


def test_h5py_failures_carry_their_errno_in_the_message():
    """h5py reports a failed flush as a RuntimeError whose text holds the errno: still a disk error."""
    flush = RuntimeError("Unable to flush file (file write failed: time = x, filename = 'a.h5', errno = 28, "
                         "error message = 'No space left on device')")
    assert "no space left" in str(disk_error(flush, "a.h5"))
    assert disk_error(RuntimeError("shapes do not match")) is None
    assert disk_error(OSError(errno.ENOENT, "No such file")) is None  # a missing file is not a full disk


def test_writer_on_a_full_disk_raises_one_error_and_keeps_the_previous_artifact(tmp_path, monkeypatch):
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("eval", "evaluate", {})) as w:
        w.array("returns", np.arange(3.0))
    before = snapshot(tmp_path)
    monkeypatch.setattr("mtrl.artifacts.store.os.fsync", no_space)
    with pytest.raises(DiskError, match=rf"cannot write {path}: no space left on the device"):
        with ArtifactWriter(path, ArtifactMeta("eval", "evaluate", {})) as w:
            w.curve("curve", {"step": np.arange(2.0), "return": np.ones(2)}, x="step")
            w.array("returns", np.zeros(3))
    assert snapshot(tmp_path) == before  # no temporary file, no CSV of the failed write
    with open_artifact(path, "eval") as art:
        assert art.array("returns").tolist() == [0.0, 1.0, 2.0]


def test_full_disk_in_a_stage_is_one_line_exit_2_and_damages_nothing(smoke_run, tmp_path, monkeypatch):
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = snapshot(run)
    monkeypatch.setattr("mtrl.artifacts.store.os.fsync", no_space)
    result = CliRunner().invoke(main, ["train-bcq", "--run-dir", str(run), "--force", "--threads", "1"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "no space left on the device" in line and "Traceback" not in result.output
    after = snapshot(run)
    assert not [name for name in after if ".tmp-" in name]
    assert {k: v for k, v in after.items() if k in before} == before  # every artifact as it was


def test_a_log_file_that_cannot_be_written_warns_once(tmp_path, monkeypatch, capsys):
    setup_logging(tmp_path)
    file_handler = next(h for h in log.handlers if isinstance(h, logging.FileHandler))
    monkeypatch.setattr(file_handler, "flush", no_space)
    for i in range(3):
        log.info(f"line {i}")
    err = capsys.readouterr().err
    assert err.count("warning: cannot write") == 1 and "Logging error" not in err
    assert "line 2" in err  # the console keeps logging
    setup_logging(None)


@contextlib.contextmanager
def mounted(mount: Path, *commands: list[str]):
    """Run the mount `commands` (root only), yield, unmount; skip the test where mounting is not allowed."""
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or any(
            subprocess.run(c, capture_output=True).returncode for c in commands):
        subprocess.run(["umount", str(mount)], capture_output=True)
        pytest.skip("cannot mount here (needs root with mount permission)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@contextlib.contextmanager
def read_only(directory: Path):
    """`directory` made read-only as a user meets it: by permissions, or (as root, who ignores them) by a
    read-only bind mount."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(0o755)
        return
    mount = directory.with_name(directory.name + "-ro")
    with mounted(mount, ["mount", "--bind", str(directory), str(mount)],
                 ["mount", "-o", "remount,ro,bind", str(mount)]):
        yield mount


def test_a_really_full_disk_ends_distill_in_one_line_without_a_crash(smoke_run, tmp_path):
    """On a small tmpfs: HDF5 writing onto a full disk used to print tracebacks and segfault (exit 139)."""
    _, run_dir = smoke_run
    inputs = [p for p in run_dir.rglob("*") if p.is_file() and p.relative_to(run_dir).parts[0]
              not in ("policies", "eval", "sac_init", "logs", ".locks")]
    size = sum(p.stat().st_size for p in inputs) + 300_000  # room for about one policy, not four
    with mounted(tmp_path / "disk", ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                     str(tmp_path / "disk")]) as disk:
        for p in inputs:
            (disk / p.relative_to(run_dir)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, disk / p.relative_to(run_dir))
        result = subprocess.run([sys.executable, "-m", "mtrl", "distill", "--run-dir", str(disk), "--threads", "1"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "Logging error" not in result.stderr
        assert result.stderr.splitlines()[-1].startswith("error: distill:")
        assert "no space left on the device" in result.stderr.splitlines()[-1]
        assert not [p for p in disk.rglob("*") if ".tmp-" in p.name]


def test_read_only_run_directory(smoke_run, tmp_path):
    """A complete run on a read-only disk (permissions, or as root a read-only bind mount): a command with nothing
    to do finishes and says so (it exited 2, "cannot write", before issue 34); one with work to do, or `report`
    into the run, stops with one line; `status`, and `report` elsewhere, work."""
    _, run_dir = smoke_run
    shutil.copytree(run_dir, tmp_path / "run")
    with read_only(tmp_path / "run") as run:
        runner = CliRunner()
        for args, stages in [(["run"], "tasks, collect, datasets"), (["train-bcq", "--tasks", "0"], "train-bcq")]:
            result = runner.invoke(main, [*args, "--run-dir", str(run), "--threads", "1"])
            assert result.exit_code == 0, (args, result.output)
            last = result.output.splitlines()[-1]
            assert last.startswith(f"done: {stages}") and last.endswith(
                f"up to date in {run}; nothing to write (the run directory is read-only)")
        for args, fix in [(["run", "--run-dir", run, "--force"], "--run-dir"),
                          (["train-bcq", "--run-dir", run, "--set", "bcq.steps=200"], "--run-dir"),
                          (["report", run], "--out")]:
            result = runner.invoke(main, [str(a) for a in args])
            assert result.exit_code == 2, (args, result.output)
            (line,) = result.output.splitlines()
            assert line.startswith(f"error: cannot write {run}") and fix in line
        status = runner.invoke(main, ["status", str(run)])  # reading needs no write access
        assert status.exit_code == 0 and "artifacts up to date" in status.output
        report = runner.invoke(main, ["report", str(run), "--out", str(tmp_path / "report")])
        assert report.exit_code == 0, report.output

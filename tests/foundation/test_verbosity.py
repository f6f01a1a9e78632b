"""`mtrl --quiet` and `mtrl -v`: what reaches the console, while logs/mtrl.log keeps everything."""

from click.testing import CliRunner
from smoke import SMOKE_CONFIG

from mtrl.artifacts import read_fingerprint
from mtrl.cli import main


def collect(run_dir, *top_level, force=False):
    args = [*top_level, "collect", "--config", str(SMOKE_CONFIG), "--profile", "smoke", "--run-dir", str(run_dir),
            "--threads", "1", "--tasks", "0", "--progress-every", "1e-9"] + (["--force"] if force else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_quiet_shows_the_result_only_verbose_adds_detail(tmp_path):
    run_dir = tmp_path / "run"
    done = f"done: tasks, collect up to date in {run_dir}"
    assert collect(run_dir, "--quiet").strip().splitlines() == [done]  # no progress lines, no info lines
    log = (run_dir / "logs" / "mtrl.log").read_text()
    assert "collect task_00: 1/" in log and "collect: 1 to run" in log  # the log file still has them

    verbose = collect(run_dir, "-v", force=True)
    fingerprint = read_fingerprint(run_dir / "sac" / "task_00.h5")
    assert f"collect task_00: fingerprint {fingerprint}; dataset " in verbose  # why it runs or is skipped
    assert "collect: 1 job(s) on cpu, 1 worker(s), 1 torch thread(s) each" in verbose
    assert "collect task_00: 1/" in verbose and "s of it evaluating" in verbose  # progress and timings

    normal = collect(run_dir)  # up to date: info lines, no debug detail
    assert "collect: 0 to run, 1 up to date" in normal and done in normal
    assert "fingerprint" not in normal


def test_verbose_and_quiet_together_are_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["-v", "--quiet", "status", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == "error: -v and --quiet contradict each other; pass one of them"

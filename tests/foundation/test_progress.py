"""Progress without a terminal: `mtrl.runlog.LogProgress` lines, and the choice between them and a tqdm bar."""

import logging

import tqdm
from click.testing import CliRunner
from smoke import SMOKE_CONFIG

from mtrl.cli import main
from mtrl.runlog import LogProgress, progress_bar


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_line_every_interval_with_rate_eta_and_the_latest_postfix(caplog):
    clock, logger = FakeClock(), logging.getLogger("test_progress")
    bar = LogProgress(total=1000, desc="collect task_00", unit="step", initial=200, every=30.0, logger=logger,
                      clock=clock)
    with caplog.at_level(logging.INFO, logger="test_progress"):
        for _ in range(40):  # 10 steps per 4 seconds: 2.5 steps/s
            clock.now += 4.0
            bar.update(10)
            if bar.n == 400:
                bar.set_postfix(eval_return="-812.5")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5  # at 32, 64, 96, 128 and 160 s: every 30 s at the next update
    assert lines[0] == "collect task_00: 280/1000 steps (28%), 2.5 steps/s, ETA 4m48s"
    assert lines[-1] == "collect task_00: 600/1000 steps (60%), 2.5 steps/s, ETA 2m40s, eval_return=-812.5"


def test_a_terminal_gets_a_bar_other_output_log_lines_or_none(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert isinstance(progress_bar(10, "x", "step", 0, 0, 60.0), LogProgress)
    assert isinstance(progress_bar(10, "x", "step", 0, 0, 0.0), tqdm.tqdm)  # --progress-every 0: no lines
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert isinstance(progress_bar(10, "x", "step", 0, 0, 60.0), tqdm.tqdm)
    # --quiet: no bar even on a terminal; the lines go to the log (whose console handler then drops them)
    assert isinstance(progress_bar(10, "x", "step", 0, 0, 60.0, quiet=True), LogProgress)
    assert progress_bar(10, "x", "step", 0, 0, 0.0, quiet=True).disable


def test_progress_every_reaches_the_units_log(tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["collect", "--config", SMOKE_CONFIG, "--profile", "smoke", "--run-dir",
                                       str(run_dir), "--threads", "1", "--tasks", "0", "--progress-every", "1e-9"])
    assert result.exit_code == 0, result.output
    log = (run_dir / "logs" / "mtrl.log").read_text()
    assert "collect task_00: 1/" in log and "steps/s, ETA" in log

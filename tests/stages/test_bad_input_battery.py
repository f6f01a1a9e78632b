"""The bad-input battery (scripts/bad_input_battery.py) on the smoke run: every case is a clear error."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bad_input_battery  # noqa: E402


def test_every_bad_input_gets_a_clear_error_and_damages_nothing(smoke_run, tmp_path, capsys):
    _, run_dir = smoke_run
    problems: list[str] = []
    counts = bad_input_battery.run_battery(run_dir, tmp_path / "scratch", problems.append)
    with capsys.disabled():
        print(f"\nbad-input battery: {problems[-1]}")
    assert sum(counts.values()) >= 85
    assert counts["clear"] == sum(counts.values()), "\n".join(problems)

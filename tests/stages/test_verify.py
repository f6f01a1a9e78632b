"""`mtrl verify` and `mtrl status --verify`: damage that `status` cannot see (it reads only attributes)."""

import shutil

import h5py
import pytest
from click.testing import CliRunner

from mtrl.cli import main


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def damaged_lines(output):
    return [line for line in output.splitlines() if line.startswith("damaged: ")]


def states(status_output):
    """artifact -> state, from `mtrl status`'s table."""
    rows = status_output.split("\n\n")[0].splitlines()[1:]
    return {row.split()[1]: " ".join(row.split()[2:-1]) for row in rows}


def flip_a_data_bit(path, dataset):
    """Flip one bit in the middle of `dataset`'s stored bytes (its first chunk), away from every HDF5 header."""
    with h5py.File(path, "r") as f:
        chunk = f[dataset].id.get_chunk_info(0)
        offset = chunk.byte_offset + chunk.size // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x10]))


@pytest.fixture
def run(smoke_run, tmp_path):
    _, run_dir = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def test_an_intact_run_verifies(smoke_run):
    _, run_dir = smoke_run
    code, output = invoke("verify", run_dir)
    assert code == 0, output
    assert damaged_lines(output) == []
    summary = output.strip().splitlines()[-1]
    assert summary.startswith("verify: ") and ", 0 damaged" in summary
    intact, present = summary.removeprefix("verify: ").split(" artifacts")[0].split(" of ")
    assert intact == present and int(present) > 20


def test_a_flipped_bit_in_a_dataset_is_found_where_status_sees_nothing(run):
    path = run / "datasets" / "task_01.h5"
    flip_a_data_bit(path, "observations")
    code, output = invoke("status", run)
    assert code == 0 and states(output)["datasets/task_01.h5"] == "up to date"  # the gap `verify` closes

    code, output = invoke("verify", run)
    assert code == 1, output
    [line] = damaged_lines(output)
    assert line.startswith("damaged: datasets/task_01.h5: 'observations' is corrupt"), line
    assert f"stage 'collect' rewrites it: rm {path} && mtrl collect --run-dir {run} --tasks 1" in line, line
    assert output.strip().splitlines()[-1].endswith(" artifacts intact, 1 damaged")
    assert "Traceback" not in output

    code, output = invoke("status", "--verify", run)
    assert code == 1 and states(output)["datasets/task_01.h5"] == "damaged", output
    assert len(damaged_lines(output)) == 1


def test_truncated_and_garbage_files_are_damaged_one_line_each(run):
    truncated, garbage = run / "bcq" / "task_00.h5", run / "policies" / "mbml.h5"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage.write_bytes(b"not an HDF5 file at all")
    code, output = invoke("verify", run)
    assert code == 1, output
    lines = damaged_lines(output)
    assert len(lines) == 2, output
    assert lines[0].startswith("damaged: bcq/task_00.h5: ") and "mtrl train-bcq" in lines[0] and "--tasks 0" in lines[0]
    assert lines[1].startswith("damaged: policies/mbml.h5: not a readable HDF5 file")
    assert f"mtrl distill --run-dir {run}" in lines[1] and "--tasks" not in lines[1]
    assert "Traceback" not in output


def test_missing_artifacts_are_counted_not_damaged(run):
    (run / "eval" / "mbml.h5").unlink()
    code, output = invoke("verify", run)
    assert code == 0, output
    assert output.strip().endswith(", 0 damaged, 1 missing (not checked)")

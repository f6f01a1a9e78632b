import shutil
import subprocess
import sys

import h5py
import pytest
from click.testing import CliRunner
from smoke import SMOKE_CONFIG

from mtrl.cli import main


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def assert_one_line_error(code, output, *fragments):
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_the_stages_and_version():
    code, output = invoke("--help")
    assert code == 0
    for command in ("collect", "train-bcq", "fit-rewards", "fit-dynamics", "relabel", "distill", "evaluate",
                    "sac-init", "run", "status", "inspect"):
        assert command in output
    assert invoke("--version")[1].strip().startswith("mtrl, version")


def test_bad_artifacts_give_one_line_errors(tmp_path, smoke_run):
    _, run_dir = smoke_run
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    assert_one_line_error(*invoke("inspect", junk), "not a readable HDF5 file")
    assert_one_line_error(*invoke("inspect", tmp_path / "missing.h5"), "not found")
    truncated = tmp_path / "truncated.h5"
    data = (run_dir / "datasets" / "task_00.h5").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert_one_line_error(*invoke("inspect", truncated), "corrupt or truncated")
    incomplete = tmp_path / "incomplete.h5"
    shutil.copy(run_dir / "tasks.h5", incomplete)
    with h5py.File(incomplete, "a") as f:
        f.attrs["complete"] = False
    assert_one_line_error(*invoke("inspect", incomplete), "incomplete artifact")


def test_wrong_kind_input_is_reported_and_nothing_is_damaged(tmp_path, smoke_run):
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    shutil.copy(run / "bcq" / "task_00.h5", run / "datasets" / "task_00.h5")  # a bcq artifact posing as data
    before = (run / "bcq" / "task_00.h5").read_bytes()
    code, output = invoke("train-bcq", "--run-dir", run, "--threads", "1")
    assert_one_line_error(code, output, "is a 'bcq' artifact, expected 'dataset'")
    assert (run / "bcq" / "task_00.h5").read_bytes() == before


def test_inspect_shows_provenance_and_shapes(smoke_run):
    _, run_dir = smoke_run
    code, output = invoke("inspect", run_dir / "datasets" / "task_00.h5")
    assert code == 0
    assert "dataset (schema v4)" in output and "mujoco 4.0.0" in output
    assert "observations" in output and "(1000, 2)" in output


def test_status_reports_up_to_date_and_stale(smoke_run, tmp_path):
    _, run_dir = smoke_run
    code, output = invoke("status", run_dir)
    assert code == 0 and "datasets/task_00.h5" in output
    total = output.strip().splitlines()[-1]
    assert total.split(" of ")[0] == total.split(" of ")[1].split()[0]  # n of n up to date
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "bcq" / "task_02.h5").unlink()
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("steps: 300", "steps: 301", 1))
    code, output = invoke("status", run)
    states = {row.split()[1]: " ".join(row.split()[2:-1]) for row in output.splitlines()[1:-2]}
    assert states["bcq/task_02.h5"] == "missing"
    assert states["bcq/task_00.h5"] == "stale"
    assert states["datasets/task_00.h5"] == "up to date"
    # downstream of a stale or missing artifact is stale: what `mtrl run` would recompute
    for path in ("policies/mbml.h5", "eval/mbml.h5", "sac_init/mbml/task_00.h5"):
        assert states[path] == "stale", path
    assert states["relabel.h5"] == "up to date"  # it does not read BCQ


def test_status_propagates_a_config_change_to_everything_downstream(smoke_run, tmp_path):
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = (run / "config.yaml").read_text()
    assert "triplet_margin: 2.0" in config
    (run / "config.yaml").write_text(config.replace("triplet_margin: 2.0", "triplet_margin: 1.0"))
    code, output = invoke("status", run)
    states = {row.split()[1]: " ".join(row.split()[2:-1]) for row in output.splitlines()[1:-2]}
    for path in ("policies/mbml.h5", "eval/mbml.h5", "sac_init/mbml/task_01.h5", "policies/no-relabel.h5"):
        assert states[path] == "stale", path
    # the ablations without a triplet loss do not read the margin
    for path in ("bcq/task_00.h5", "eval/batch-pearl.h5", "sac_init/random/task_01.h5", "policies/no-triplet.h5",
                 "eval/neither.h5"):
        assert states[path] == "up to date", path


def test_artifact_of_an_older_schema_is_stale_and_named_in_one_line(smoke_run, tmp_path):
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    with h5py.File(run / "datasets" / "task_00.h5", "a") as f:  # as an older mtrl wrote it
        f.attrs["schema_version"] = int(f.attrs["schema_version"]) - 1
    code, output = invoke("status", run)
    states = {row.split()[1]: " ".join(row.split()[2:-1]) for row in output.splitlines()[1:-2]}
    assert states["datasets/task_00.h5"] == "stale" and states["datasets/task_01.h5"] == "up to date"
    code, output = invoke("train-bcq", "--run-dir", run, "--tasks", "0")
    assert_one_line_error(code, output, "datasets/task_00.h5: 'dataset' schema version 3 was written by an older "
                          "mtrl (this one reads version 4); rerun stage 'collect'", "--force")


@pytest.mark.parametrize("args, fragments", [
    (["--set", "distill.algo.triplet_margin=-1"], ["distill.algo.triplet_margin", "out of range", ">= 0"]),
    (["--set", "distill.tripplet=1"], ["unknown config key 'distill.tripplet'", "valid keys under 'distill'"]),
    (["--set", "env.family=Nope"], ["unknown task family 'Nope'", "AntDir"]),
    (["--set", "bcq.snapshot=last"], ["'last' is not one of: best, final"]),
    (["--profile", "huge"], ["profile 'huge' is not defined", "smoke"]),
    (["--tasks", "x"], ["--tasks 'x'"]),
    (["--tasks", "2-0"], ["--tasks '2-0': the range 2-0 is empty; write it as 0-2"]),
    (["--set", "collect.sac.actor_lr=.nan"], ["collect.sac.actor_lr': expected a finite number"]),
])
def test_invalid_config_is_rejected_before_any_work(tmp_path, args, fragments):
    run = tmp_path / "run"
    code, output = invoke("collect", "--config", SMOKE_CONFIG, "--run-dir", run, *args)
    assert_one_line_error(code, output, *fragments)
    assert not (run / "tasks.h5").exists()


def test_missing_input_names_the_stage_to_run(tmp_path):
    code, output = invoke("train-bcq", "--config", SMOKE_CONFIG, "--profile", "smoke", "--run-dir", tmp_path)
    assert_one_line_error(code, output, "tasks.h5, which is missing: run `mtrl collect` first")


def test_real_process_exit_status_and_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mtrl", "inspect", tmp_path / "none.h5"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path / 'none.h5'}: not found"


def test_per_task_policies_are_said_to_have_no_test_score(smoke_run):
    """sac and bcq are one policy per training task: `evaluate` says they have no test tasks, not `test nan`."""
    _, run_dir = smoke_run
    log = (run_dir / "logs" / "mtrl.log").read_text()
    for name in ("sac", "bcq"):
        (line,) = [line for line in log.splitlines() if f"evaluate {name}: train " in line]
        assert line.endswith("test none (one policy per training task)")
    assert "test nan" not in log


def test_finished_units_leave_no_checkpoint_folders(smoke_run):
    """Checkpoints are removed when their unit finishes, and so are the folders they leave empty."""
    _, run_dir = smoke_run
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--tasks", "99"], "--tasks 99: train-bcq has tasks 0..2"),
    (["--tasks", "0"], None),  # works: the override lands in config.yaml
])
def test_a_command_that_cannot_start_leaves_the_run_config_alone(smoke_run, tmp_path, args, fragment):
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = (run / "config.yaml").read_text()
    code, output = invoke("train-bcq", "--run-dir", run, "--set", "bcq.eval_every=7", "--threads", "1", *args)
    after = (run / "config.yaml").read_text()
    if fragment is None:
        assert code == 0, output
        assert "eval_every: 7" in after and before != after
    else:
        assert_one_line_error(code, output, fragment)
        assert after == before


def test_missing_inputs_are_reported_before_the_config_is_written(tmp_path):
    run = tmp_path / "run"
    code, output = invoke("distill", "--config", SMOKE_CONFIG, "--profile", "smoke", "--run-dir", run)
    assert_one_line_error(code, output, "which is missing: run `mtrl collect` first")
    assert not (run / "config.yaml").exists()


def test_help_summaries_are_not_cut_mid_parenthesis():
    for name, command in main.commands.items():
        for limit in (90, 120):  # the width `mtrl --help` gives them, and a wider terminal's
            summary = command.get_short_help_str(limit=limit)
            assert summary.count("(") == summary.count(")"), (name, summary)


def test_inspect_of_a_file_that_is_no_artifact_does_not_advise_deleting_it(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# not an artifact\n")
    code, output = invoke("inspect", readme)
    assert_one_line_error(code, output, "not a readable HDF5 file; if it is an mtrl artifact it is corrupt")

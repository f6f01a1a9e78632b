from click.testing import CliRunner

from mtrl.cli import main


def plot(*args):
    result = CliRunner().invoke(main, ["plot", *map(str, args)])
    return result.exit_code, result.output


def test_plot_draws_a_curve_of_several_runs(smoke_run, tmp_path):
    _, run_dir = smoke_run
    out = tmp_path / "curve.png"
    code, output = plot(run_dir, run_dir.parent / run_dir.name, "--curve", "policies/mbml.eval_curve", "--y",
                        "test_score", "--out", out)
    assert code == 0, output
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 10_000


def test_unknown_curves_and_columns_are_one_line_errors(smoke_run):
    _, run_dir = smoke_run
    code, output = plot(run_dir, "--curve", "policies/nope")
    assert code == 2 and output.count("\n") == 1
    assert "policies/nope.csv: no such curve" in output and "policies/batch-pearl.eval_curve" in output
    code, output = plot(run_dir, "--curve", "policies/mbml.eval_curve", "--y", "loss")
    assert code == 2 and "--y loss: not a column of policies/mbml.eval_curve; its columns: train_score, test_score" \
        in output

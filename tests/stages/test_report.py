import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mtrl.artifacts import open_artifact
from mtrl.artifacts.tree import read_tree, write_tree
from mtrl.cli import main

FIGURES = ("fig4_multitask_returns.png", "fig6_ablations.png", "fig7_relabel_error.png", "fig8_sac_init.png",
           "embeddings.png")


def report(*args):
    result = CliRunner().invoke(main, ["report", *map(str, args)])
    return result.exit_code, result.output


def tables(text):
    """The markdown tables of `text`, each a list of rows of cells (header first, separator dropped)."""
    found, current = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        if current is None:
            current = []
            found.append(current)
        if not line.startswith("|---"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return found


def row(text, header, *first_cells):
    """The other cells of the one row starting with `first_cells` in the tables whose header starts so."""
    found = [r[len(first_cells):] for t in tables(text) if t[0][: len(header)] == list(header)
             for r in t[1:] if r[: len(first_cells)] == list(first_cells)]
    assert len(found) == 1, (header, first_cells, found)
    return found[0]


def copy_run(run_dir, to):
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("report"))
    return to


def test_report_of_the_smoke_run(smoke_run, tmp_path):
    config, run_dir = smoke_run
    out = tmp_path / "report"
    code, output = report(run_dir, "--out", out)
    assert code == 0, output
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name
    text = (out / "results.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in text
    assert "**Rule: final policy**" in text and "**Rule: best-on-train point.**" in text
    assert "**Rule: selected on test tasks (as the paper's figures).**" in text
    for method in ("mbml", "no-triplet", "no-relabel", "neither", "contextual-bcq", "batch-pearl"):
        with open_artifact(run_dir / "eval" / f"{method}.h5") as art:
            summary = art.meta("summary")
        with open_artifact(run_dir / "policies" / f"{method}.h5") as art:
            curve = art.tree("eval_curve")
        # final: evaluate test/train, last training evaluation test/train; best-on-train: test, train, epoch;
        # selected on test: the smoke curve (epochs 2 and 4) is shorter than the window, so its mean at epoch 4
        cells = row(text, ("method", "run"), method, run_dir.name)
        best = curve["train_score"].argmax()
        expected = [summary["test_score"], summary["train_score"], curve["test_score"][-1], curve["train_score"][-1],
                    curve["test_score"][best], curve["train_score"][best], curve["epochs"][best],
                    curve["test_score"].mean(), curve["epochs"][-1]]
        assert list(map(float, cells)) == pytest.approx(expected, rel=5e-3)  # three significant figures
    for run in ("mbml", "random", "variation"):
        assert row(text, ("run", "interactions"), run, "300")  # the sac-init curves at their last evaluation
    assert f"seeds {config.seed}." in text and "| seed |" in text
    curves = []  # the collection SACs' evaluations, averaged over the training tasks
    for task in range(config.env.n_train):
        with open_artifact(run_dir / "sac" / f"task_{task:02d}.h5") as art:
            curves.append(art.tree("curve"))
    for i, step in enumerate(curves[0]["steps"]):
        mean, std, per_run = map(float, row(text, ("collection", "interactions"), "SAC", f"{step:.0f}"))
        assert mean == per_run == pytest.approx(np.mean([c["return_mean"][i] for c in curves]), rel=5e-3)
        assert std == 0

    artifacts = [p for p in run_dir.rglob("*.h5") if "checkpoints" not in p.parts]
    for path in artifacts:
        with open_artifact(path) as art:
            assert row(text, ("artifact",), f"`{path.relative_to(run_dir).as_posix()}`") == [f"`{art.fingerprint}`"]
    # collect writes a dataset and a SAC artifact per task; the unit's time (and its evaluations') counted once
    expected = expected_eval = 0.0
    for task in range(config.env.n_train):
        times, eval_times = [], []
        for kind in ("datasets", "sac"):
            with open_artifact(run_dir / kind / f"task_{task:02d}.h5") as art:
                times.append(art.attrs["wall_seconds"])
                eval_times.append(art.attrs["eval_seconds"])
        expected, expected_eval = expected + max(times), expected_eval + max(eval_times)
    mean, evaluation, per_run = row(text, ("stage",), "collect")
    assert float(mean) == float(per_run) == pytest.approx(expected, rel=5e-3)
    assert float(evaluation) == pytest.approx(expected_eval, rel=5e-3) and 0 < expected_eval < float(mean)
    for stage in ("train-bcq", "distill", "train-baseline", "sac-init"):  # they evaluate during training
        mean, evaluation, _ = map(float, row(text, ("stage",), stage))
        assert 0 < evaluation < mean
    assert row(text, ("stage",), "fit-rewards")[1] == "—"  # no evaluation during training
    for stage in ("tasks", "train-bcq", "fit-rewards", "relabel", "distill", "evaluate", "sac-init", "total"):
        assert float(row(text, ("stage",), stage)[0]) > 0
    assert "None: every artifact the runs' configs expect is present." in text


def edit_tree(path, group, edit):
    """Replace an artifact's stored tree by `edit(tree)` (a different seed or config would have written it)."""
    with h5py.File(path, "a") as f:
        tree = edit(read_tree(f[group]))
        del f[group]
        write_tree(f.create_group(group), tree)


def test_two_runs_are_aggregated_as_mean_and_std(smoke_run, tmp_path):
    _, run_dir = smoke_run
    first, second = copy_run(run_dir, tmp_path / "a"), copy_run(run_dir, tmp_path / "b")
    config_text = (second / "config.yaml").read_text()
    (second / "config.yaml").write_text(config_text.replace("seed: 0", "seed: 1").replace(
        "max_transitions: 500", "max_transitions: 400"))
    with h5py.File(second / "policies" / "mbml.h5", "a") as f:  # curves are stored by name: plain h5py edits them
        f["eval_curve/test_score"][...] += 2.0
    with h5py.File(second / "eval" / "mbml.h5", "a") as f:
        summary = json.loads(f.attrs["summary"])
        f.attrs["summary"] = json.dumps(summary | {"test_score": summary["test_score"] + 1.0})
    with open_artifact(first / "policies" / "mbml.h5") as art:
        test_curve = art.tree("eval_curve")["test_score"]

    code, output = report(first, second)
    assert code == 0, output
    text = (first / "report" / "results.md").read_text()
    assert "2 run(s), seeds 0, 1." in text
    mean, std = row(text, ("method", "test (evaluate)"), "mbml")[0].removesuffix(" (n=2)").split(" ± ")
    assert std == "0.50"  # the std to two significant figures, the mean to the same decimal place
    assert float(mean) == pytest.approx(summary["test_score"] + 0.5, abs=0.005)
    for epoch_index, epoch in enumerate(("2", "4")):  # the Fig. 4 curve: ± 1 around the midpoint of both runs
        mean, std, a, b = map(float, row(text, ("test curve", "epoch"), "mbml", epoch))
        assert mean == pytest.approx(test_curve[epoch_index] + 1.0, rel=5e-3)
        assert std == pytest.approx(1.0, rel=5e-3)
        assert b - a == pytest.approx(2.0, abs=0.1)
    assert row(text, ("test curve", "epoch"), "no-triplet", "2")[1] == "0"  # identical copies: no spread
    assert row(text, ("key",), "`relabel.max_transitions`") == ["500", "400"]
    assert "`seed`" not in text


def test_missing_and_unreadable_artifacts_are_named(smoke_run, tmp_path):
    _, run_dir = smoke_run
    run = copy_run(run_dir, tmp_path / "run")
    for rel in ("bcq/task_01.h5", "sac_init/random/task_00.h5", "policies/no-triplet.h5"):
        (run / rel).unlink()
    (run / "eval" / "neither.h5").write_bytes((run_dir / "eval" / "neither.h5").read_bytes()[:500])

    code, output = report(run)
    assert code == 0, output
    text = (run / "report" / "results.md").read_text()
    missing = text.split("## Missing artifacts")[1].split("\n## ")[0]
    assert "run: 4 expected artifact(s) missing or unreadable" in missing
    for rel in ("bcq/task_01.h5", "sac_init/random/task_00.h5", "policies/no-triplet.h5"):
        assert f"- `{rel} (missing)`" in missing
    assert "- `eval/neither.h5 (not a readable HDF5 file" in missing
    # what exists is still reported
    assert (run / "report" / "fig6_ablations.png").exists() and (run / "report" / "fig8_sac_init.png").exists()
    assert row(text, ("task", "run"), "task_01", "run")[1] == "—"  # BCQ best return of the deleted task
    assert row(text, ("run", "interactions"), "random", "100")[-1] != "—"  # from its remaining test task


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d.mkdir(), "no mtrl artifacts to report on"),
    (lambda d: None, "not a directory"),
])
def test_unusable_run_dir_is_a_one_line_error(tmp_path, make, fragment):
    run = tmp_path / "run"
    make(run)
    code, output = report(run)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {run}: {fragment}"), output
    assert not (run / "report").exists()


def test_report_of_runs_without_curves_or_relabelling(smoke_run, tmp_path):
    """A run trained with distill.eval_every=0 has no curves: the scores come from eval/ alone."""
    _, run_dir = smoke_run
    run = copy_run(run_dir, tmp_path / "run")
    for path in (run / "policies").glob("*.h5"):
        edit_tree(path, "eval_curve", lambda t: {key: values[:0] for key, values in t.items()})
    (run / "relabel.h5").unlink()
    code, output = report(run)
    assert code == 0, output
    text = (run / "report" / "results.md").read_text()
    assert not (run / "report" / FIGURES[0]).exists() and not (run / "report" / FIGURES[2]).exists()
    final = row(text, ("method", "test (evaluate)"), "mbml")
    assert "—" not in final[:2] and final[2:] == ["—"] * 2
    assert row(text, ("method", "test", "train (selected on)"), "mbml") == ["—"] * 3
    assert "No relabel.h5 found." in text


def test_a_run_dir_given_twice_is_a_one_line_error(smoke_run):
    _, run_dir = smoke_run
    code, output = report(run_dir, run_dir / ".." / run_dir.name)
    assert code == 2 and output.strip() == "error: a run directory is given twice; each one is a separate run (seed)"


def with_profile(run, profile):
    """Set the run's recorded profile (config key `profile`) in its config.yaml."""
    config = run / "config.yaml"
    lines = [line for line in config.read_text().splitlines() if not line.startswith("profile:")]
    config.write_text("\n".join([f"profile: {profile}", *lines]) + "\n")


def test_best_point_is_selected_on_training_tasks_and_smoke_is_flagged(smoke_run, tmp_path):
    _, run_dir = smoke_run
    run = copy_run(run_dir, tmp_path / "run")
    with_profile(run, "smoke")
    # two evaluations (epochs 2, 4): the training tasks peak at epoch 2, the test tasks at epoch 4
    edit_tree(run / "policies" / "mbml.h5", "eval_curve",
              lambda t: t | {"train_score": np.array([-1.0, -2.0]), "test_score": np.array([-9.0, -3.0])})
    code, output = report(run)
    assert code == 0, output
    text = (run / "report" / "results.md").read_text()
    assert text.startswith("# mtrl report: PointGoalArc, profile smoke\n\n> **Smoke profile: these numbers are not "
                           "results.**")
    assert row(text, ("method", "test", "train (selected on)"), "mbml") == ["-9 (n=1)", "-1 (n=1)", "2"]
    assert row(text, ("method", "test (evaluate)"), "mbml")[2] == "-3 (n=1)"  # the final policy's last point
    assert "Profile unknown" not in text

    with_profile(run, "null")  # no profile recorded (a config file used without one): say so, do not guess
    code, output = report(run)
    text = (run / "report" / "results.md").read_text()
    assert text.startswith("# mtrl report: PointGoalArc, profile unknown\n\n> **Profile unknown** for run:")
    assert "Smoke profile" not in text


def test_the_embeddings_figure_draws_a_task_blind_encoder_without_nan(tmp_path):
    """An encoder that embeds every set alike has no variance for PCA to share out (was 0/0, a RuntimeWarning)."""
    import warnings

    from mtrl.report.figures import _embeddings

    separated = np.repeat(np.eye(3, 4)[:, None], 5, 1) + np.random.default_rng(0).normal(0, 0.01, (3, 5, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        name = _embeddings({"blind": np.ones((3, 5, 4)), "sharp": separated}, tmp_path / "e.png", "title")
    assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_stages_the_run_has_not_reached_are_one_line_of_missing_artifacts(smoke_run, tmp_path):
    """A run made with `--until relabel` has no distill, evaluate or sac-init outputs: one line for those stages,
    not one per artifact or per stage; a stage with some of its outputs keeps one line per missing artifact."""
    _, run_dir = smoke_run
    run = copy_run(run_dir, tmp_path / "run")
    removed = sum(len(list((run / name).rglob("*.h5"))) for name in ("policies", "eval", "sac_init"))
    for name in ("policies", "eval", "sac_init"):
        shutil.rmtree(run / name)
    (run / "bcq" / "task_01.h5").unlink()
    code, output = report(run)
    assert code == 0, output
    missing = (run / "report" / "results.md").read_text().split("## Missing artifacts")[1].split("\n## ")[0]
    lines = [line for line in missing.splitlines() if line.startswith("- ")]
    assert len(lines) == 2 and lines[0].startswith("- `stages not run: distill, ") and "sac-init" in lines[0]
    assert "; mtrl run, or each stage's own command, makes them)" in lines[0]  # no backticks nested in the item
    assert lines[1] == "- `bcq/task_01.h5 (missing)`"
    assert f"run: {removed + 1} expected artifact(s) missing or unreadable" in missing
    assert "stages not run" in output  # the console warning names them too

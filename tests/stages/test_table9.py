"""scripts/table9.py and sac_curves.py: Table 9's readings of a collection SAC, on known episodes and the smoke run."""

import numpy as np
from smoke import load_script

table9, sac_curves = load_script("table9"), load_script("sac_curves")


def test_training_return_is_the_mean_of_complete_episodes_ending_in_the_last_tenth():
    # 100 transitions, horizon 10: episodes of 10 (rewards 1..9 each, returns 10 x k), then the budget cuts one
    rewards = np.repeat(np.arange(1.0, 11.0), 10)[:100]
    terminals, timeouts = np.zeros(100, bool), np.zeros(100, bool)
    timeouts[9::10] = True  # ten complete episodes; the last one ends at row 99, the only one in the last 10 rows
    assert table9.late_training_return(rewards, terminals, timeouts, horizon=10) == 100.0
    # an early termination in the last tenth counts; a budget-cut episode (not at the horizon) does not
    terminals[94], timeouts[99] = True, True
    assert table9.late_training_return(rewards, terminals, timeouts, horizon=10) == 50.0  # rows 90-94: 5 x 10
    timeouts[:], terminals[:] = False, False
    timeouts[[49, 97]] = True  # rows 50-97 are one episode of 48 steps, neither terminal nor at the horizon
    assert np.isnan(table9.late_training_return(rewards, terminals, timeouts, horizon=10))


def test_family_section_has_a_row_per_task_and_the_mean(smoke_run):
    config, run_dir = smoke_run
    text = table9.family_section(run_dir)
    n_train = config.env.n_train
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == n_train
    assert f"mean ± std over {n_train} tasks" in text
    assert "Table 9" not in text.split("\n", 1)[1]  # PointGoalArc is not one of Table 9's families
    assert "collect" in text.splitlines()[-1] and "train-bcq" in text.splitlines()[-1]
    final = [float(row.split("|")[2]) for row in rows]
    from mtrl.artifacts import open_artifact
    from mtrl.pipeline import layout
    for task, value in enumerate(final):
        with open_artifact(layout.sac(run_dir, task)) as art:
            assert value == round(float(art.attrs["final_return"]), 1)


def test_sac_curves_name_each_task_by_its_target_and_seed(smoke_run, tmp_path):
    config, run_dir = smoke_run
    ours = sac_curves.ours(run_dir)
    from mtrl.pipeline.run_data import read_distribution
    targets = read_distribution(run_dir / "tasks.h5").train_tasks[:, 0]
    assert sorted(ours) == sorted(("ours", round(float(x), 3), config.seed) for x in targets)
    record = tmp_path / "ref.json"
    record.write_text('{"task": [1.41440633], "seed": 2, "curve": [[5000, -1415.0], [10000, -900.5]]}')
    assert sac_curves.reference(record) == {("reference", 1.414, 2): {5000: -1415.0, 10000: -900.5}}


def test_bcq_curves_are_each_tasks_bcq_evaluations_at_its_updates(smoke_run):
    config, run_dir = smoke_run
    from mtrl.artifacts import open_artifact
    from mtrl.pipeline import layout
    from mtrl.pipeline.run_data import read_distribution
    targets = read_distribution(run_dir / "tasks.h5").train_tasks[:, 0]
    curves = sac_curves.ours(run_dir, "bcq")
    assert sorted(curves) == sorted(("ours", round(float(x), 3), config.seed) for x in targets)
    for task, target in enumerate(targets):
        with open_artifact(layout.bcq(run_dir, task)) as art:
            stored = art.tree("curve")
        expected = dict(zip(stored["steps"].astype(int).tolist(), stored["return_mean"].tolist(), strict=True))
        assert curves[("ours", round(float(target), 3), config.seed)] == expected
        assert stored["steps"].max() == config.bcq.steps  # updates, not the SAC's interactions
    assert sac_curves.ours(run_dir, "bcq") != sac_curves.ours(run_dir)


def test_sac_curves_best_is_over_the_tables_span_only(tmp_path, monkeypatch, capsys):
    """A 150K run's later, better evaluations must not enter a table that stops at 60K."""
    record = tmp_path / "ref.json"
    record.write_text('{"task": [0.5], "seed": 0, "curve": [[5000, -900.0], [10000, -400.0], [15000, -100.0]]}')
    monkeypatch.setattr("sys.argv", ["sac_curves.py", "--reference", str(record), "--at", "5000", "10000"])
    sac_curves.main()
    assert capsys.readouterr().out.splitlines()[-1] == "| 0.5 | 0 | reference | -900 | -400 | -400 |"

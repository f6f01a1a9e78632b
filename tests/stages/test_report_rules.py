"""The report's rules, without a run: which training point is "best", which methods each figure shows, what the
profile of a run is, and how numbers are rounded."""

from pathlib import Path

import numpy as np
import pytest

from mtrl.report.aggregate import Series, Stat, Summary, best_on_train, selected_on_test, summarise, trailing_test_means
from mtrl.report.collect import RunResults
from mtrl.report.figures import band_text, figure_heading
from mtrl.report.markdown import _num, _pm

# Training-task scores peak at epoch 20, test-task scores at epoch 30: a rule that looked at the test tasks
# would pick epoch 30 and report -5.0.
CURVE = {"epochs": np.array([10.0, 20.0, 30.0, 40.0]),
         "train_score": np.array([-9.0, -4.0, -6.0, -7.0]),
         "test_score": np.array([-12.0, -10.0, -5.0, -11.0])}


def test_best_point_is_selected_on_training_scores_not_test_scores():
    assert best_on_train(CURVE) == 1
    assert best_on_train(CURVE) != int(np.argmax(CURVE["test_score"]))
    tied = CURVE | {"train_score": np.array([-4.0, -6.0, -4.0, -7.0])}
    assert best_on_train(tied) == 0  # the first of equals


def test_the_reported_best_point_is_the_one_selected_on_training_tasks():
    other = {k: v.copy() for k, v in CURVE.items()}
    other["train_score"] = np.array([-3.0, -8.0, -8.0, -8.0])  # this seed's best training point is epoch 10
    runs = [RunResults(Path("s0"), None, policy_curves={"mbml": CURVE}),
            RunResults(Path("s1"), None, policy_curves={"mbml": other})]
    scores = summarise(runs).method_scores["mbml"]
    assert scores["best-on-train epoch"].per_run == {"s0": 20.0, "s1": 10.0}  # chosen per seed
    assert scores["best-on-train test"].per_run == {"s0": -10.0, "s1": -12.0}
    assert scores["best-on-train train"].per_run == {"s0": -4.0, "s1": -3.0}
    assert scores["last test"].per_run == {"s0": -11.0, "s1": -11.0}
    assert not any("best test" in key for key in scores)  # no score is picked on the test tasks


# Evaluations every 10 epochs, so a 30-epoch window holds 3 of them; the complete windows end at epochs 30 to 60, with
# means -7, -16/3, -6 and -10. The best single test point (epoch 20) and the best training point (epoch 10) are
# elsewhere: each rule gives its own answer.
PAPER_CURVE = {"epochs": np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0]),
               "train_score": np.array([0.0, -9.0, -9.0, -9.0, -9.0, -9.0]),
               "test_score": np.array([-12.0, -1.0, -8.0, -7.0, -3.0, -20.0])}


def test_papers_rule_is_the_max_of_a_30_epoch_trailing_mean_of_the_test_curve():
    means = trailing_test_means(PAPER_CURVE)
    assert np.isnan(means[:2]).all()  # epochs 10 and 20: no complete 30-epoch window yet
    assert means[2:] == pytest.approx([-7.0, -16 / 3, -6.0, -10.0])
    assert selected_on_test(PAPER_CURVE) == 3  # epoch 40
    assert best_on_train(PAPER_CURVE) == 0 and int(np.argmax(PAPER_CURVE["test_score"])) == 1
    # a 20-epoch window holds 2 evaluations: means -6.5, -4.5, -7.5, -5, -11.5 from epoch 20 on
    assert selected_on_test(PAPER_CURVE, window=20) == 2
    short = {"epochs": np.array([2.0, 4.0]), "train_score": np.zeros(2), "test_score": np.array([-3.0, -5.0])}
    assert trailing_test_means(short) == pytest.approx([np.nan, -4.0], nan_ok=True)  # shorter than the window


def test_papers_rule_looks_at_the_first_600_epochs_only():
    """Evaluations every 300 epochs: each window holds one. The best after epoch 600 is not the papers' number."""
    long = {"epochs": np.array([300.0, 600.0, 900.0]), "train_score": np.zeros(3),
            "test_score": np.array([-5.0, -4.0, -1.0])}
    assert selected_on_test(long) == 1
    assert selected_on_test(long, last_epoch=900) == 2
    assert selected_on_test({**long, "epochs": long["epochs"] + 400}) == 0  # none by epoch 600: the first one


def test_the_report_gives_the_papers_rule_per_run_beside_the_other_two():
    runs = [RunResults(Path("s0"), None, policy_curves={"mbml": PAPER_CURVE}),
            RunResults(Path("s1"), None, policy_curves={"mbml": CURVE})]
    scores = summarise(runs).method_scores["mbml"]
    assert scores["test-selected epoch"].per_run == {"s0": 40.0, "s1": 40.0}
    assert scores["test-selected test"].per_run == pytest.approx({"s0": -16 / 3, "s1": (-10 - 5 - 11) / 3})
    assert scores["best-on-train epoch"].per_run == {"s0": 10.0, "s1": 20.0}


def test_fig4_shows_mbml_and_baselines_and_fig6_the_ablations():
    curve = Series(np.array([1.0]), {"s0": np.array([0.0])})
    names = ["mbml", "no-triplet", "no-relabel", "neither", "mbml-gt", "neither-gt", "batch-pearl", "contextual-bcq"]
    summary = Summary(["s0"], test_curves=dict.fromkeys(names, curve))
    assert list(summary.methods) == ["mbml", "mbml-gt", "batch-pearl", "contextual-bcq"]
    assert list(summary.ablations) == ["mbml", "no-triplet", "no-relabel", "neither", "mbml-gt", "neither-gt"]


def test_figures_name_family_profile_and_bands():
    assert figure_heading(Summary(["a"], family="PointGoalArc", profile="cpu")) == "PointGoalArc, profile cpu"
    smoke = figure_heading(Summary(["a"], family="PointGoalArc", profile="smoke", smoke=True))
    assert smoke.startswith("PointGoalArc, profile smoke") and "NOT RESULTS" in smoke
    three = Series(np.array([1.0]), {s: np.array([0.0]) for s in ("a", "b", "c")})
    assert band_text({"mbml": three}) == "line: mean, band: ± std over n=3 seeds"
    one = Series(np.array([1.0]), {"a": np.array([0.0])})
    assert band_text({"mbml": one}) == "line: one seed, no band"


def test_the_profile_is_recorded_and_kept_by_later_commands(tmp_path):
    """--profile is saved as config key `profile`; a later command on the run directory alone keeps it."""
    from mtrl.config import load_config, load_run_config, save_config

    config = load_config(Path("configs/point_goal_arc.yaml"), "cpu")
    assert config.profile == "cpu"
    save_config(config, tmp_path)
    later = load_run_config(tmp_path, ["distill.epochs=3"])
    save_config(later, tmp_path)
    assert load_run_config(tmp_path).profile == "cpu"
    assert load_config(Path("configs/point_goal_arc.yaml")).profile is None


def test_numbers_are_rounded_to_what_they_carry():
    assert [_num(x) for x in (-7.7312, -20.04, -11.46, 0.012345, 1234.5, 300.0)] == \
        ["-7.73", "-20.0", "-11.5", "0.0123", "1234", "300"]
    assert _pm(Stat({"a": -9.12, "b": -10.92, "c": -7.3})) == "-9.1 ± 1.5 (n=3)"  # std to 2 significant figures
    assert _pm(Stat({"a": -20.01, "b": -20.69})) == "-20.35 ± 0.34 (n=2)"
    assert _pm(Stat({"a": -7.7312})) == "-7.73 (n=1)"  # one seed: no spread to show
    assert _pm(Stat({"a": 1.0, "b": 1.0})) == "1 ± 0 (n=2)"

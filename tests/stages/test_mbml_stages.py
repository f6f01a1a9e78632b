import gymnasium as gym
import numpy as np
import pytest
from smoke import smoke_config

from mtrl.artifacts import open_artifact
from mtrl.pipeline.registry import get_stage
from mtrl.rl.evaluation import run_protocol, score


def test_every_variant_is_distilled_with_loss_and_evaluation_curves(smoke_run):
    config, run_dir = smoke_run
    for variant in ("mbml", "no-triplet", "no-relabel", "neither"):
        with open_artifact(run_dir / "policies" / f"{variant}.h5", "policy") as art:
            losses, curve = art.tree("losses"), art.tree("eval_curve")
            assert len(losses["total"]) == config.distill.epochs and np.isfinite(losses["total"]).all()
            assert list(curve["epochs"]) == [2, 4]
            assert art.attrs["method"] == variant and "variant" not in art.meta("algo_config")
            assert art.meta("params")["variant"] == variant
        has_triplet = variant in ("mbml", "no-relabel")
        assert (np.abs(losses["triplet"]).sum() > 0) == has_triplet, variant


def test_evaluation_covers_train_and_test_tasks(smoke_run):
    config, run_dir = smoke_run
    with open_artifact(run_dir / "eval" / "mbml.h5", "eval") as art:
        returns, summary = art.tree("returns"), art.meta("summary")
    assert returns["train_returns"].shape == (3, 1, config.evaluate.episodes)
    assert returns["test_returns"].shape == (2, 1, config.evaluate.episodes)
    assert summary["test_score"] == pytest.approx(returns["test_returns"][:, :, 2:].mean())
    with open_artifact(run_dir / "eval" / "bcq.h5", "eval") as art:
        assert art.tree("returns")["train_returns"].shape == (3, 1, config.evaluate.episodes)
        assert np.isnan(art.meta("summary")["test_score"])


class CountingEnv(gym.Env):
    """One-step episodes whose reward is the index of the episode (reset seeds count up from 0)."""

    observation_space = gym.spaces.Box(-1, 1, (1,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def reset(self, *, seed=None, options=None):
        self.episode = seed
        return np.zeros(1), {}

    def step(self, action):
        return np.zeros(1), float(self.episode), False, True, {}


class RecordingPolicy:
    """Belief = number of context rows seen; records the beliefs it acted with."""

    def __init__(self):
        self.beliefs, self.explored = [], []

    def infer(self, context, explore=False):
        self.explored.append(explore)
        return np.array([0.0 if context is None else len(context)])

    def act(self, obs, beliefs):
        self.beliefs.append(beliefs.copy())
        return np.zeros((len(obs), 1))


def test_protocol_uses_the_prior_first_then_all_collected_context_and_skips_two_episodes():
    policy = RecordingPolicy()
    returns, beliefs = run_protocol([CountingEnv(), CountingEnv()], policy, episodes=5, seed=0)
    assert returns.tolist() == [[0, 1, 2, 3, 4]] * 2
    assert [b[0, 0] for b in policy.beliefs] == [0, 1, 2, 3, 4]  # prior, then every transition so far
    assert beliefs.shape == (2, 5, 1) and beliefs[:, :, 0].tolist() == [[0, 1, 2, 3, 4]] * 2  # what each acted with
    assert score(returns, 2).tolist() == [3.0, 3.0]  # mean of episodes 3-5
    with pytest.raises(ValueError, match="leave none"):
        score(returns, 5)


def test_protocol_with_a_context_window_infers_from_the_latest_rows_only():
    policy = RecordingPolicy()
    run_protocol([CountingEnv(), CountingEnv()], policy, episodes=5, seed=0, window=2)
    assert [b[0, 0] for b in policy.beliefs] == [0, 1, 2, 2, 2]  # one row per episode, at most the last 2


def test_a_context_window_enters_the_fingerprints_only_when_set():
    """0 (every row, Alg. 5) is how artifacts made before the key existed were evaluated: they stay up to date."""
    for stage in ("distill", "evaluate"):
        assert "context_window" not in get_stage(stage).stage_config(smoke_config())["evaluate"]
        assert get_stage(stage).stage_config(smoke_config("evaluate.context_window=64"))["evaluate"][
            "context_window"] == 64


def test_protocol_marks_the_unscored_episodes_as_exploring():
    policy = RecordingPolicy()
    run_protocol([CountingEnv(), CountingEnv()], policy, episodes=5, seed=0, unscored=2)
    assert policy.explored == [True] * 4 + [False] * 6  # two tasks per episode: episodes 1-2 explore


def test_sac_init_writes_curves_for_the_initialised_run_and_both_baselines(smoke_run):
    config, run_dir = smoke_run
    for run in ("mbml", "random", "variation"):
        with open_artifact(run_dir / "sac_init" / run / "task_01.h5", "sac_init") as art:
            curves = art.tree("curves")
            assert list(curves["steps"]) == [100, 200, 300]
            if run == "mbml":
                init = art.tree("initialisation")
                assert init["z"].shape == (config.distill.algo.z_dim,)
                assert init["imitation_losses"][-10:].mean() < init["imitation_losses"][:10].mean()
            else:
                assert "initialisation" not in art


def test_repeated_evaluation_averages_independent_protocol_runs():
    from types import SimpleNamespace

    from mtrl.rl.evaluation import evaluate_tasks

    cfg = SimpleNamespace(episodes=3, skip_episodes=2, context_window=0)
    returns, scores, beliefs = evaluate_tasks([CountingEnv(), CountingEnv()], RecordingPolicy(), cfg, seed=0,
                                              repeats=4)
    assert returns.shape == (2, 4, 3) and beliefs.shape == (2, 4, 3, 1)
    assert returns[0, :, 2].tolist() == [2, 1002, 2002, 3002]  # repeat r resets with seeds shifted by 1000·r
    assert scores.tolist() == [1502.0, 1502.0]


def test_a_split_without_tasks_has_empty_returns_and_a_nan_score():
    from types import SimpleNamespace

    from mtrl.rl.evaluation import evaluate_tasks, summary_of

    cfg = SimpleNamespace(episodes=3, skip_episodes=2, context_window=0)
    returns, scores, _ = evaluate_tasks([], RecordingPolicy(), cfg, seed=0, repeats=2)
    assert returns.shape == (0, 2, 3) and scores.shape == (0,)
    train_returns, train_scores, _ = evaluate_tasks([CountingEnv()], RecordingPolicy(), cfg, seed=0, repeats=2)
    summary = summary_of({"train": train_returns, "test": returns}, {"train": train_scores, "test": scores})
    assert summary["train_score"] == pytest.approx(train_scores.mean()) and np.isnan(summary["test_score"])
    assert summary["train_returns"] is train_returns and summary["test_scores"] is scores


def test_evaluation_seed_is_derived_from_the_run_seed():
    from types import SimpleNamespace

    from mtrl.rl.evaluation import evaluation_seed
    from mtrl.seeding import derive_seed

    assert evaluation_seed(SimpleNamespace(seed=7)) == derive_seed(7, "evaluation-episodes")  # published seeds
    assert evaluation_seed(SimpleNamespace(seed=7)) != evaluation_seed(SimpleNamespace(seed=8))


def test_run_evaluation_runs_the_protocol_on_the_train_and_the_test_tasks():
    from types import SimpleNamespace

    from mtrl.rl.evaluation import run_evaluation

    made = []

    def make_env(task):
        made.append(task)
        return CountingEnv()

    dist = SimpleNamespace(train_tasks=["a", "b"], test_tasks=["c"], make_env=make_env)
    cfg = SimpleNamespace(episodes=3, skip_episodes=2, context_window=0)
    result = run_evaluation(dist, RecordingPolicy(), cfg, seed=10)
    assert made == ["a", "b", "c"]
    assert result["train_returns"].shape == (2, 1, 3) and result["test_returns"].shape == (1, 1, 3)  # 1 repeat
    assert result["train_returns"][0, 0].tolist() == [10, 11, 12]  # episode e resets with seed + e
    assert result["train_score"] == result["test_score"] == 12.0
    assert run_evaluation(dist, RecordingPolicy(), cfg, seed=10, repeats=2)["test_returns"].shape == (1, 2, 3)

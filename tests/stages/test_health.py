"""Task-inference health (`mtrl.rl.health`): known answers for an encoder that names the task and one that is
blind to it, and the health recorded by distill/evaluate and shown by `mtrl report`."""

import math

import numpy as np
import pytest
from click.testing import CliRunner

from mtrl.artifacts import open_artifact
from mtrl.cli import main
from mtrl.rl.health import failures, task_inference_health

K, Z = 4, 3


def task_datasets(n=50):
    """K tasks whose every row carries its task index in the reward column (the context's last column)."""
    rng = np.random.default_rng(0)
    return [{"observations": rng.normal(size=(n, 2)), "actions": rng.normal(size=(n, 1)),
             "next_observations": rng.normal(size=(n, 2)), "rewards": np.full(n, float(task))} for task in range(K)]


def naming_posterior(rows):
    """Task t's posterior: mean 4·e_t (one-hot), variance 0.01."""
    mean = np.zeros(Z + 1)
    mean[int(rows[0, -1])] = 4.0
    return mean[:Z] if int(rows[0, -1]) < Z else np.full(Z, -4.0), np.full(Z, 0.01)


def blind_posterior(rows):
    return np.zeros(Z), np.ones(Z)


def health_of(posterior, belief="sample", online=None):
    return task_inference_health(posterior, task_datasets(), {"training": 8, "episode 3": 40}, 5, belief,
                                 np.random.default_rng(1), online)


def test_an_encoder_that_names_the_task_is_healthy():
    health = health_of(naming_posterior)
    np.testing.assert_array_equal(health["sizes"], [8, 40])
    # KL of N(m, 0.01 I) to N(0, I): 0.5 (3·0.01 + |m|² − 3 − 3 ln 0.01), |m|² = 16 (tasks 0-2) or 48 (task 3)
    kls = [0.5 * (0.03 + m2 - 3 - 3 * math.log(0.01)) for m2 in (16, 16, 16, 48)]
    assert health["kl"] == pytest.approx([np.mean(kls)] * 2, rel=1e-9)
    assert (health["identification"] == 1.0).all() and (health["separability"] > 20).all()
    assert failures(health, K, scored_from=2) == []


def test_a_blind_encoder_fails_every_threshold():
    health = health_of(blind_posterior)
    assert health["kl"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert health["separability"] == pytest.approx([0.0, 0.0])
    assert health["identification"] == pytest.approx([1 / K] * 2)  # every belief nearest the first centroid
    lines = failures(health, K, scored_from=2)
    assert lines == [f"kl below {math.log(K):.2f}: 0.000 (8 rows), 0.000 (40 rows)",
                     "separability below 2.00: 0.000 (8 rows), 0.000 (40 rows)",
                     "identification below 0.80: 0.250 (8 rows), 0.250 (40 rows)"]


def test_online_identification_per_episode_and_its_threshold_on_scored_episodes():
    centroids = health_of(naming_posterior, belief="mean")["centroids"]
    online = np.repeat(centroids[:, None, None], 3, axis=2).repeat(2, axis=1)  # [K, repeats 2, episodes 3]
    online[:, :, 0] = 0.0  # episode 1 acts on the prior: nearest the first centroid, only task 0 right
    health = health_of(naming_posterior, belief="mean", online=online)
    assert health["identification_online"] == pytest.approx([1 / K, 1.0, 1.0])
    assert failures(health, K, scored_from=1) == []
    assert failures(health, K, scored_from=0) == ["online identification below 0.80: 0.750 (scored episodes)"]


def test_health_is_recorded_during_training_and_evaluation_and_reported(smoke_run, tmp_path):
    config, run_dir = smoke_run
    context_methods = ("mbml", "no-triplet", "no-relabel", "neither", "contextual-bcq", "batch-pearl")
    for method in context_methods:
        with open_artifact(run_dir / "policies" / f"{method}.h5") as art:
            curve, evals = art.tree("health_curve"), art.tree("eval_curve")
        np.testing.assert_array_equal(curve["epochs"], evals["epochs"])
        assert ((curve["identification"] >= 0) & (curve["identification"] <= 1)).all()
        with open_artifact(run_dir / "eval" / f"{method}.h5") as art:
            health = art.tree("health")
            assert art.attrs["belief"] == config.evaluate.belief
        assert len(health["centroids"]) == config.env.n_train
        assert len(health["identification_online"]) == config.evaluate.episodes
    result = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report" / "results.md").read_text()
    assert "## Task-inference health" in text
    section = text.split("## Task-inference health")[1].split("\n## ")[0]
    for method in context_methods:
        assert f"| {method} |" in section
    assert "Failed thresholds:" in section or "Every threshold passed." in section

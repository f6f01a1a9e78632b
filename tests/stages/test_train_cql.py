"""Stage train-cql (seed 004's family): one artifact per (kind, method), HCSAC's active data, Table 1 in the report."""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from smoke import run_stages, smoke_config

from mtrl.algos.cql import CSAC
from mtrl.artifacts import open_artifact
from mtrl.errors import ConfigError, StageError
from mtrl.report import write_report
from mtrl.stages.train_cql import active_union, admitted_rewards, q_over

METHODS = ("bc", "csac", "mt-bc", "mtcsac", "hcsac")
TINY = ("collect.steps=200", "collect.eval_every=200", "collect.checkpoint_every=200", "data.kinds=[medium-replay]",
        f"cql.methods=[{','.join(METHODS)}]", "cql.epochs=2", "cql.steps_per_epoch=3", "cql.eval_every=1",
        "cql.eval_episodes=1", "cql.relabel_every=1", "cql.final_evaluations=2", "cql.checkpoint_every=1",
        "cql.csac={sac: {actor_hidden: [16], critic_hidden: [16], batch_size: 32}, embedding_dim: 3, cql_samples: 4}",
        "cql.bc={hidden: [16], batch_size: 32, embedding_dim: 3}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = smoke_config(*TINY)
    run_dir = tmp_path_factory.mktemp("cql")
    run_stages(config, run_dir, ["tasks", "collect", "datasets", "train-cql"])
    return config, run_dir


@pytest.mark.parametrize("method", METHODS)
def test_one_artifact_per_kind_and_method(run, method):
    config, run_dir = run
    k = config.env.n_train
    with open_artifact(run_dir / "cql" / "medium-replay" / f"{method}.h5", "cql") as art:
        assert art.attrs["method"] == method and art.attrs["dataset_kind"] == "medium-replay"
        curve = art.tree("eval_curve")
        assert list(curve["epochs"]) == [1, 2] and sorted(curve) == ["epochs", *(f"task_{t:02d}" for t in range(k))]
        final = art.array("final_returns")  # the mean of the last two evaluations (cql.final_evaluations)
        np.testing.assert_allclose(final, [np.mean(curve[f"task_{t:02d}"]) for t in range(k)])
        assert len(art.tree("losses")["epoch"]) == 2
        if method == "hcsac":
            fractions = art.array("relabel_fractions")
            assert fractions.shape == (1, k, k) and list(art.array("relabel_epochs")) == [1]  # not after the last
            assert np.all(np.diag(fractions[0]) == 1) and np.all((fractions >= 0) & (fractions <= 1))
        else:
            assert "relabel_fractions" not in art


def test_interrupted_hcsac_resumes_to_the_identical_agent(run, tmp_path, monkeypatch):
    """Killed in epoch 2, after epoch 1's checkpoint and relabelling: the resumed run rebuilds the same active data
    from the checkpointed masks and ends with the uninterrupted run's weights and curves."""
    config, run_dir = run
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    for name in ("config.yaml", "tasks.h5"):
        shutil.copy(run_dir / name, interrupted / name)
    shutil.copytree(run_dir / "datasets", interrupted / "datasets")
    update, calls = CSAC.update, []

    def failing_update(self, batch, batch2=None):
        calls.append(1)
        if len(calls) > 4:  # epoch 2's second update (3 per epoch)
            raise RuntimeError("killed")
        return update(self, batch, batch2)

    monkeypatch.setattr(CSAC, "update", failing_update)
    hcsac = smoke_config(*TINY, "cql.methods=[hcsac]")
    with pytest.raises(StageError, match="killed"):
        run_stages(hcsac, interrupted, ["train-cql"])
    monkeypatch.undo()
    run_stages(hcsac, interrupted, ["train-cql"])
    assert "resuming at epoch 1" in (interrupted / "logs" / "mtrl.log").read_text()
    path = "cql/medium-replay/hcsac.h5"
    with open_artifact(interrupted / path, "cql") as resumed, open_artifact(run_dir / path, "cql") as whole:
        assert resumed.fingerprint == whole.fingerprint
        for key in ("final_returns", "relabel_fractions"):
            np.testing.assert_array_equal(resumed.array(key), whole.array(key))
        np.testing.assert_array_equal(resumed.tree("weights")["actor"]["net.0.table"],
                                      whole.tree("weights")["actor"]["net.0.table"])


def test_active_data_adds_the_admitted_rows_with_the_new_task_and_reward():
    def data(value, rows):
        return {"observations": np.full((rows, 2), value, np.float32), "actions": np.zeros((rows, 1), np.float32),
                "rewards": np.full(rows, value, np.float32), "next_observations": np.zeros((rows, 2), np.float32),
                "terminals": np.zeros(rows, bool), "timeouts": np.zeros(rows, bool)}

    datasets = [data(0.0, 3), data(1.0, 4)]
    masks = [[None, np.array([True, False, True, False])], [np.zeros(3, bool), None]]
    union = active_union(datasets, masks, [[None, np.array([7.0, 8.0])], [None, None]])
    assert len(union["rewards"]) == 3 + 2 + 4  # D_0, the two admitted rows of D_1, D_1; nothing of D_0 joins task 1
    np.testing.assert_array_equal(union["observations"][:, -1], [0, 0, 0, 0, 0, 1, 1, 1, 1])  # the id column
    np.testing.assert_array_equal(union["observations"][3:5, 0], [1, 1])  # rows of D_1 ...
    np.testing.assert_array_equal(union["rewards"][3:5], [7, 8])  # ... with task 0's rewards
    np.testing.assert_array_equal(union["next_observations"][:, -1], union["observations"][:, -1])
    plain = active_union(datasets, None, None)  # MTCSAC: the union of the originals
    assert len(plain["rewards"]) == 7 and plain["rewards"].tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_active_data_of_task_i_holds_the_rows_of_d_j_admitted_to_task_i_with_task_i_s_rewards():
    """Both pairs admit rows, different ones: task 0 rows 0 and 2 of D_1 (rewards 7, 8), task 1 rows 1, 2, 3 of D_0
    (rewards 4, 5, 6). Observations encode (dataset, row) as 10·dataset + row.

    Catches a transposed pair: planting `masks[j][i]` for `masks[i][j]`, or `relabelled_rewards[j][i]`, in
    `active_union` fails here."""
    def data(task):
        rows = np.arange(4)
        return {"observations": np.stack([10.0 * task + rows, rows], 1).astype(np.float32),
                "actions": np.zeros((4, 1), np.float32), "rewards": np.full(4, -1.0, np.float32),
                "next_observations": np.zeros((4, 2), np.float32), "terminals": np.zeros(4, bool),
                "timeouts": np.zeros(4, bool)}

    masks = [[None, np.array([True, False, True, False])], [np.array([False, True, True, True]), None]]
    rewards = [[None, np.array([7.0, 8.0])], [np.array([4.0, 5.0, 6.0]), None]]
    union = active_union([data(0), data(1)], masks, rewards)
    np.testing.assert_array_equal(union["observations"][:, 0], [0, 1, 2, 3, 10, 12, 10, 11, 12, 13, 1, 2, 3])
    np.testing.assert_array_equal(union["observations"][:, -1], [0] * 6 + [1] * 7)  # the task id column
    np.testing.assert_array_equal(union["rewards"], [-1] * 4 + [7, 8] + [-1] * 4 + [4, 5, 6])


def test_admitted_rows_of_d_j_get_task_i_s_true_rewards():
    """HCSAC's relabelled rewards: [i][j] is task i's reward function on the rows of D_j admitted to task i. The
    fake reward of task i on a row is 100·(i + 1) + its observation (10·dataset + row).

    Catches a transposed pair: planting `masks[j][i]`, or `dist.train_tasks[j]`, in `admitted_rewards` fails here."""
    def data(task):
        return {"observations": (10.0 * task + np.arange(4))[:, None]}

    def reward(task, d, rows):
        return task + d["observations"][rows, 0]

    dist = SimpleNamespace(train_tasks=[100.0, 200.0], dataset_reward=reward)
    masks = [[None, np.array([True, False, True, False])], [np.array([False, True, True, True]), None]]
    rewards = admitted_rewards(dist, [data(0), data(1)], masks)
    assert rewards[0][0] is None and rewards[1][1] is None
    np.testing.assert_array_equal(rewards[0][1], [110, 112])
    np.testing.assert_array_equal(rewards[1][0], [201, 202, 203])


def test_hcsac_scores_the_rows_of_d_j_with_task_i_s_q(monkeypatch):
    """Alg. 1's Q_i over D_j: the agent sees D_j's rows with id i. The fake agent's Q is 100·id + observation
    (10·dataset + row), over chunks of 3 rows.

    Catches a transposed pair: planting id j, or the rows of D_i, in `q_over` fails here."""
    monkeypatch.setattr("mtrl.stages.train_cql.Q_CHUNK", 3)

    class Agent:
        def q_min(self, x, actions):
            assert x.shape[:2] == actions.shape[:2]
            return 100 * x[..., -1] + x[..., 0]

    datasets = [{"observations": (10.0 * task + np.arange(5, dtype=np.float32))[:, None],
                 "actions": np.zeros((5, 1), np.float32)} for task in range(2)]
    np.testing.assert_array_equal(q_over(Agent(), datasets, 0, 1, "cpu"), 10 + np.arange(5))
    np.testing.assert_array_equal(q_over(Agent(), datasets, 1, 0, "cpu"), 100 + np.arange(5))


def test_report_renders_table_1(run, tmp_path):
    _, run_dir = run
    text = write_report([run_dir], tmp_path / "report").read_text()
    table = text[text.index("## The CQL family"):]
    assert "| dataset | task | bc | csac | mt-bc | mtcsac | hcsac |" in table
    assert "| medium-replay | average |" in table and "HCSAC on medium-replay" in table


def test_unknown_method_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"cql.methods.*'cql-x'.*bc, csac, mt-bc, mtcsac, hcsac"):
        smoke_config("cql.methods=[cql-x]")
    with pytest.raises(ConfigError, match="hcsac relabels rewards only.*leave hcsac out"):
        smoke_config("env.family=WalkerParam", "cql.methods=[hcsac]")

"""A method added through the registry alone (one algorithm class, one config class, one entry, all in this
test) is trained by train-baseline, evaluated by `mtrl evaluate` and shown by `mtrl report`."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from smoke import run_stages, smoke_config

from mtrl import methods
from mtrl.artifacts import open_artifact
from mtrl.cli import main
from mtrl.nn import AgentState, adam, mlp, seeded_generator
from mtrl.rl.batches import baseline_sampler


@dataclass(frozen=True)
class TaskBlindBCConfig:
    batch_size: int = field(default=16, metadata={"min": 1, "help": "transitions per task and update"})
    context_size: int = field(default=4, metadata={"min": 1, "help": "context rows per task (unused)"})
    lr: float = field(default=1e-2, metadata={"min": 0.0, "help": "Adam step size"})


class TaskBlindBC(AgentState):
    """Behaviour cloning on all tasks' data, blind to the task: its belief is always the same 1-d zero."""

    NETWORKS = ("policy",)
    TRAINING_PARTS = ("optimizer",)

    def __init__(self, cfg, obs_dim, act_dim, max_action, device):
        self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, max_action
        self.device = torch.device(device)
        self.generator = seeded_generator(self.device)
        self.policy = mlp(obs_dim, (16,), act_dim).to(self.device)
        self.optimizer = adam(self.policy.parameters(), cfg.lr)

    def update(self, batch):
        prediction = self.max_action * torch.tanh(self.policy(batch["observations"]))
        loss = (prediction - batch["actions"]).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"total": loss.item()}

    def posterior(self, context):
        return np.zeros(1, np.float32), np.ones(1, np.float32)

    def sample_z(self, context, generator=None):
        return np.zeros(1, np.float32)

    @torch.no_grad()
    def act(self, obs, z, generator=None):
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return (self.max_action * torch.tanh(self.policy(obs))).cpu().numpy()


@pytest.fixture
def task_blind_bc():
    method = methods.register(methods.Method(
        "task-blind-bc", stage="train-baseline", config_class=TaskBlindBCConfig, algo=TaskBlindBC,
        batches=baseline_sampler, role="baseline", summary="behaviour cloning blind to the task (test)"))
    yield method
    methods.unregister(method.name)


def test_a_registered_method_runs_through_training_evaluation_and_report(task_blind_bc, tmp_path):
    config = smoke_config("collect.steps=200", "collect.eval_every=200", "collect.checkpoint_every=200",
                          "baselines.algos=[task-blind-bc]", "baselines.task-blind-bc.batch_size=8")
    assert config.baselines.sections["task-blind-bc"] == TaskBlindBCConfig(batch_size=8)
    run_stages(config, tmp_path, ["tasks", "collect", "train-baseline"])
    with open_artifact(tmp_path / "policies" / "task-blind-bc.h5", "policy") as art:
        assert art.attrs["method"] == "task-blind-bc"
        losses = art.tree("losses")["total"]
    assert len(losses) == config.baselines.epochs and np.isfinite(losses).all()

    result = CliRunner().invoke(main, ["evaluate", "--run-dir", str(tmp_path), "--policy", "task-blind-bc"])
    assert result.exit_code == 0, result.output
    with open_artifact(tmp_path / "eval" / "task-blind-bc.h5", "eval") as art:
        assert np.isfinite(art.meta("summary")["test_score"])

    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report" / "results.md").read_text()
    assert "| task-blind-bc |" in text


def test_a_config_section_of_an_unregistered_method_is_an_unknown_key():
    from mtrl.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown config key 'baselines.task-blind-bc'"):
        smoke_config("baselines.task-blind-bc.batch_size=8")

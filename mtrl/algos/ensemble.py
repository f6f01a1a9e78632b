"""Vectorised regression ensembles: MBML's reward ensembles and next-state ensembles (seed 000, App. D).

`EnsembleRegressor` fits `members` MLPs of one shape to the same data (Alg. 2) as one `mtrl.nn.EnsembleMLP`:
weights [members, in, out], one batched matmul per layer for all members (≈5× a loop over modules on CPU),
each member drawn from its own initialisation. Their disagreement, the standard deviation of the members'
predictions, is the epistemic uncertainty that Alg. 3 thresholds (`relabel_with_ensemble`).

Task axis: one `EnsembleRegressor` holds the ensembles of `tasks` training tasks (`mtrl.nn.TaskBatchedState`),
tasks × members members in one `EnsembleMLP` (task t's members are the t-th consecutive block), so a group of
tasks trains with one batched matmul per layer (fewer, larger kernels: what a GPU needs; on a CPU it is no
faster than one model per task, `benchmarks/bench_ensemble.py`), and K per-task ensembles stack into one model
(`stack_policy_states`). Everything else stays per task, so task t ends where a single-task ensemble with the
same seed would: its initialisation, holdout split and mini-batch indices (from its own generator, drawn as a
single-task fit draws them), its data, its standardisation statistics, its losses (each member's mean, summed
over members and tasks: no gradient crosses tasks) and its metrics. Forward and backward passes match a
single-task model bit for bit; fused Adam rounds a task's block that does not start on a SIMD-vector boundary
differently, so weights agree to float rounding (~1e-7), not bitwise. States store the member axis after the task
axis ([tasks, members, ...]) so that `task_states`/`task_policy_states` split them per task.

Choices (the paper leaves them open):
- Every member sees the same mini-batch each step: the reference code's members "differ only by
  initialisation", so the spread measures disagreement that the data leave open, not resampling noise; one
  shared batch also means one gather for all members.
- Inputs and targets are standardised with the training split's mean and std (buffers of the model, saved with
  the weights); the loss is each member's MSE in standardised units, summed over members so every member gets
  its own unscaled gradient. Predictions are returned in the original units.
- `predict_delta` (next-state ensembles): the members predict s' − s, with s the first `out_dim` input columns
  (inputs are [s, a]); every prediction is returned as s' = s + predicted difference.
- std is the population std over members (ddof = 0, as `numpy.std`). For vector outputs a transition is
  confident when the std of *every* output dimension is below the threshold (max over dimensions), in the
  original units.
- `fit` holds out a random `holdout_fraction` of the data for the held-out MSE (the paper reports none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from mtrl.nn import EnsembleMLP, TaskBatchedState, task_adam, task_generators

MIN_STD = 1e-6  # floor of the standardisation scale, for constant input or target columns
INDEX_BLOCK = 1024  # `fit` draws the mini-batch indices of this many steps at once (same stream as step by step)


@dataclass(frozen=True)
class EnsembleConfig:
    """Hyper-parameters of a regression ensemble; defaults are MBML's reward ensemble (Table 3)."""

    members: int = field(default=20, metadata={"min": 2, "help": "ensemble size (the std needs at least 2)"})
    hidden: tuple[int, ...] = field(
        default=(128,), metadata={"help": "hidden widths of each member (next-state ensembles: 6 × 256)"}
    )
    lr: float = field(default=3e-4, metadata={"min": 0.0, "max": 1.0, "help": "Adam step size"})
    batch_size: int = field(default=128, metadata={"min": 1, "help": "transitions per mini-batch"})
    steps: int = field(default=20_000, metadata={"min": 0, "help": "gradient steps of `fit`"})
    holdout_fraction: float = field(
        default=0.1, metadata={"min": 0.0, "max": 0.5, "help": "share of the data held out for the MSE"}
    )
    predict_delta: bool = field(
        default=False, metadata={"help": "predict target − state (next-state ensembles); inputs start with s"}
    )


class StandardizedEnsemble(nn.Module):
    """`tasks` ensembles of `members` MLPs (one `EnsembleMLP` of tasks × members members, task t's members the
    t-th block, initialised from generators[t]) between per-task input and target standardisation, whose
    statistics are buffers [tasks, dim]."""

    def __init__(self, tasks: int, members: int, in_dim: int, hidden: Sequence[int], out_dim: int,
                 predict_delta: bool, generators: Sequence[torch.Generator] = ()):
        super().__init__()
        self.net = EnsembleMLP(tasks * members, in_dim, hidden, out_dim, generators)
        self.tasks, self.members = tasks, members
        self.in_dim, self.out_dim, self.predict_delta = in_dim, out_dim, predict_delta
        self.register_buffer("input_mean", torch.zeros(tasks, in_dim))
        self.register_buffer("input_std", torch.ones(tasks, in_dim))
        self.register_buffer("target_mean", torch.zeros(tasks, out_dim))
        self.register_buffer("target_std", torch.ones(tasks, out_dim))

    def _raw_targets(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """What the members regress on before standardisation: the target, or target − s."""
        return targets - inputs[..., : self.out_dim] if self.predict_delta else targets

    @torch.no_grad()
    def set_statistics(self, task: int, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Task `task`'s standardisation from its (training) data, inputs [N, in_dim], targets [N, out_dim]."""
        raw = self._raw_targets(inputs, targets)
        self.input_mean[task].copy_(inputs.mean(0))
        self.input_std[task].copy_(inputs.std(0).clamp_min(MIN_STD))
        self.target_mean[task].copy_(raw.mean(0))
        self.target_std[task].copy_(raw.std(0).clamp_min(MIN_STD))

    def _per_task(self, inputs: torch.Tensor) -> torch.Tensor:
        """[N, in] (the same rows for every task) or [tasks, N, in] → [tasks, N, in]."""
        if inputs.dim() == 2:
            return inputs.expand(self.tasks, *inputs.shape)
        if inputs.dim() != 3 or inputs.shape[0] != self.tasks:
            raise ValueError(f"expected inputs [N, {self.in_dim}] or [{self.tasks}, N, {self.in_dim}], "
                             f"got {tuple(inputs.shape)}")
        return inputs

    def _members(self, standardized: torch.Tensor) -> torch.Tensor:
        """Every member on its task's standardised inputs [tasks, N, in] → [tasks, members, N, out_dim]."""
        tasks, n, in_dim = standardized.shape
        x = standardized.unsqueeze(1).expand(tasks, self.members, n, in_dim).reshape(-1, n, in_dim)
        return self.net(x).view(tasks, self.members, n, self.out_dim)

    def standardized_error(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each member's squared error in standardised units on its task's rows: inputs [tasks, N, in], targets
        [tasks, N, out] → [tasks, members, N, out_dim]."""
        target = (self._raw_targets(inputs, targets) - self.target_mean[:, None]) / self.target_std[:, None]
        standardized = (inputs - self.input_mean[:, None]) / self.input_std[:, None]
        return (self._members(standardized) - target.unsqueeze(1)).pow(2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every member's prediction in the original units, [tasks, members, N, out_dim]; inputs [N, in] (each
        task's ensemble on the same rows) or [tasks, N, in]."""
        inputs = self._per_task(inputs)
        standardized = (inputs - self.input_mean[:, None]) / self.input_std[:, None]
        out = self._members(standardized) * self.target_std[:, None, None] + self.target_mean[:, None, None]
        return out + inputs[:, None, :, : self.out_dim] if self.predict_delta else out


class EnsembleRegressor(TaskBatchedState):
    """`members` MLP regressors per task trained together on the task's data, predicting mean and spread
    (Alg. 2, 3); `tasks` such ensembles computed as one (see the module docstring).

    Per-task data are sequences of `tasks` tensors (a single tensor: one task's), inputs [N_t, in_dim] and
    targets [N_t, out_dim] (or [N_t] when out_dim is 1), in original units; N_t may differ between tasks.
    Task t's networks are initialised from `seeds[t]` (default: draws from torch's global generator).
    Checkpoints (`TaskBatchedState`): the weights with the standardisation buffers, the optimiser and the
    generators, member-major tensors stored as [tasks, members, ...].
    """

    NETWORKS = ("model",)
    TRAINING_PARTS = ("optimizer",)
    SIZES = {"in_dim": int, "out_dim": int, "tasks": int}

    def __init__(self, cfg: EnsembleConfig, in_dim: int, out_dim: int, device: torch.device | str,
                 tasks: int = 1, seeds: Sequence[int] | None = None):
        if cfg.predict_delta and out_dim > in_dim:
            raise ValueError(f"predict_delta needs inputs that start with the state, got {in_dim=} < {out_dim=}")
        self.cfg, self.in_dim, self.out_dim, self.tasks = cfg, in_dim, out_dim, tasks
        self.device = torch.device(device)
        self.generators = task_generators(self.device, tasks, seeds)
        self.model = StandardizedEnsemble(tasks, cfg.members, in_dim, cfg.hidden, out_dim, cfg.predict_delta,
                                          self.generators)
        self.model.to(self.device)
        self.optimizer = task_adam(self.model.parameters(), cfg.lr)

    # --- states: the member axis [tasks · members, ...] stored as [tasks, members, ...] ------------------------

    def _task_major(self, tree):
        """Every tensor of the member-batched network (and its Adam moments), [tasks · members, a, b], as
        [tasks, members, a, b]; buffers ([tasks, dim]), step counts (0-d) and other leaves unchanged."""
        if isinstance(tree, torch.Tensor):
            if tree.ndim == 3 and tree.shape[0] == self.tasks * self.cfg.members:
                return tree.view(self.tasks, self.cfg.members, *tree.shape[1:])
            return tree
        if isinstance(tree, dict):
            return {k: self._task_major(v) for k, v in tree.items()}
        if isinstance(tree, (list, tuple)):
            return type(tree)(self._task_major(v) for v in tree)
        return tree

    @staticmethod
    def _member_major(tree):
        """Inverse of `_task_major` (on tensors or arrays): [tasks, members, a, b] → [tasks · members, a, b]."""
        if hasattr(tree, "ndim"):
            return tree.reshape(-1, *tree.shape[2:]) if tree.ndim == 4 else tree
        if isinstance(tree, dict):
            return {k: EnsembleRegressor._member_major(v) for k, v in tree.items()}
        if isinstance(tree, (list, tuple)):
            return type(tree)(EnsembleRegressor._member_major(v) for v in tree)
        return tree

    def policy_state_dict(self) -> dict:
        state = super().policy_state_dict()
        return state | {"model": self._task_major(state["model"])}

    def load_policy_state(self, state: dict) -> None:
        self.model.load_state_dict(self._member_major(state["model"]))

    def state_dict(self) -> dict:
        state = super().state_dict()
        return state | {name: self._task_major(state[name]) for name in ("model", "optimizer")}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state | {name: self._member_major(state[name]) for name in ("model", "optimizer")})

    # --- training ----------------------------------------------------------------------------------------------

    def _task_data(self, inputs, targets) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-task lists of inputs [N_t, in_dim] and targets [N_t, out_dim]; a tensor is one task's data."""
        inputs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        targets = [targets] if isinstance(targets, torch.Tensor) else list(targets)
        if len(inputs) != self.tasks or len(targets) != self.tasks:
            raise ValueError(f"{self.tasks} task(s) need as many input and target tensors, got "
                             f"{len(inputs)} and {len(targets)}")
        return inputs, [y.reshape(len(y), self.out_dim) for y in targets]

    def set_normalizer(self, inputs, targets) -> None:
        """Standardise every task with its own (training) data's statistics; call before training (`fit` does)."""
        for t, (x, y) in enumerate(zip(*self._task_data(inputs, targets), strict=True)):
            self.model.set_statistics(t, x, y)

    def _step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One Adam step of all members of all tasks, each task on its own mini-batch (inputs [tasks, B, in],
        targets [tasks, B, out]); returns each member's loss, [tasks, members]."""
        losses = self.model.standardized_error(inputs, targets).mean((2, 3))
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optimizer.step()
        return losses.detach()

    def update(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """One gradient step on one mini-batch per task, inputs [tasks, B, in_dim] and targets [tasks, B(,
        out_dim)]; returns per task [tasks] (on the device) the members' mean and largest standardised MSE."""
        losses = self._step(inputs, targets.reshape(*inputs.shape[:2], self.out_dim))
        return {"loss": losses.mean(1), "loss_max": losses.amax(1)}

    def fit(self, inputs, targets) -> list[dict[str, float]]:
        """Alg. 2 for every member of every task at once: each task holds out a random `holdout_fraction` of its
        data, is standardised with the rest and takes `steps` steps on uniformly sampled mini-batches of it (split
        and indices from its own generator); returns per task the training loss and held-out MSE."""
        cfg, device = self.cfg, self.device
        inputs, targets = self._task_data(inputs, targets)
        train_rows, holdouts, start = [], [], 0
        for t, (x, y, g) in enumerate(zip(inputs, targets, self.generators, strict=True)):
            order = torch.randperm(len(x), generator=g, device=device)
            n_holdout = int(len(x) * cfg.holdout_fraction)
            holdout, train = order[:n_holdout], order[n_holdout:]
            self.model.set_statistics(t, x[train], y[train])
            holdouts.append(holdout)
            train_rows.append(train + start)  # rows of the joined data below
            start += len(x)
        joined_x, joined_y = torch.cat(inputs), torch.cat(targets)  # one gather per step for every task
        losses = torch.zeros(self.tasks, cfg.steps, device=device)
        for first in range(0, cfg.steps, INDEX_BLOCK):
            block = min(INDEX_BLOCK, cfg.steps - first)
            index = torch.stack([rows[torch.randint(len(rows), (block, cfg.batch_size), generator=g, device=device)]
                                 for rows, g in zip(train_rows, self.generators, strict=True)], 1)  # [block, T, B]
            for step in range(block):
                losses[:, first + step] = self._step(joined_x[index[step]], joined_y[index[step]]).mean(1)
        tail = max(1, cfg.steps // 10)  # the last 10% of the steps
        metrics = [{"train_loss": losses[t, -tail:].mean().item()} for t in range(self.tasks)]
        held = [(x[h], y[h]) for x, y, h in zip(inputs, targets, holdouts, strict=True)]
        if any(len(h) for h in holdouts):
            for task_metrics, holdout_metrics in zip(metrics, self.evaluate(*zip(*held, strict=True)), strict=True):
                if holdout_metrics:
                    task_metrics |= {f"holdout_{k}": v for k, v in holdout_metrics.items()}
        return metrics

    # --- prediction --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std over members, each [tasks, N, out_dim], of every task's ensemble on inputs [N, in_dim]
        (the same rows for all) or [tasks, N, in_dim]; std is the epistemic uncertainty of Alg. 3."""
        members = self.model(inputs)
        return members.mean(1), members.std(1, correction=0)

    @torch.no_grad()
    def evaluate(self, inputs, targets, chunk_size: int = 8192) -> list[dict[str, float]]:
        """Per task, on its own data: MSE in original units of the ensemble mean (`mse`) and of the members on
        average (`member_mse`); an empty dict for a task without rows."""
        results = []
        for t, (x, y) in enumerate(zip(*self._task_data(inputs, targets), strict=True)):
            if not len(x):
                results.append({})
                continue
            sums = torch.zeros(2, device=self.device)
            for start in range(0, len(x), chunk_size):
                members = self.model(x[start : start + chunk_size])[t]  # every task's rows are computed alike
                target = y[start : start + chunk_size]
                sums[0] += (members.mean(0) - target).pow(2).sum()
                sums[1] += (members - target).pow(2).sum() / len(members)
            mse, member_mse = (sums / y.numel()).tolist()
            results.append({"mse": mse, "member_mse": member_mse})
        return results


def relabel_with_ensemble(
    ensemble: EnsembleRegressor,
    inputs: np.ndarray | Sequence[np.ndarray],
    threshold: float,
    statistic: Literal["mean", "max"] = "max",
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alg. 3 on a whole dataset for every task's ensemble, `chunk_size` rows at a time so millions of
    transitions fit in memory.

    `inputs` is [N, in_dim], or a sequence of arrays joined along the last axis chunk by chunk (e.g.
    (observations, actions)), so the joined copy is never built; every task's ensemble sees the same rows.
    Returns the members' mean [tasks, N, out_dim] (the relabelled values), their std [tasks, N, out_dim], and
    the confidence mask [tasks, N]: the `statistic` over the output dimensions of the std (`row_std`) below
    `threshold`. `chunk_size` None: 256 rows on a CPU (activations that stay in cache: ~1.7× the throughput of
    4096 rows), 65536 on a GPU, each divided by the number of tasks (at least 64 and 1024 rows).
    """
    tasks = ensemble.tasks
    if chunk_size is None:
        chunk_size = max(64, 256 // tasks) if ensemble.device.type == "cpu" else max(1024, 65536 // tasks)
    parts = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    n = len(parts[0])
    mean = np.empty((tasks, n, ensemble.out_dim), dtype=np.float32)
    std = np.empty((tasks, n, ensemble.out_dim), dtype=np.float32)
    for start in range(0, n, chunk_size):
        rows = slice(start, start + chunk_size)
        chunk = np.concatenate([p[rows] for p in parts], axis=-1, dtype=np.float32)
        m, s = ensemble.predict(torch.from_numpy(chunk).to(ensemble.device))
        mean[:, rows], std[:, rows] = m.cpu().numpy(), s.cpu().numpy()
    return mean, std, row_std(std, statistic) < threshold


def row_std(std: np.ndarray, statistic: Literal["mean", "max"]) -> np.ndarray:
    """One uncertainty per row from the members' std [..., N, out_dim]: its mean over the output dimensions (the
    reference's next-state rule) or its max (every dimension confident). Equal for a scalar output."""
    if statistic not in ("mean", "max"):
        raise ValueError(f"statistic must be 'mean' or 'max', got {statistic!r}")
    return std.mean(-1) if statistic == "mean" else std.max(-1)

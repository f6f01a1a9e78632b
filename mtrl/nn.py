"""Network building blocks shared by every algorithm: MLPs, vectorised ensembles, Gaussian actors.

Algorithms import their networks from here instead of declaring their own, so an architecture change is one edit.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A plain feed-forward network: Linear→activation for every hidden width, then a linear output layer."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), activation()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """`members` independent linear layers evaluated as one batched matmul.

    Input [members, ..., in] → output [members, ..., out]. Each member is initialised like `nn.Linear`
    (its own draw). With `generators` (G of them, members divisible by G), the members split into G equal
    consecutive blocks and block g draws its weights from generators[g]: a task-batched network then starts
    exactly where G separately built networks with those generators would (`mtrl.nn` "task axis").
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, generators: Sequence[torch.Generator] = ()):
        super().__init__()
        self.members, self.in_dim, self.out_dim = members, in_dim, out_dim
        device = generators[0].device if generators else None  # a CUDA generator initialises CUDA tensors only
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim, device=device))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim, device=device))
        bound = 1.0 / math.sqrt(in_dim)
        # kaiming_uniform(a=sqrt(5)) as nn.Linear uses reduces to U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
        if not generators:
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)
            return
        if members % len(generators):
            raise ValueError(f"{members} members cannot be split between {len(generators)} generators")
        block = members // len(generators)
        with torch.no_grad():
            for g, generator in enumerate(generators):
                rows = slice(g * block, (g + 1) * block)
                nn.init.uniform_(self.weight[rows], -bound, bound, generator=generator)
                nn.init.uniform_(self.bias[rows], -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return torch.baddbmm(self.bias, x, self.weight)
        flat = torch.baddbmm(self.bias, x.reshape(self.members, -1, self.in_dim), self.weight)
        return flat.reshape(*x.shape[:-1], self.out_dim)

    def extra_repr(self) -> str:
        return f"members={self.members}, in_dim={self.in_dim}, out_dim={self.out_dim}"


class EnsembleMLP(nn.Module):
    """An ensemble of identically shaped MLPs computed together (CORL-style vectorised ensemble).

    `forward` takes [batch, in] (the same inputs for every member) or [members, ..., in] and returns
    [members, ..., out]. `generators`: see `EnsembleLinear` (one per block of members, e.g. per task).
    """

    def __init__(self, members: int, in_dim: int, hidden: Sequence[int], out_dim: int,
                 generators: Sequence[torch.Generator] = ()):
        super().__init__()
        self.members = members
        widths = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(members, a, b, generators)
                                    for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.members, -1, -1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x), inplace=True)  # safe on baddbmm's fresh output; ~1.3× faster relabelling
        return self.layers[-1](x)


def task_randn(generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device | str,
               dtype: torch.dtype = torch.float32, sampler=torch.randn) -> torch.Tensor:
    """Standard normal noise of `shape` = [tasks, ...] (or `sampler`'s, e.g. torch.rand for U[0, 1)): row t drawn
    from generators[t], so task t's noise is what a single-task agent with that generator would draw."""
    if shape[0] != len(generators):
        raise ValueError(f"noise for {shape[0]} tasks needs as many generators, got {len(generators)}")
    return torch.stack([sampler(tuple(shape[1:]), generator=g, device=device, dtype=dtype) for g in generators])


class TaskIdEmbedding(nn.Module):
    """A learned vector per task id (HCSAC's task embedding, seed 004 Sec. 2.4) put in place of the input's id
    column: [..., :c], id, [..., c+1:] → [..., :c], e(id), [..., c+1:]. The id travels as one float column of the
    observation, so a network with this in front takes the same single tensor as one without (SAC's update and
    acting need not know of ids). Task-batched: the table is [tasks, ids, dim], inputs [tasks, ..., in]; task t's
    rows drawn N(0, 1) (as `nn.Embedding`) from generators[t]."""

    def __init__(self, tasks: int, ids: int, dim: int, column: int, generators: Sequence[torch.Generator]):
        super().__init__()
        self.dim, self.column = dim, column
        device = generators[0].device if generators else None
        self.table = nn.Parameter(torch.empty(tasks, ids, dim, device=device))
        with torch.no_grad():
            for t, generator in enumerate(generators):
                self.table[t] = torch.randn(ids, dim, generator=generator, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[..., self.column].long()
        flat = ids.reshape(x.shape[0], -1, 1).expand(-1, -1, self.dim)
        embedded = torch.gather(self.table, 1, flat).reshape(*ids.shape, self.dim)
        return torch.cat([x[..., : self.column], embedded, x[..., self.column + 1:]], -1)


class TanhGaussianSample(NamedTuple):
    """One draw of a `TanhGaussianActor`: the action, its log-probability (None when not asked for) and the
    Gaussian's mean and standard deviation before the tanh."""

    action: torch.Tensor
    log_prob: torch.Tensor | None
    mean: torch.Tensor
    std: torch.Tensor


class TanhGaussianActor(nn.Module):
    """Diagonal Gaussian policy squashed by tanh and scaled to the action bounds (SAC's actor).

    `cond_dim` extra inputs (e.g. a task embedding z) are concatenated to the observation. `sample` is the one
    place where a squashed Gaussian is drawn and scored: SAC, Batch PEARL and acting all go through it.

    With `generators` (one per task) the actor is task-batched: one network per task in an `EnsembleMLP`, task
    t's initialised from generators[t], inputs [tasks, ..., obs] (or [batch, obs], the same for every task),
    outputs [tasks, ...]; `sample` then takes one generator per task and draws task t's noise from its own
    (`task_randn`). The generators are used, not kept: pass them to `sample` (a deep copy, e.g. a target
    network, must not fork them). Without, a single `mlp` (Batch PEARL, the policy `imitate` fits).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], max_action: float = 1.0, cond_dim: int = 0,
                 generators: Sequence[torch.Generator] = ()):
        super().__init__()
        self.tasks = len(generators) or None
        if generators:
            self.net: nn.Module = EnsembleMLP(len(generators), obs_dim + cond_dim, hidden, 2 * act_dim, generators)
        else:
            self.net = mlp(obs_dim + cond_dim, hidden, 2 * act_dim)
        self.max_action = max_action

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the Gaussian before the tanh."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()

    def sample(
        self,
        obs: torch.Tensor,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        deterministic: bool = False,
        with_log_prob: bool = True,
        samples: int | None = None,
    ) -> TanhGaussianSample:
        """A reparameterised action tanh(mean + std·ε)·max_action, ε ~ N(0, I) from `generator` (None: torch's
        global one; a task-batched actor takes one per task, row t of ε drawn from the t-th), or
        tanh(mean)·max_action if `deterministic`; with its log-probability under the squashed distribution
        unless `with_log_prob` is off (acting needs none). `samples`: that many draws per row, on an axis before
        the action's ([..., samples, act_dim]) from one evaluation of the network (CQL's policy actions)."""
        mean, std = self.distribution(obs)
        if samples is not None:
            mean, std = (x.unsqueeze(-2).expand(*x.shape[:-1], samples, x.shape[-1]) for x in (mean, std))
        pre_tanh = mean
        if not deterministic:
            if generator is not None and not isinstance(generator, torch.Generator):
                noise = task_randn(generator, mean.shape, mean.device, mean.dtype)
            else:
                noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            pre_tanh = mean + std * noise
        log_prob = gaussian_log_prob(pre_tanh, mean, std) - tanh_log_det(pre_tanh) if with_log_prob else None
        return TanhGaussianSample(torch.tanh(pre_tanh) * self.max_action, log_prob, mean, std)

    def forward(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability under the squashed distribution (see `sample`)."""
        action, log_prob, _, _ = self.sample(obs, generator, deterministic)
        return action, log_prob

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Log-likelihood of given (squashed, scaled) actions: used to imitate another policy's actions."""
        mean, std = self.distribution(obs)
        squashed = (action / self.max_action).clamp(-1 + eps, 1 - eps)
        pre_tanh = torch.atanh(squashed)
        return gaussian_log_prob(pre_tanh, mean, std) - tanh_log_det(pre_tanh)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis of log N(x; mean, std²)."""
    return (-0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def tanh_log_det(pre_tanh: torch.Tensor) -> torch.Tensor:
    """log|d tanh(u)/du| summed over the last axis, in the numerically stable form 2(log2 − u − softplus(−2u))."""
    return (2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging target ← (1−τ)·target + τ·source, as one fused foreach operation."""
    t_params, s_params = list(target.parameters()), list(source.parameters())
    torch._foreach_lerp_(t_params, s_params, tau)


def adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where the parameters' device supports it (≈1.4× faster steps on CPU)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def task_adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam for task-batched agents: on a CPU the foreach implementation, which updates every element with the
    same arithmetic wherever it sits in its tensor, so task t's slice is updated bit for bit as a single-task
    agent's tensor whatever the group size. (`adam`'s fused CPU kernel rounds a tensor's last numel mod SIMD-width
    elements in a scalar loop: a task's slice of a small tensor, an output bias or log α, would round differently
    in another group, and artifacts would depend on --group-size, --workers and --tasks. Costs 5-15 % per CPU
    update.) On a GPU, the fused kernel: one launch per step."""
    params = list(params)
    if params and params[0].device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)


def seeded_generator(device: torch.device | str, seed: int | None = None) -> torch.Generator:
    """A torch generator on `device` seeded with `seed`, or, if None, with a draw from torch's global generator
    (what every agent does at construction, so `seed_everything` fixes the agent's own stream)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(torch.randint(2**62, ())) if seed is None else seed)
    return generator


class AgentState:
    """The checkpoint protocol of every algorithm in `mtrl.algos` (BCQ, Contextual BCQ, Batch PEARL, SAC, MBML,
    the regression ensembles): each class names its parts once, by attribute,

    - `NETWORKS`: the modules acting needs;
    - `TRAINING_PARTS`: what else a bit-identical resume needs: target networks, optimisers, plain tensors
      (SAC's log α); a part that is None on an instance (an optional target network) is left out;
    - `SIZES`: the constructor arguments, besides `cfg` and `device`, that rebuild the agent (name → type);

    and owns a `generator` (`seeded_generator`) for all its randomness.

    `state_dict()`: copies of NETWORKS, TRAINING_PARTS and the generator state; `load_state_dict` restores them.
    `policy_state_dict()`: SIZES and copies of NETWORKS; `from_policy_state(cfg, state, device)` builds an agent
    for acting from it as `cls(cfg, **sizes, device=device)`, with fresh targets and optimisers.
    """

    NETWORKS: tuple[str, ...] = ()
    TRAINING_PARTS: tuple[str, ...] = ()
    SIZES: dict[str, type] = {"obs_dim": int, "act_dim": int, "max_action": float}
    generator: torch.Generator

    def _parts(self, names: Sequence[str]) -> dict:
        return {name: part for name in names if (part := getattr(self, name)) is not None}

    def policy_state_dict(self) -> dict:
        sizes = {name: getattr(self, name) for name in self.SIZES}
        return sizes | {name: copy.deepcopy(net.state_dict()) for name, net in self._parts(self.NETWORKS).items()}

    @classmethod
    def policy_sizes(cls, state: dict) -> dict:
        """The constructor's size arguments stored in a `policy_state_dict`, with their types."""
        return {name: kind(state[name]) for name, kind in cls.SIZES.items()}

    @classmethod
    def from_policy_state(cls, cfg, state: dict, device: torch.device | str = "cpu"):
        agent = cls(cfg, **cls.policy_sizes(state), device=device)
        agent.load_policy_state(state)
        return agent

    def load_policy_state(self, state: dict) -> None:
        """Load the networks of a `policy_state_dict` (or of a `state_dict`), nothing else."""
        for name, net in self._parts(self.NETWORKS).items():
            net.load_state_dict(state[name])

    def state_dict(self) -> dict:
        parts = self._parts((*self.NETWORKS, *self.TRAINING_PARTS))
        state = {name: part.detach().clone() if isinstance(part, torch.Tensor) else part.state_dict()
                 for name, part in parts.items()}
        return copy.deepcopy({**state, **self._generator_state()})  # not views of live tensors

    def load_state_dict(self, state: dict) -> None:
        for name, part in self._parts((*self.NETWORKS, *self.TRAINING_PARTS)).items():
            if isinstance(part, torch.Tensor):
                with torch.no_grad():
                    part.copy_(torch.as_tensor(state[name]).reshape(part.shape))
            else:  # copies: torch's optimisers would otherwise adopt (and mutate) `state`
                part.load_state_dict(copy.deepcopy(state[name]))
        self._load_generator_state(state)

    def _generator_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def _load_generator_state(self, state: dict) -> None:
        self.generator.set_state(torch.as_tensor(state["generator"]).cpu())


class TaskBatchedState(AgentState):
    """`AgentState` of T independent agents computed as one (the task axis): every parameter, buffer, optimiser
    moment and plain tensor has a leading axis of size `tasks`, and task t owns `generators[t]`.

    Task t's slice behaves exactly as a single-task agent (tasks = 1) built with the same seed: its own
    initialisation, noise, optimiser state and losses (summed over tasks, so no gradient crosses tasks; Adam
    is element-wise). `task_states`/`load_task_states` split a checkpoint into per-task ones and join them
    again, `task_policy_states`/`stack_policy_states` do the same for the policy (e.g. the per-task
    artifacts of a task-batched unit, or K frozen teachers evaluated as one model).
    """

    SIZES: dict[str, type] = {"obs_dim": int, "act_dim": int, "max_action": float, "tasks": int}
    generators: list[torch.Generator]

    @property
    def generator(self) -> torch.Generator:
        if len(self.generators) != 1:
            raise AttributeError("a task-batched agent has one generator per task: use .generators")
        return self.generators[0]

    def _generator_state(self) -> dict:
        return {"generators": torch.stack([g.get_state() for g in self.generators])}  # [tasks, state bytes]

    def _load_generator_state(self, state: dict) -> None:
        for generator, saved in zip(self.generators, torch.as_tensor(state["generators"]).cpu(), strict=True):
            generator.set_state(saved.clone())  # a row view would hand set_state the wrong bytes

    def task_states(self) -> list[dict]:
        """The checkpoint state of every task, each that of a single-task agent."""
        return split_tasks(self.state_dict(), len(self.generators))

    def load_task_states(self, states: Sequence[dict]) -> None:
        self.load_state_dict(stack_tasks(states))

    def task_policy_states(self) -> list[dict]:
        return [state | {"tasks": 1} for state in split_tasks(self.policy_state_dict(), len(self.generators))]

    @staticmethod
    def stack_policy_states(states: Sequence[dict]) -> dict:
        """One policy state with a task axis from per-task (or smaller task-batched) ones, in order."""
        return stack_tasks(states) | {"tasks": sum(int(state["tasks"]) for state in states)}


def task_generators(device: torch.device | str, tasks: int, seeds: Sequence[int] | None) -> list[torch.Generator]:
    """One generator per task: seeded with `seeds` (one per task), or each from torch's global generator."""
    if seeds is not None and len(seeds) != tasks:
        raise ValueError(f"{tasks} tasks need {tasks} seeds, got {len(seeds)}")
    return [seeded_generator(device, None if seeds is None else seeds[t]) for t in range(tasks)]


def split_tasks(tree, tasks: int) -> list:
    """Split a nested state along the task axis: arrays with a leading axis become `tasks` slices of length 1;
    scalars and 0-d arrays (e.g. Adam's shared step count) are repeated."""
    if hasattr(tree, "ndim") and tree.ndim >= 1:
        if tree.shape[0] != tasks:
            raise ValueError(f"expected a leading task axis of {tasks}, got shape {tuple(tree.shape)}")
        return [tree[t : t + 1] for t in range(tasks)]
    if isinstance(tree, dict):
        parts = {k: split_tasks(v, tasks) for k, v in tree.items()}
        return [{k: v[t] for k, v in parts.items()} for t in range(tasks)]
    if isinstance(tree, (list, tuple)):
        parts = [split_tasks(v, tasks) for v in tree]
        return [type(tree)(p[t] for p in parts) for t in range(tasks)]
    return [tree] * tasks


def stack_tasks(trees: Sequence):
    """Inverse of `split_tasks`: join along the task axis; scalars and 0-d arrays are taken from the first."""
    first = trees[0]
    if isinstance(first, torch.Tensor) and first.ndim >= 1:
        return torch.cat(list(trees))
    if isinstance(first, np.ndarray) and first.ndim >= 1:
        return np.concatenate(trees)
    if isinstance(first, dict):
        return {k: stack_tasks([t[k] for t in trees]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(stack_tasks([t[i] for t in trees]) for i in range(len(first)))
    return first


Precision = Literal["fp32", "tf32", "bf16"]  # the config keys `*.precision`
PRECISIONS: tuple[str, ...] = get_args(Precision)


@contextlib.contextmanager
def precision(name: str, device: torch.device | str):
    """The arithmetic of the training updates inside: `fp32` (plain float32), `tf32` (float32 matmuls in
    TensorFloat-32 on CUDA GPUs since Ampere; the same as fp32 on a CPU), `bf16` (autocast: matmuls in bfloat16,
    parameters, optimiser state and the loss reductions autocast keeps in float32; no loss scaling needed)."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {name!r}")
    device = torch.device(device)
    if name == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif name == "tf32" and device.type == "cuda":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    else:
        yield


def require_finite(tree, what: str) -> None:
    """Raise `NonFiniteError` at the first floating leaf of `tree` (NumPy or torch) holding NaN or ±inf, so that
    a diverged training fails its unit instead of becoming a complete artifact."""
    from mtrl.errors import NonFiniteError

    def leaves(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from leaves(value, f"{path}/{key}" if path else str(key))
        elif isinstance(node, (np.ndarray, torch.Tensor)):
            yield path, node

    for path, leaf in leaves(tree, ""):
        values = leaf.detach().cpu().numpy() if isinstance(leaf, torch.Tensor) else leaf
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise NonFiniteError(f"{what}: {path} has {bad} non-finite of {values.size} values; training "
                                 "diverged: lower the learning rate, or check the data it trained on")


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_numpy_tree(tree):
    """Replace every tensor in a nested state (dicts, lists, tuples) by a NumPy array, for storage."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy()
    if isinstance(tree, dict):
        return {k: to_numpy_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_numpy_tree(v) for v in tree)
    return tree


def to_torch_tree(tree, device: torch.device | str = "cpu"):
    """Inverse of `to_numpy_tree`: arrays become tensors on `device` (0-d arrays become 0-d tensors)."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(tree).reshape(tree.shape)).to(device)  # keeps 0-d arrays 0-d
    if isinstance(tree, dict):
        return {k: to_torch_tree(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_torch_tree(v, device) for v in tree)
    return tree

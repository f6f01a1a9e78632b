"""The registry of multi-task methods: the one place that lists them.

An entry says what a method is called (its CLI choice and its `policies/<name>.h5`), which stage trains it, its
config class and where that config lives, the algorithm class, how its training batches are drawn and its role
in the report. The CLI choices, config validation, `distill`, `train-baseline`, `evaluate` and `report` read it.

Adding a method (see docs/algorithms.md, "Adding a method"): write its algorithm module in `mtrl/algos/` (with a
config dataclass), then `register(Method(...))` below. A `train-baseline` method gets the config section
`baselines.<name>` automatically; `mtrl train-baseline --algo <name>`, `mtrl evaluate` and `mtrl report` know it.

Classes and functions are named as "module:attribute" strings and imported on use, so that importing the
registry (the CLI does, to list choices) does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mtrl.errors import ConfigError

TrainingStage = Literal["distill", "train-baseline"]
Role = Literal["method", "ablation", "baseline"]  # report: Fig. 4 shows method + baselines, Fig. 6 method + ablations


@dataclass(frozen=True)
class Method:
    """One multi-task method.

    `algo` is the class (or "module:Class"). A `train-baseline` method's class is built as
    `cls(cfg, obs_dim, act_dim, max_action, device)`; every method's class has `from_policy_state(cfg, state,
    device)` for acting, a `device`, and the multi-task face: `update(batch) -> metrics`, `state_dict`,
    `load_state_dict`, `policy_state_dict`, `sample_z(context, generator)`, `act(obs, z, generator)` and
    `posterior(context) -> (mean, var)` (the task-inference probe of `mtrl evaluate`).
    `batches` ("module:function") is `make_sampler(datasets, cfg, variant, relabelled) -> sample(rng) -> batch of
    NumPy arrays`, where `relabelled` is None unless `needs_relabel`. `variant` is passed to the algorithm
    (MBML's ablations are MBML with another variant).
    """

    name: str
    stage: TrainingStage
    config_class: str | type  # its config dataclass, or "module:Class"
    algo: str | type
    batches: str | Callable
    role: Role
    summary: str
    variant: str | None = None
    needs_relabel: bool = False
    unused_fields: tuple[str, ...] = ()  # fields of its config it never reads: its artifacts do not depend on them

    @property
    def config_key(self) -> str:
        """Where its config lives: MBML's variants share `distill.algo`; baseline `x` has `baselines.x`."""
        return "distill.algo" if self.stage == "distill" else f"baselines.{self.name}"

    def config(self, config) -> Any:
        """This method's config (a dataclass instance) in a resolved `mtrl.config.Config`."""
        return config.distill.algo if self.stage == "distill" else config.baselines.sections[self.name]

    def config_type(self) -> type:
        return load(self.config_class)

    def algo_class(self) -> type:
        return load(self.algo)

    def make_sampler(self, datasets, cfg, relabelled=None):
        return load(self.batches)(datasets, cfg, self.variant, relabelled)

    def training_context_size(self, cfg) -> int:
        """Rows in one context set its encoder sees in training (the task-inference health's training size).
        MBML's own and relabelled rows form one set; the other methods' sets are `context_size` rows."""
        fields = _CONTEXT_FIELDS.get(self.variant, ("context_size",))
        return sum(getattr(cfg, name) for name in fields)


def load(target: str | Any) -> Any:
    """The object a "module:attribute" string names (imported now); anything else as it is."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


GROUND_TRUTH_SUFFIX = "-gt"  # policies/<variant>-gt.h5: a distilled method on ground-truth relabelling (ablation)
PER_TASK_BASELINES = ("sac", "bcq")  # single-task policies of Table 9, evaluated in their own training task
_REGISTRY: dict[str, Method] = {}
# IWPA's variants (seed 003 Sec. 4, 6, App. D): what each test task takes from train-iwpl, and what it learns.
ADAPT_VARIANTS = {
    "behaviour": "the pretrained prior π₀, frozen; a new Q network (\"IW\", behaviour transfer)",
    "value": "the pretrained features ψ, frozen, new task vectors w; a new prior learned by Eq. 11 (value transfer)",
    "both": "π₀ and ψ frozen, new w (\"Shared Q + IW\", Alg. 2)",
    "finetune": "π₀ frozen; ψ fine-tuned with the new w (Alg. 2's optional feature step)",
}


def register(method: Method) -> Method:
    """Add a method (a name already registered is an error: names are artifact names)."""
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (for tests that register a temporary one)."""
    _REGISTRY.pop(name)


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; registered: {', '.join(_REGISTRY)}") from None


def methods(stage: TrainingStage | None = None) -> list[Method]:
    """Registered methods in registration order (the report's order), optionally those one stage trains."""
    return [m for m in _REGISTRY.values() if stage is None or m.stage == stage]


def names(stage: TrainingStage | None = None) -> tuple[str, ...]:
    return tuple(m.name for m in methods(stage))


_MBML = dict(stage="distill", config_class="mtrl.algos.mbml:MBMLConfig", algo="mtrl.algos.mbml:MBML",
             batches="mtrl.rl.batches:mbml_sampler")
# MBMLConfig fields that only some variants read (`mtrl.algos.mbml`, `mtrl.rl.batches`); the others ignore them
_VARIANT_FIELDS = {
    "triplet_margin": ("mbml", "no-relabel"),
    "triplet_sets": ("mbml",),
    "context_size": ("mbml", "no-triplet"),
    "relabelled_context_size": ("mbml", "no-triplet"),
    "no_relabel_context_size": ("no-relabel",),
    "hard_negative_sets": ("no-relabel",),
    "neither_context_size": ("neither",),
}


_CONTEXT_FIELDS = {"mbml": ("context_size", "relabelled_context_size"),
                   "no-triplet": ("context_size", "relabelled_context_size"),
                   "no-relabel": ("no_relabel_context_size",), "neither": ("neither_context_size",)}


def _mbml_variant(variant: str, **entry) -> Method:
    unused = tuple(name for name, readers in _VARIANT_FIELDS.items() if variant not in readers)
    return Method(variant, variant=variant, unused_fields=unused, **entry, **_MBML)


register(_mbml_variant("mbml", role="method", needs_relabel=True,
                       summary="MBML: distillation with relabelled contexts and the triplet loss (Alg. 1, 4)"))
register(_mbml_variant("no-triplet", role="ablation", needs_relabel=True,
                       summary="MBML without the triplet loss (Table 6)"))
register(_mbml_variant("no-relabel", role="ablation",
                       summary="MBML without relabelling: hard-negative triplet over own contexts (Eq. 11, Table 5)"))
register(_mbml_variant("neither", role="ablation",
                       summary="MBML with neither relabelling nor triplet loss (Table 7)"))
register(Method("contextual-bcq", stage="train-baseline", role="baseline",
                config_class="mtrl.algos.contextual_bcq:ContextualBCQConfig",
                algo="mtrl.algos.contextual_bcq:ContextualBCQ", batches="mtrl.rl.batches:baseline_sampler",
                summary="Contextual BCQ: BCQ conditioned on a PEARL task encoder (Alg. 7)"))
register(Method("batch-pearl", stage="train-baseline", role="baseline",
                config_class="mtrl.algos.batch_pearl:BatchPEARLConfig",
                algo="mtrl.algos.batch_pearl:BatchPEARL", batches="mtrl.rl.batches:baseline_sampler",
                summary="Batch PEARL: PEARL trained from the fixed datasets (Alg. 6)"))
register(Method("focal", stage="train-baseline", role="baseline", config_class="mtrl.algos.focal:FOCALConfig",
                algo="mtrl.algos.focal:FOCAL", batches="mtrl.rl.batches:focal_sampler",
                summary="FOCAL: deterministic encoder by distance metric learning, BRAC actor-critic (seed 002)"))

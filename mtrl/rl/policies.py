"""The one interface through which every method is evaluated, its adapters, and the loader from artifacts.

A `ContextPolicy` infers a task belief from the context collected so far in a task (its transitions as rows
[s, a, s', r]) and acts given that belief. Multi-task methods (MBML and its ablations, Contextual BCQ, Batch
PEARL) infer a z; per-task baselines (SAC, BCQ) ignore the context and are evaluated in their own task.
Evaluation steps all tasks in lockstep, so `act` takes one row per task.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from mtrl.configlib import build
from mtrl.nn import seeded_generator, to_torch_tree

BELIEFS = ("sample", "mean", "sample-then-mean")  # `evaluate.belief`


class ContextPolicy(Protocol):
    def infer(self, context: np.ndarray | None, explore: bool = False) -> np.ndarray:
        """A task belief from q(z | context); context None or empty: from the prior. `explore`: for an episode the
        protocol does not score (`evaluate.belief: sample-then-mean` samples there and acts with the mean after)."""

    def act(self, obs: np.ndarray, beliefs: np.ndarray) -> np.ndarray:
        """Actions [B, act_dim] for observations [B, obs_dim], row b acting in task b with belief b."""


class EmbeddingPolicy:
    """Adapter for algorithms with `sample_z(context, generator)`, `posterior(context)` and batched
    `act(obs, z, generator)` (MBML and its kin). It samples with its own generator, so evaluating during training
    leaves training's random stream untouched (a run is the same whether or not it is evaluated along the way).
    `belief` "mean" acts with the posterior mean instead of a sample, "sample-then-mean" samples in the episodes
    the protocol does not score (posterior sampling explores) and acts with the mean in those it scores
    (`evaluate.belief`)."""

    def __init__(self, algo, seed: int, belief: str = "sample"):
        if belief not in BELIEFS:
            raise ValueError(f"belief must be one of {', '.join(BELIEFS)}, got {belief!r}")
        self.algo, self.belief = algo, belief
        self.generator = seeded_generator(algo.device, seed)

    def infer(self, context: np.ndarray | None, explore: bool = False) -> np.ndarray:
        if self.belief == "mean" or (self.belief == "sample-then-mean" and not explore):
            return self.algo.posterior(context)[0]
        return self.algo.sample_z(context, generator=self.generator)

    def act(self, obs: np.ndarray, beliefs: np.ndarray) -> np.ndarray:
        return self.algo.act(obs, beliefs, generator=self.generator)


class ContextFreePolicy:
    """A single-task policy (SAC, BCQ) under the same interface: it ignores the context."""

    def __init__(self, act_fn):
        self.act_fn = act_fn

    def infer(self, context: np.ndarray | None, explore: bool = False) -> np.ndarray:
        return np.zeros(0, np.float32)

    def act(self, obs: np.ndarray, beliefs: np.ndarray) -> np.ndarray:
        return self.act_fn(obs)


def load_multitask_policy(art, device, seed: int, belief: str = "sample") -> EmbeddingPolicy:
    """Build the policy stored in a policies/<name>.h5 artifact from the registry entry of the method that wrote it."""
    from mtrl.methods import get_method

    method = get_method(str(art.attrs["method"]))
    cfg = build(method.config_type(), art.meta("algo_config"))
    algo = method.algo_class().from_policy_state(cfg, to_torch_tree(art.tree("weights")), device)
    return EmbeddingPolicy(algo, seed, belief)

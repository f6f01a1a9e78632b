"""The artifact kinds the pipeline reads and writes, their schema versions and required contents.

Bump a kind's version whenever its layout or meaning changes: old files are then reported as stale (and
rewritten by `mtrl run`) instead of being misread, and opening one says which stage to rerun. The outputs of one
stage unit share one fingerprint, so they must share a version (collect writes dataset and sac).

History: v2 of tasks, dataset and sac: actions in [-1, 1]. v3 of sac (with dataset, its unit's other output) and
v2 of bcq, ensemble, relabel, policy, eval, sac_init and checkpoint: trees stored under their keys' names
(`curve/return_mean`, see `mtrl.artifacts.tree`) instead of positions (`curve/0`). v4 of sac (with dataset), v3
of bcq, ensemble, policy and checkpoint: network weights with a leading task axis (`mtrl.nn.TaskBatchedState`);
v3 of sac_init: its SAC runs initialised from per-task generators (new random streams).
"""

from __future__ import annotations

from dataclasses import dataclass

from mtrl.errors import ArtifactError


@dataclass(frozen=True)
class Schema:
    kind: str
    version: int
    required: tuple[str, ...]  # datasets or groups that must exist in a complete artifact
    description: str


D4RL_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")

SCHEMAS: dict[str, Schema] = {
    s.kind: s
    for s in (
        Schema("tasks", 2, ("train_tasks", "test_tasks"), "train/test task parameters of a distribution"),
        Schema("dataset", 4, D4RL_KEYS, "one task's transitions, D4RL key layout, actions in [-1, 1]"),
        Schema("sac", 4, ("weights", "curve"), "final SAC weights and learning curve of one collection run"),
        Schema("bcq", 3, ("weights", "curve"), "one task's BCQ networks (best and final) and evaluation curve"),
        Schema("ensemble", 3, ("weights",), "one task's reward or next-state ensemble"),
        Schema("relabel", 2, ("indices", "rewards", "reward_mask"),
               "relabelled values and confidence masks per ordered task pair"),
        Schema("policy", 3, ("weights", "losses"), "a multi-task policy and its training curves"),
        Schema("cql", 1, ("weights", "losses", "eval_curve"),
               "a CQL-family agent (BC, CSAC, MTCSAC, HCSAC; seed 004) and its training curves"),
        Schema("sweep", 1, ("train_scores",), "a method's sweep (`mtrl sweep`): its trials, their training-task "
               "scores and the pick"),
        Schema("eval", 2, ("returns",), "per-task, per-episode evaluation returns"),
        Schema("sac_init", 3, ("curves",), "SAC learning curves on one test task, initialised and baselines"),
        Schema("iwpl", 1, ("weights",), "IWPL's prior, Q features / networks and task vectors, with curves"),
        Schema("adapt", 1, ("curves",), "IWPA learning curves on one test task (one variant)"),
        Schema("checkpoint", 3, ("state",), "resumable training state of one unit of work"),
    )
}


def schema_for(kind: str) -> Schema:
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise ArtifactError(f"unknown artifact kind '{kind}'; known kinds: {', '.join(SCHEMAS)}") from None

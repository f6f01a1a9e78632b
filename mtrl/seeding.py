"""Seeds: one global seed per run, deterministic per-unit seeds derived from it."""

from __future__ import annotations

import hashlib
import random

import numpy as np

# Reset seeds of the evaluation episodes that training loops run along the way (episode k resets with seed + k).
# They are constants, the same for every run seed and every evaluation of a run, so a learning-curve point
# depends on the weights alone; training episodes reset from the unit's own seed, far from these. The two loops
# have different values for historical reasons: changing either changes every published curve.
ONLINE_SAC_EVAL_SEED = 10_000  # online SAC (`mtrl.rl.online`: collect, sac-init), deterministic policy
BCQ_EVAL_SEED = 20_000  # train-bcq: the per-task BCQ evaluated in its task (also picks its best snapshot)
CQL_EVAL_SEED = 30_000  # train-cql: the CQL family (seed 004) evaluated on the training tasks


def derive_seed(seed: int, *names: str) -> int:
    """A 31-bit seed for one unit of work, independent of which process or in which order it runs."""
    digest = hashlib.sha256("/".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's legacy global generator and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

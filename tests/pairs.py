"""Task-pair fixtures that tell pair (i, j) from pair (j, i).

Real ensembles' confidence is not symmetric: task i's models on task j's data are not task j's models on task
i's data. A fixture symmetric in i and j lets a transposed pair pass unseen. These ones differ on every pair.
"""

from __future__ import annotations

import numpy as np


def asymmetric_pair_mask(k: int, rows: int, seed: int = 0, keep: float = 0.5) -> np.ndarray:
    """A seeded confidence mask [K_i, K_j, rows] with mask[i, j] != mask[j, i] for every pair i != j."""
    rng = np.random.default_rng(seed)
    while True:
        mask = rng.random((k, k, rows)) < keep
        if is_asymmetric(mask):
            return mask


def is_asymmetric(pairs: np.ndarray) -> bool:
    """Whether values [K, K, ...] differ from their transpose on every pair i != j."""
    k = pairs.shape[0]
    return all(not np.array_equal(pairs[i, j], pairs[j, i]) for i in range(k) for j in range(k) if i != j)

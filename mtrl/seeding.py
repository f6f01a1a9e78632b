"""Seeds: one global seed per run, deterministic per-unit seeds derived from it."""

from __future__ import annotations

import hashlib
import random

import numpy as np


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

"""Nested state (dicts, lists, tuples of arrays and scalars) stored in an HDF5 group without pickle.

Arrays become datasets named by position; the structure is a JSON skeleton in the group's `tree` attribute
whose leaves are `{"$a": i}` (dataset i), `{"$t": [...]}` (tuple), `{"$d": [[key, value], ...]}` (dict: keys
may be ints, as in optimiser states) or plain JSON scalars.
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np


def write_tree(group: h5py.Group, tree: Any) -> None:
    arrays: list[np.ndarray] = []

    def encode(node: Any) -> Any:
        if isinstance(node, np.ndarray) or isinstance(node, np.generic):
            arrays.append(np.asarray(node))
            return {"$a": len(arrays) - 1}
        if isinstance(node, dict):
            return {"$d": [[k, encode(v)] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"$t": [encode(v) for v in node]}
        if isinstance(node, list):
            return [encode(v) for v in node]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} in an artifact tree (convert tensors to arrays first)")

    skeleton = encode(tree)
    for i, arr in enumerate(arrays):
        group.create_dataset(str(i), data=arr)
    group.attrs["tree"] = json.dumps(skeleton)


def read_tree(group: h5py.Group) -> Any:
    skeleton = json.loads(group.attrs["tree"])

    def decode(node: Any) -> Any:
        if isinstance(node, dict):
            if "$a" in node:
                return np.asarray(group[str(node["$a"])][()])
            if "$t" in node:
                return tuple(decode(v) for v in node["$t"])
            return {k: decode(v) for k, v in node["$d"]}
        if isinstance(node, list):
            return [decode(v) for v in node]
        return node

    return decode(skeleton)

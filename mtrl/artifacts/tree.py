"""Nested state (dicts, lists, tuples of arrays and scalars) stored in an HDF5 group without pickle.

The HDF5 layout mirrors the tree, so a viewer or plain h5py reads it by name: `losses/triplet`,
`eval_curve/test_score`, `weights/actor/net.0.weight`, `state/agent/actor_opt/state/0/exp_avg`.

Names. Every array (or NumPy scalar) is a dataset at the path of its keys below the tree's group:
- a dict entry is named by its key: a str key as it is, an int key by its digits (torch optimiser states),
  any other key (bool, float, None) by its JSON text (`true`, `0.5`, `null`);
- the characters a name cannot hold are percent-encoded, `%` first so that the encoding is reversible:
  `%` -> `%25`, `/` -> `%2F`, NUL -> `%00`; the name `.` becomes `%2E` and the empty name `%`;
- if two keys of one dict still get the same name (the str "0" and the int 0), the later one gets the first
  free suffix `~1`, `~2`, ...;
- a list or tuple item is named by its index (`0`, `1`, ...).
Containers holding no array make no group, and Python scalars (None, bool, int, float, str) make no dataset.

Structure. The group's `tree` attribute holds the whole tree as JSON, so reading needs no name decoding and
gives back exactly what was written: dict keys with their types and order, tuples as tuples, Python scalars
inline, and the leaves `{"$a": "path"}` (an array) and `{"$s": "path"}` (a NumPy scalar) pointing at datasets.
A dict is `{"$d": [[key, value], ...]}`, a tuple `{"$t": [...]}`, a list a JSON list. Dict keys must be
str, int, float, bool or None (what JSON keeps with its type).
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np

TREE_ATTR = "tree"
_KEY_TYPES = (str, int, float, bool, type(None))


def key_name(key: Any) -> str:
    """The HDF5 name of a dict key, before de-duplication (see the module docstring)."""
    text = key if isinstance(key, str) else str(key) if type(key) is int else json.dumps(key)
    name = text.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    return {"": "%", ".": "%2E"}.get(name, name)


def _unique(name: str, used: set[str]) -> str:
    unique, n = name, 0
    while unique in used:
        n += 1
        unique = f"{name}~{n}"
    used.add(unique)
    return unique


def checksummed(data: np.ndarray) -> bool:
    """Whether an array is stored with HDF5's Fletcher-32 checksum, so that flipped bytes fail to read instead
    of being trained on: every non-empty numeric array (scalars cannot carry the filter)."""
    return data.ndim >= 1 and data.size > 0 and data.dtype.kind in "biufc"


def write_tree(group: h5py.Group, tree: Any) -> None:
    def encode(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, (np.ndarray, np.generic)):
            name = "/".join(path)
            if not name:
                raise TypeError("an artifact tree cannot be a bare array; store it with `array` or in a dict")
            data = np.asarray(node)
            group.create_dataset(name, data=data, fletcher32=checksummed(data))
            return {"$a" if isinstance(node, np.ndarray) else "$s": name}
        if isinstance(node, dict):
            used: set[str] = set()
            items = []
            for key, value in node.items():
                if not isinstance(key, _KEY_TYPES):
                    raise TypeError(f"cannot store a dict key of type {type(key).__name__} in an artifact tree "
                                    "(keys must be str, int, float, bool or None)")
                items.append([key, encode(value, (*path, _unique(key_name(key), used)))])
            return {"$d": items}
        if isinstance(node, (tuple, list)):
            items = [encode(value, (*path, str(i))) for i, value in enumerate(node)]
            return {"$t": items} if isinstance(node, tuple) else items
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} in an artifact tree (convert tensors to arrays first)")

    group.attrs[TREE_ATTR] = json.dumps(encode(tree, ()))


def read_tree(group: h5py.Group) -> Any:
    def decode(node: Any) -> Any:
        if isinstance(node, dict):
            if "$a" in node:
                return np.asarray(group[node["$a"]][()])
            if "$s" in node:
                return group[node["$s"]][()]
            if "$t" in node:
                return tuple(decode(v) for v in node["$t"])
            return {k: decode(v) for k, v in node["$d"]}
        if isinstance(node, list):
            return [decode(v) for v in node]
        return node

    return decode(json.loads(group.attrs[TREE_ATTR]))

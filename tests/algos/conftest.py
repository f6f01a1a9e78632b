import pytest
import torch

from mtrl.nn import to_numpy_tree


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one thread avoids OpenMP overhead, which is large on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def gradient_passes(monkeypatch):
    """`gradient_passes(algo, batch)` runs one update and returns, for every backward pass in it, the names of the
    networks (`algo.NETWORKS`) whose parameters got a non-zero gradient."""

    def run(algo, batch) -> list[set[str]]:
        passes: list[set[str]] = []
        backward = torch.Tensor.backward

        def recording_backward(self, *args, **kwargs):
            passes.append(set())
            return backward(self, *args, **kwargs)

        def record(name):
            def hook(grad):
                if grad.any():
                    passes[-1].add(name)
            return hook

        monkeypatch.setattr(torch.Tensor, "backward", recording_backward)
        handles = [p.register_hook(record(name)) for name in algo.NETWORKS for p in getattr(algo, name).parameters()]
        algo.update(batch)
        for handle in handles:
            handle.remove()
        monkeypatch.undo()
        return passes

    return run


def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _leaves(value, (*path, i))
    else:
        yield path, tree


@pytest.fixture
def same_state():
    """`same_state(a, b)`: the two agents' whole `state_dict()`s (networks, targets, optimisers, generator) are
    bit-identical."""

    def check(a, b) -> bool:
        mine, theirs = dict(_leaves(to_numpy_tree(a.state_dict()))), dict(_leaves(to_numpy_tree(b.state_dict())))
        assert mine.keys() == theirs.keys()
        for path, value in mine.items():
            other = theirs[path]
            if hasattr(value, "tobytes"):
                assert value.shape == other.shape and value.tobytes() == other.tobytes(), path
            else:
                assert value == other, path
        return True

    return check

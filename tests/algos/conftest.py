import pytest
import torch


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

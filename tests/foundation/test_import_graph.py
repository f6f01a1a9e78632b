"""The package's import graph has no cycles: between subpackages (cli, pipeline, rl, stages, algos, ...) and
between modules. Imports inside functions count too: a lazy import hides a cycle, it does not remove it."""

import ast
from pathlib import Path

import mtrl

PACKAGE = Path(mtrl.__file__).parent


def module_imports() -> dict[str, set[str]]:
    """mtrl module name -> the mtrl modules it imports (`from mtrl.x import y` counts y when it is a module)."""
    modules = {".".join(("mtrl", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                            for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as a path that returns to its start, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node], _ = "open", stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_modules():
    assert find_cycle(module_imports()) is None


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for module, targets in module_imports().items():
        graph.setdefault(subpackage(module), set()).update(subpackage(t) for t in targets)
    for node, targets in graph.items():
        targets.discard(node)
    assert find_cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None

"""The package's import graph: no cycle, and no module imports one from a floor above its own (issue 26).

Every ``import``/``from ... import`` of a ``rotator`` module counts, at module level and inside functions alike
(a lazy import is still a dependency; only ``if TYPE_CHECKING:`` blocks are left out). The floors, bottom up:

0. the ground floor: errors, redaction, model, keys, durations, windows, httpio, safe_yaml, shard;
1. protocols and shared clients: observability, the ``base`` of stores/issuers/pickup/reload, kube;
2. backends: each store, issuer, pickup check and reload target;
3. the core: config, planner, report, guards, engine, preflight, notify, metrics, audit, status_page;
4. the runtime: the CLI, the daemon, the Lambda handler, the HTTP listener, leader election.

A module new to the package must be placed on a floor here, or the test fails and says so.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rotator"

FLOORS: list[set[str]] = [
    {
        "rotator",
        "rotator.errors",
        "rotator.redaction",
        "rotator.model",
        "rotator.keys",
        "rotator.durations",
        "rotator.windows",
        "rotator.quotas",
        "rotator.httpio",
        "rotator.safe_yaml",
        "rotator.shard",
        "rotator.flow",
    },
    {
        "rotator.observability",
        "rotator.kube",
        "rotator.botohttp",
        "rotator.stores",
        "rotator.stores.base",
        "rotator.stores.registry",
        "rotator.issuers",
        "rotator.issuers.base",
        "rotator.pickup",
        "rotator.pickup.base",
        "rotator.reload",
        "rotator.reload.base",
    },
    {
        "rotator.stores.file",
        "rotator.stores.aws",
        "rotator.stores.azure",
        "rotator.stores.gcp",
        "rotator.stores.kubernetes",
        "rotator.issuers.momento",
        "rotator.issuers.emulator",
        "rotator.pickup.http",
        "rotator.pickup.kubernetes",
        "rotator.reload.kubernetes",
        "rotator.reload.ecs",
        "rotator.reload.lambda_fn",
        "rotator.reload.webhook",
    },
    {
        "rotator.config",
        "rotator.planner",
        "rotator.report",
        "rotator.guards",
        "rotator.engine",
        "rotator.preflight",
        "rotator.notify",
        "rotator.metrics",
        "rotator.audit",
        "rotator.status_page",
        "rotator.schema",
        "rotator.pickup.runner",
        "rotator.reload.runner",
    },
    {
        "rotator.runtime",
        "rotator.runtime.app",
        "rotator.runtime.cli",
        "rotator.runtime.completion",
        "rotator.runtime.daemon",
        "rotator.runtime.http",
        "rotator.runtime.lambda_handler",
        "rotator.runtime.leader",
        "rotator.runtime.native_rotation",
    },
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST, here: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = here if is_package else here.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = f"{base}.{node.module}" if node.module else base
        else:
            mod = node.module or ""
        yield mod
        yield from (f"{mod}.{a.name}" for a in node.names)  # ``from rotator import httpio`` names a module


def _walk(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _walk(node)


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        deps: set[str] = set()
        for node in _walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, name, path.name == "__init__.py"):
                if target.startswith("rotator") and target in known and target != name:
                    deps.add(target)
        # ``from rotator import x`` also names the package itself; only the module it names counts
        if "rotator" in deps and name != "rotator":
            deps.discard("rotator")
        graph[name] = deps
    return graph


def floor_of(name: str) -> int | None:
    return next((i for i, floor in enumerate(FLOORS) if name in floor), None)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_on_a_floor() -> None:
    unplaced = sorted(m for m in modules() if floor_of(m) is None and not m.startswith("rotator.testing"))
    assert unplaced == [], f"place these modules on a floor in FLOORS: {unplaced}"


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_module_imports_from_a_floor_above_its_own() -> None:
    upward = []
    for name, deps in import_graph().items():
        mine = floor_of(name)
        for dep in sorted(deps):
            theirs = floor_of(dep)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{name} (floor {mine}) imports {dep} (floor {theirs})")
    assert upward == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_the_walker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from rotator.engine import Engine\n"
        "def f():\n    from rotator.config import Config\n"
        "from . import base\n"
    )
    seen = {t for node in _walk(tree) for t in _imported(node, "rotator.stores.file", False)}
    assert "rotator.config" in seen and "rotator.stores.base" in seen
    assert "rotator.engine" not in seen

"""The package's shape, checked: layers only import downwards, and there are no import cycles.

Layers, lowest first (a module may import its own layer and the ones below it):

0. vocabulary: errors, settings, security, responses, apidoc
1. pure functions: parsing, normalization, privacy, the SSE wire format (no I/O libraries)
2. edges and state: storage, the hub, limits, metrics, logs, the GC policy, body reading
3. the runtime that holds them
4. HTTP routes of each flow (ingest, delivery, onboarding, ops)
5. the application factory and the command line

A new module must be placed in a layer here, which is the point: its place is a decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "receiver"

LAYERS: dict[str, int] = {
    "receiver.errors": 0,
    "receiver.settings": 0,
    "receiver.security": 0,
    "receiver.responses": 0,
    "receiver.apidoc": 0,
    "receiver.ingest.elements": 1,
    "receiver.ingest.normalize": 1,
    "receiver.ingest.privacy": 1,
    "receiver.ingest.budget": 1,
    "receiver.ingest.amplitude": 1,
    "receiver.ingest.shapes": 1,
    "receiver.delivery.wire": 1,
    "receiver.delivery.activity": 1,
    "receiver.delivery.push.signing": 1,
    "receiver.delivery.push.policy": 1,
    "receiver.delivery.push.destination": 1,
    "receiver.storage.dsn": 1,
    "receiver.ingest.bodies": 2,
    "receiver.ingest.limits": 2,
    "receiver.ingest.offload": 2,
    "receiver.storage.store": 2,
    "receiver.storage.writer": 2,
    "receiver.storage.products": 2,
    "receiver.storage.retention": 2,
    "receiver.storage.migrate": 2,
    "receiver.storage.devdb": 2,
    "receiver.storage.sql": 2,
    "receiver.storage.reads": 2,
    "receiver.storage.replication": 2,
    "receiver.storage.primary": 2,
    "receiver.storage.topology": 2,
    "receiver.delivery.hub": 2,
    "receiver.delivery.push.outbox": 2,
    "receiver.delivery.push.sender": 2,
    "receiver.delivery.push.deliverer": 2,
    "receiver.delivery.push.service": 2,
    "receiver.ops.metrics": 2,
    "receiver.ops.logging": 2,
    "receiver.ops.heap": 2,
    "receiver.ops.connections": 2,
    "receiver.runtime": 3,
    "receiver.ingest.webhook": 4,
    "receiver.ingest.capture": 4,
    "receiver.ingest.ingest": 4,
    "receiver.delivery.stream": 4,
    "receiver.delivery.pull": 4,
    "receiver.delivery.mcp": 4,
    "receiver.delivery.links": 4,
    "receiver.onboarding": 4,
    "receiver.ops.admin": 4,
    "receiver.ops.push_admin": 4,
    "receiver.ops.health": 4,
    "receiver.app": 5,
    "receiver.cli": 5,
    "receiver.__main__": 5,
}
PURE = [m for m, layer in LAYERS.items() if layer == 1]
IO_LIBRARIES = ("asyncpg", "fastapi", "starlette", "httpx", "sqlalchemy", "uvicorn", "socket", "subprocess")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            continue
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every module imported at run time (``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(set(_modules()) - set(LAYERS))
    assert not unplaced, f"place these modules in tests/test_architecture.py LAYERS: {unplaced}"


def test_imports_only_go_down() -> None:
    graph = _graph()
    upward = [
        f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})"
        for a, deps in graph.items() for b in deps
        if a in LAYERS and b in LAYERS and LAYERS[b] > LAYERS[a]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state:
                cycle = dfs(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = dfs(module)
            assert cycle is None, " -> ".join(cycle)


def test_pure_modules_do_no_io() -> None:
    modules = _modules()
    bad = [
        f"{m} imports {dep}"
        for m in PURE for dep in _imports(modules[m])
        if dep.split(".")[0] in IO_LIBRARIES
    ]
    assert not bad, "\n".join(bad)

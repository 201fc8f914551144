"""The layout keeps its promises (docs/architecture.md), checked over the source with ``ast``:
layers import only downwards, no module imports the lab, no import cycle, and no route handler
or CLI command touches the store itself (the orders service is the one write path).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "provisioner"

# Lowest first. A module may import from its own layer or any layer below it.
LAYERS: list[set[str]] = [
    {"errors", "settings", "catalog", "metrics"},
    {"documents"},
    {"store"},
    {"render"},
    {"orders"},
    # napalm_shim: NAPALM's names for the push drivers; voice: resync through the registrar
    {"serving", "push", "napalm_shim", "voice"},
    {"api", "tech"},  # tech: the technician page, an adapter beside the REST API
    {"cli"},
]
# Modules that are not part of a layer's code: migration scripts run by Alembic.
EXEMPT = ("provisioner.store.migrations",)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if not name.startswith(EXEMPT):
            found[name] = path
    return found


MODULES = _modules()


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``name`` imports (at any depth of the file), as absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    package = _package_of(name, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:  # "from provisioner.x import y" may import module x.y
                if f"{base}.{alias.name}" in MODULES:
                    yield f"{base}.{alias.name}", node.lineno


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if module == "provisioner":
        return 0
    if parts[0] != "provisioner":
        return None
    for i, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return i
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _ in _imports(name, path):
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def test_every_module_belongs_to_a_layer() -> None:
    # The root package (``provisioner``: the version and data_path) sits with layer 0.
    stray = sorted(n for n in MODULES if n != "provisioner" and _layer(n) is None)
    assert not stray, f"put these in a layer of LAYERS (and docs/architecture.md): {stray}"


def test_no_module_imports_a_layer_above_it_or_the_lab() -> None:
    wrong = []
    for name, path in MODULES.items():
        own = _layer(name)
        for target, line in _imports(name, path):
            if target == "lab" or target.startswith("lab."):
                wrong.append(f"{path.name}:{line}: {name} imports the lab ({target})")
                continue
            theirs = _layer(target)
            if own is not None and theirs is not None and theirs > own:
                wrong.append(f"{path.name}:{line}: {name} (layer {own}) imports {target} "
                             f"(layer {theirs})")  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    # A package importing its own submodules (to re-export or register them) is how a
    # package is assembled, not a cycle between peers: leave those edges out.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


ADAPTERS = sorted(
    [
        *(PACKAGE / "api" / "routes").glob("*.py"),
        *(PACKAGE / "cli").glob("*.py"),
        *(PACKAGE / "tech").glob("*.py"),
    ],
    key=str,
)


@pytest.mark.parametrize("path", ADAPTERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_route_handlers_and_commands_hold_no_session_and_write_no_row(path: Path) -> None:
    """They parse, call the orders service (or another layer's API) and print: the store's
    sessions, engine and rows are not theirs to touch."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found.append(f"line {node.lineno}: imports {node.module}")
        elif isinstance(node, ast.Import) and any(
            a.name.startswith("sqlalchemy") for a in node.names
        ):
            found.append(f"line {node.lineno}: imports sqlalchemy")
        elif isinstance(node, ast.Attribute) and node.attr in ("db", "engine", "session"):
            found.append(f"line {node.lineno}: uses .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "provisioner.store.models":
            found.append(f"line {node.lineno}: imports the store's rows")
    assert not found, f"{path.name}: " + "; ".join(found)


def test_the_checks_above_catch_what_they_claim(tmp_path: Path) -> None:
    """The walkers see imports inside functions and relative imports."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from ..store import db\n    import lab.phones\n")
    got = {t for t, _ in _imports("provisioner.render.sample", sample)}
    assert {"provisioner.store", "provisioner.store.db", "lab.phones"} <= got

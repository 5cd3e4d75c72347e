"""The package's layout by layer (docs/architecture.md): every import, at module level or
inside a function, goes to the module's own layer or a lower one, and no modules import
each other in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "search"
LAYERS = {"base": 0, "training": 1, "tuning": 2, "reviewing": 3, "cli": 4}


def _module(path: Path) -> str:
    return ".".join(("search", *path.relative_to(PACKAGE).with_suffix("").parts)
                    ).removesuffix(".__init__")


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("training", "tuning", "reviewing"):
        return parts[1]
    return "cli" if len(parts) > 1 and parts[1] in ("cli", "__main__") else "base"


def _exists(module: str) -> bool:
    path = PACKAGE.parent / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from X import name`` counts X.name when
    that is a module, else X)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module, found = _module(path), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] == "search":
                subs = {f"{node.module}.{a.name}" for a in node.names}
                found |= {s for s in subs if _exists(s)} or {node.module}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "search"}
        graph[module] = {m for m in found if _exists(m) and m != module}
    return graph


GRAPH = _imports()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_a_module_imports_only_its_layer_and_those_below(module: str) -> None:
    upward = [m for m in GRAPH[module] if LAYERS[_layer(m)] > LAYERS[_layer(module)]]
    assert not upward, f"{module} ({_layer(module)}) imports {upward}"


def test_no_import_cycles() -> None:
    # Package __init__ modules are entry points (lazy re-exports), not links of a cycle.
    packages = {m for m in GRAPH if (PACKAGE.parent / m.replace(".", "/")).is_dir()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module):],
                                                                  module]))
        if module in done:
            return
        for target in sorted(GRAPH.get(module, ())):
            if target not in packages:
                visit(target, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_the_layers_are_the_documented_folders() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {"training", "tuning", "reviewing"}
    for folder in folders:  # each says its purpose in one line
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert doc and doc.split(":")[0].lower() == folder

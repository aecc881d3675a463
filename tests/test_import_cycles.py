"""No import cycles inside ``nimctl``: the layers point one way.

The graph is read from the modules' own import statements (with ``ast``, nothing is
imported): every ``import nimctl...``, ``from nimctl... import ...`` and relative import,
at any depth, so the lazy imports inside functions count too, because a lazy import still
makes two modules depend on each other. Imports under ``if TYPE_CHECKING:`` do not count:
they never run, and type hints may point anywhere. Importing ``nimctl.a.b`` adds no edge
to the package ``nimctl.a`` itself; an ``__init__`` is a module like any other here.
Modules imported by name at run time (``importlib``, as cli/main.py registers commands) are
not statements and are not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import nimctl

ROOT = Path(nimctl.__file__).parent
PACKAGE = "nimctl"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, skipping the bodies of ``if TYPE_CHECKING:`` (not their ``else``)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The nimctl modules ``name`` imports: ``from nimctl.x import y`` is ``nimctl.x.y`` when
    that is a module, else ``nimctl.x``."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                # A relative import counts from the package: the module's own for an __init__.
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                for alias in node.names
            ]
        for target in targets:
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            # `import nimctl.a.b` names a module; a name that is not one is an attribute of its parent.
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    edges = [f"    {a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "  " + ", ".join(component) + "\n" + "\n".join(edges)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert cycles(graph) == [["a", "b", "c"], ["d", "e"]]


def test_the_graph_sees_lazy_and_relative_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import nimctl.cli.main\n"
        "from . import errors\n"
        "from nimctl.client import images, NimClient\n"
        "if TYPE_CHECKING:\n"
        "    from nimctl.server import app\n"
        "else:\n"
        "    from nimctl import output\n"
        "def later():\n"
        "    from nimctl.gpu.probe import probe\n"
    )
    modules = {
        name: Path()
        for name in (
            "nimctl", "nimctl.cli.main", "nimctl.errors", "nimctl.client", "nimctl.client.images",
            "nimctl.server.app", "nimctl.output", "nimctl.gpu", "nimctl.mod",
        )
    }  # fmt: skip
    assert imports_of("nimctl.mod", source, modules) == {
        "nimctl.cli.main",
        "nimctl.errors",
        "nimctl.client",
        "nimctl.client.images",
        "nimctl.output",
        "nimctl.gpu",
    }


def test_nimctl_has_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in nimctl:\n" + "\n".join(describe(c, graph) for c in found)

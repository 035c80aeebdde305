"""No two modules of the project import each other, directly or round a longer loop, when
they are first loaded.

A cycle works only while every module in it reads the others' names after loading, so a
harmless-looking ``from a import b`` at the top of a file can later fail with "partially
initialized module" depending on which module a caller happens to import first. Imports
inside functions run later and are left out, as are those under ``if TYPE_CHECKING:``.
Offline and fast: the files are parsed, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("searchkd", "search_spaces", "runners")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def load_time_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is loaded: those at the top level,
    in class bodies and in if/try/with blocks, not those in functions."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody):
                    visit(block)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.ClassDef | ast.With | ast.For | ast.While):
                visit(node.body)

    visit(tree.body)
    return found


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules loading ``name`` loads first: each imported module, the
    packages above it (their ``__init__`` runs first) and, for ``from P import x``, the
    submodule ``P.x`` when ``x`` is one. Packages above ``name`` itself are left out:
    they are already loading when ``name`` is."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in load_time_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        targets.add(source)
        targets.update(f"{source}.{alias.name}" for alias in node.names)
    own_parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    loaded = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in modules and prefix not in own_parents and prefix != name:
                loaded.add(prefix)
    return loaded


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each
    as a path that returns to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_path_round(graph, component) for component in components]


def _path_round(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest loop from the component's first module back to itself (breadth first)."""
    members, start = set(component), component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles at load time:\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles
    )


def test_the_checker_finds_a_cycle_and_reads_the_graph() -> None:
    """The checker itself: a planted loop is found, a chain is not, and the real graph
    holds edges it must see (so an empty graph cannot pass the test above)."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    graph = import_graph()
    assert {"searchkd.errors", "searchkd.meters"} <= graph["searchkd.config"]
    # A module's own package is loading already: no edge back to it.
    assert "searchkd.distill.base" in graph["searchkd.distill.kd"]
    assert "searchkd.distill" not in graph["searchkd.distill.kd"]
    # Importing from another package loads that package's __init__ first.
    assert {"search_spaces", "search_spaces.mobilenet_units"} <= graph["searchkd.latency"]


def test_function_level_and_type_checking_imports_are_left_out() -> None:
    tree = ast.parse(
        "import a\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import b\n"
        "try:\n    import c\nexcept ImportError:\n    import d\n"
        "def f():\n    import e\n"
        "class K:\n    import g\n"
    )
    names = [
        alias.name
        for node in load_time_imports(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    assert names == ["a", "c", "d", "g"]


# The layers, bottom up: search_spaces (architectures, no training), searchkd (the library
# and its CLI), runners (executing trials). A lower layer reaches up only where listed:
# the spaces raise the library's one-line error type, and the CLI's search command starts
# a runner. Checked for every import, inside functions too. The benchmarks are above all.
ALLOWED_UPWARD = {
    "search_spaces": {"searchkd.errors"},
    "searchkd": {"runners.local", "runners.ray"},  # only from searchkd.cli
}
LAYER = {"search_spaces": 0, "searchkd": 1, "runners": 2, "benchmarks": 3}


def all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def test_lower_layers_reach_up_only_where_the_design_says() -> None:
    found = []
    for name, path in project_modules().items():
        package = name.split(".")[0]
        for target in all_imports(path):
            above = target.split(".")[0]
            if LAYER.get(above, -1) <= LAYER[package]:
                continue
            allowed = target in ALLOWED_UPWARD.get(package, set())
            if package == "searchkd" and name != "searchkd.cli":
                allowed = False
            if not allowed:
                found.append(f"{name} imports {target}")
    assert not found, "imports against the layers:\n" + "\n".join(sorted(found))

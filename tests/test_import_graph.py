"""The import graph of the ``semrec`` package has no circle of module-level imports.

Each module's imports are read with ``ast`` (nothing is imported) and sorted by where they run:

* ``module``: executed when the module is imported (top level, also inside ``try``/``if`` blocks and class bodies);
* ``function``: inside a function body, executed only when the function is called (the usual way to defer a
  heavy or optional dependency);
* ``typing``: under ``if TYPE_CHECKING:``, never executed.

An edge goes to the module an import names: ``from a.b import c`` names the module ``a.b.c`` when that is a module
of the package, else ``a.b``; relative imports are resolved. Importing ``a.b.c`` also runs the package
``a/b/__init__.py``, but that implicit edge is not counted (a package importing its own submodules is how
packages work, and a circle through it is harmless unless names are taken from it, which an explicit import shows).

A circle made of module-level edges only is an error: whether it works depends on which module is imported first.
A circle that needs a function-level edge works, but says that two modules know about each other: the package has
none either, and a new one fails its test.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "semrec"
KINDS = ("module", "function", "typing")


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under the package folder ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement of a module with its kind (``module``, ``function`` or ``typing``)."""
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, kind))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function" if kind == "module" else kind)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), "typing")
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                visit(child, kind)

    visit(tree, "module")
    return found


def _targets(node: ast.Import | ast.ImportFrom, name: str, path: Path, modules: dict[str, Path]) -> list[str]:
    """The package modules an import statement of module ``name`` (file ``path``) names."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        if node.level:
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    out = []
    for target in candidates:
        while target and target not in modules:  # 'import semrec.x.y' of a name inside a module
            target = target.rpartition(".")[0]
        if target and target != name and target not in out:
            out.append(target)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, set[str]]]:
    """``{module: {kind: {imported package modules}}}`` for every module of the package at ``root``."""
    modules = module_names(root)
    graph: dict[str, dict[str, set[str]]] = {}
    for name, path in modules.items():
        edges: dict[str, set[str]] = {kind: set() for kind in KINDS}
        for node, kind in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            edges[kind].update(_targets(node, name, path, modules))
        graph[name] = edges
    return graph


def circles(graph: dict[str, dict[str, set[str]]], kinds: tuple[str, ...]) -> list[list[str]]:
    """Every strongly connected group of two or more modules over the edges of ``kinds`` (Tarjan), each
    as a sorted list, plus a module importing itself."""
    edges = {m: sorted(set().union(*(e[k] for k in kinds)) & graph.keys()) for m, e in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges[v]:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(groups)


def describe(group: list[str], graph: dict[str, dict[str, set[str]]]) -> str:
    """The edges inside a circle, each with its kind."""
    lines = []
    for a in group:
        for kind in KINDS:
            lines += [f"  {a} -> {b} ({kind})" for b in sorted(graph[a][kind] & set(group))]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- the checker


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_graph_kinds_and_targets(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "import os\nfrom . import b\nfrom .sub import c as cc\n"
                    "try:\n    import pkg.sub.c\nexcept ImportError:\n    pass\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n"
                    "def g():\n    import pkg\n    return pkg\nclass K:\n    from pkg.sub.c import X\n",
        "pkg/sub/__init__.py": "from .c import X\n",
        "pkg/sub/c.py": "X = 1\n",
    })
    graph = import_graph(root)
    assert graph["pkg"] == {"module": {"pkg.a"}, "function": set(), "typing": set()}
    assert graph["pkg.a"]["module"] == {"pkg.b", "pkg.sub.c"}
    assert graph["pkg.b"] == {"module": {"pkg.sub.c"}, "function": {"pkg"}, "typing": {"pkg.a"}}
    assert graph["pkg.sub"]["module"] == {"pkg.sub.c"}
    assert circles(graph, ("module",)) == []
    assert circles(graph, ("module", "function")) == [["pkg", "pkg.a", "pkg.b"]]


def test_module_level_circle_is_found(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import y\nx = 1\n",
        "pkg/b.py": "from pkg.c import z\ny = 2\n",
        "pkg/c.py": "import pkg.a\nz = 3\n",
        "pkg/d.py": "from pkg.d import w\nw = 4\n",
    })
    graph = import_graph(root)
    assert circles(graph, ("module",)) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert describe(["pkg.a", "pkg.b", "pkg.c"], graph) == (
        "  pkg.a -> pkg.b (module)\n  pkg.b -> pkg.c (module)\n  pkg.c -> pkg.a (module)")


# ---------------------------------------------------------------------------------------------------- semrec


def test_semrec_graph_is_read() -> None:
    graph = import_graph()
    assert {"semrec.cli", "semrec.tokenizers", "semrec.tokenizers.base"} <= graph.keys()
    assert "semrec.tokenizers.base" in graph["semrec.tokenizers.kmeans"]["module"]


def test_no_module_level_import_circle() -> None:
    graph = import_graph()
    found = circles(graph, ("module",))
    assert not found, "module-level import circles:\n" + "\n".join(describe(g, graph) for g in found)


def test_no_import_circle_at_any_level() -> None:
    """Counting function-level imports too, there is no circle (a new one fails here, listed with its edges)."""
    graph = import_graph()
    found = circles(graph, KINDS)
    assert found == [], "import circles (any level):\n" + "\n\n".join(
        describe(g, graph) for g in found)

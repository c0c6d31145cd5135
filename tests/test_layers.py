"""HiGen's import layers, read from the source (``ast``, nothing imported), so they stay one-way.

The rule. Every ``import``/``from ... import`` statement of a module under ``higen/`` counts: at
module level, inside functions and under ``if TYPE_CHECKING`` alike (a function-level import only
postpones a dependency, it does not remove it). A statement names its target module exactly:
``import a.b``, ``from a.b import c`` (``a.b.c`` when ``c`` is a submodule, else ``a.b``), relative
ones resolved against the importer's package. Python also runs a package's ``__init__`` before any of
its submodules, so importing ``P.s`` depends on ``P`` too, unless the importer lies inside ``P`` (its
own packages are always initialized before it runs). A package is its ``__init__``: a submodule that
imports its own package (``from higen.scale import x``) depends on it like on any module, so this is
a cycle when that ``__init__`` imports the submodule back, even inside a function.

- (a) no module outside ``higen/cli/`` and ``higen/main.py`` imports ``higen.cli`` or ``higen.main``;
- (b) no cycle among higen's modules (each strongly connected component of two or more is one failure,
  reported with its modules and one cycle through them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = ("higen.cli", "higen.main")


def module_names(root: Path, package: str = "higen") -> dict[str, Path]:
    """Dotted name -> file, for every module of ``package`` under ``root`` (a package is its __init__)."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported(tree: ast.AST, name: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that the statements of ``tree`` (module ``name``) import explicitly."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names)
    return {_known(target, modules) for target in found} - {None, name}


def _known(target: str, modules: dict[str, Path]) -> str | None:
    """The deepest module of ``modules`` that ``target`` names (``a.b.attr`` -> ``a.b``)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(root: Path, package: str = "higen") -> dict[str, set[str]]:
    """module -> the modules it depends on by the rule in this file's docstring."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        explicit = imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", modules)
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}  # itself and its packages
        implicit = {".".join(target.split(".")[:i]) for target in explicit for i in range(1, target.count(".") + 1)}
        graph[name] = explicit | {p for p in implicit if p in modules and p not in own}
    return graph


def cli_importers(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Modules below the command line that import it (rule (a)), with what they import of it."""
    def in_cli(module: str) -> bool:
        return any(module == top or module.startswith(top + ".") for top in CLI)

    return {name: sorted(t for t in targets if in_cli(t)) for name, targets in sorted(graph.items())
            if not in_cli(name) and any(in_cli(t) for t in targets)}


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of two or more modules, each sorted (Tarjan, iterative):
    every module of one imports every other, through the others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in graph), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def cycle_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle from the component's first module back to it, inside the component."""
    members, first = set(component), component[0]
    parents: dict[str, str] = {}
    frontier = [first]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(parents[path[-1]])
                    return [first, *reversed(path[:-1]), first] if len(path) > 1 else [first, node, first]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    return component


def test_nothing_below_the_cli_imports_it():
    offenders = cli_importers(import_graph(ROOT))
    assert not offenders, "modules below the command line import it (raise higen.errors types instead): " + \
        "; ".join(f"{name} -> {', '.join(targets)}" for name, targets in offenders.items())


def test_no_import_cycle():
    graph = import_graph(ROOT)
    found = components(graph)
    assert not found, f"{len(found)} import cycle(s) among higen's modules: " + "; ".join(
        f"{len(c)} modules ({', '.join(c)}), e.g. {' -> '.join(cycle_through(graph, c))}" for c in found)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_planted_cycles_and_cli_imports(tmp_path):
    """The checker itself: a cycle through a function-level relative import, one through a package's
    __init__, a CLI import below the CLI; and what is not a cycle."""
    root = _tree(tmp_path, {
        "higen/__init__.py": "",
        "higen/a.py": "from higen import b\n",
        "higen/b.py": "def f():\n    from . import c\n",
        "higen/c.py": "import higen.a as again\n",
        "higen/pkg/__init__.py": "from higen.pkg.part import thing\n",
        "higen/pkg/part.py": "def g():\n    from higen.d import value\n",
        "higen/d.py": "def h():\n    from higen.pkg.other import x\n",  # runs higen/pkg/__init__ first
        "higen/pkg/other.py": "from higen.pkg.leaf import y\n",  # its own package: no implicit edge
        "higen/pkg/leaf.py": "",
        "higen/main.py": "from higen.cli.run import go\n",
        "higen/cli/__init__.py": "",
        "higen/cli/run.py": "from higen.a import b\n",
        "higen/low.py": "def k():\n    import higen.main\n",
    })
    graph = import_graph(root)
    assert graph["higen.b"] == {"higen.c"} and graph["higen.d"] == {"higen.pkg.other", "higen.pkg"}
    assert graph["higen.pkg.other"] == {"higen.pkg.leaf"}
    found = components(graph)
    assert found == [["higen.a", "higen.b", "higen.c"], ["higen.d", "higen.pkg", "higen.pkg.part"]]
    assert [cycle_through(graph, c) for c in found] == [["higen.a", "higen.b", "higen.c", "higen.a"],
                                                        ["higen.d", "higen.pkg", "higen.pkg.part", "higen.d"]]
    assert cli_importers(graph) == {"higen.low": ["higen.main"]}
    (root / "higen/c.py").write_text("x = 1\n")
    (root / "higen/pkg/__init__.py").write_text("")
    assert components(import_graph(root)) == []


@pytest.mark.parametrize("statement, expected", [
    ("from .. import store", {"higen.bugs.store"}),
    ("from ..store import BugStore", {"higen.bugs.store"}),
    ("from .. import case, store", {"higen.bugs.case", "higen.bugs.store"}),
    ("from . import case", {"higen.bugs.sub"}),  # no higen.bugs.sub.case: its own package, explicitly
    ("import higen.bugs.store.deep.attr", {"higen.bugs.store"}),
    ("from higen.bugs import missing_name", {"higen.bugs"}),
])
def test_relative_and_submodule_imports_resolve(tmp_path, statement, expected):
    root = _tree(tmp_path, {"higen/__init__.py": "", "higen/bugs/__init__.py": "", "higen/bugs/store.py": "",
                            "higen/bugs/case.py": "", "higen/bugs/sub/__init__.py": "",
                            "higen/bugs/sub/mod.py": statement + "\n"})
    assert import_graph(root)["higen.bugs.sub.mod"] == expected

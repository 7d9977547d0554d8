"""The import graph of the source trees keeps ARCHITECTURE.md's one-way layers.

Read with :mod:`ast` only (nothing is imported, so the check takes a fraction of a second):

- the core (``tandem``) imports neither ``tandem_services``, ``tandem_pipelines``, the
  application package ``tandem_app`` nor the test support ``tandem_testing``;
- services and pipelines never import each other, the application or the test support;
- ``tandem.generative`` never imports ``tandem.training``, and services never import
  ``tandem.training`` (serving needs no trainer);
- no import cycle between modules of the core.

What counts as an import: ``import`` and ``from ... import`` statements anywhere in a module
(module level and inside functions alike), ``importlib.import_module("constant")``, and, for
the layer rules only, ``"package.module:attr"`` string constants (plug-in specs that are
imported later). Imports under ``if TYPE_CHECKING:`` count for the layer rules but not for
cycles (they never run). ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, otherwise to ``pkg``; the implicit import of a parent package's ``__init__`` is not an
edge. Each violation is reported as ``file:line`` so the offending import is one click away.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Import package -> its folder, relative to the repository root.
PACKAGES: dict[str, str] = {
    "tandem": "platform/tandem",
    "tandem_services": "services/tandem_services",
    "tandem_pipelines": "pipelines/tandem_pipelines",
    "tandem_app": "app/tandem_app",
    "tandem_testing": "testsupport/tandem_testing",
}

#: (importer prefix, forbidden imported prefix, why).
RULES: list[tuple[str, str, str]] = [
    *[("tandem", other, "the core imports no layer above it")
      for other in ("tandem_services", "tandem_pipelines", "tandem_app", "tandem_testing")],
    *[("tandem_services", other, "services import only the core")
      for other in ("tandem_pipelines", "tandem_app", "tandem_testing")],
    *[("tandem_pipelines", other, "pipelines import only the core")
      for other in ("tandem_services", "tandem_app", "tandem_testing")],
    ("tandem.generative", "tandem.training", "generative (serving) never imports training"),
    ("tandem_services", "tandem.training", "services serve; they never import training"),
]

_SPEC = re.compile(r"^(tandem(?:_[a-z]+)?(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Import:
    """One import of ``target`` by module ``source`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int
    type_only: bool = False
    spec_string: bool = False


def module_name(package: str, folder: Path, file: Path) -> str:
    """Dotted module name of ``file`` inside ``package`` rooted at ``folder``."""
    parts = list(file.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def discover(root: Path, packages: dict[str, str] = PACKAGES) -> dict[str, tuple[Path, bool]]:
    """Every module of ``packages`` under ``root``: name -> (file, is a package)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package, rel in packages.items():
        folder = root / rel
        if not folder.is_dir():
            continue
        for file in sorted(folder.rglob("*.py")):
            found[module_name(package, folder, file)] = (file, file.name == "__init__.py")
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _type_only_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes that sit under an ``if TYPE_CHECKING:`` block."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                inside.update(id(sub) for sub in ast.walk(stmt))
    return inside


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(module: str, file: Path, is_package: bool, known: set[str], root: Path) -> list[Import]:
    """The imports made by one module (see the module docstring for what counts)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    rel = str(file.relative_to(root))
    out: list[Import] = []

    def add(target: str, node: ast.AST, type_only: bool, spec: bool = False) -> None:
        out.append(Import(module, target, rel, getattr(node, "lineno", 0), type_only, spec))

    type_only_ids = _type_only_nodes(tree)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Call, ast.Constant)):
            continue
        type_only = id(node) in type_only_ids
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, type_only)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module)
                    if node.level else node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base, node, type_only)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                add(node.args[0].value, node, type_only)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _SPEC.match(node.value)
            if match:
                add(match.group(1), node, type_only, spec=True)
    return out


@cache
def collect(root: Path = ROOT) -> tuple[set[str], list[Import]]:
    """All modules and all their imports under ``root``."""
    modules = discover(root)
    known = set(modules)
    edges: list[Import] = []
    for name, (file, is_package) in modules.items():
        edges.extend(imports_of(name, file, is_package, known, root))
    return known, edges


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_violations(edges: list[Import], rules: list[tuple[str, str, str]] = RULES) -> list[str]:
    """``path:line: a imports b (why)`` for every import that breaks a layer rule."""
    found = [f"{e.path}:{e.line}: {e.source} imports {e.target} ({why})"
             for e in edges for src, dst, why in rules
             if _under(e.source, src) and _under(e.target, dst)]
    return list(dict.fromkeys(found))


def cycles(known: set[str], edges: list[Import], package: str = "tandem") -> list[list[Import]]:
    """Import cycles among the modules of ``package``: per strongly connected component, the
    edges inside it (Tarjan's algorithm, iterative so deep graphs do not hit the recursion
    limit)."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in known if _under(m, package)}
    for e in edges:
        if e.type_only or e.spec_string or e.source == e.target:
            continue
        if e.source in graph and e.target in graph:
            graph[e.source].setdefault(e.target, e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
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
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp: set[str] = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.add(top)
                        if top == node:
                            break
                    if len(comp) > 1:
                        components.append(comp)
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return [sorted((e for m in sorted(c) for t, e in graph[m].items() if t in c),
                   key=lambda e: (e.source, e.target)) for c in components]


def describe_cycles(found: list[list[Import]]) -> list[str]:
    """One line per edge of each cycle, ``path:line: a imports b (cycle n)``."""
    return [f"{e.path}:{e.line}: {e.source} imports {e.target} (cycle {n})"
            for n, comp in enumerate(found, 1) for e in comp]


# --- the checks over this repository ---------------------------------------------------------


def test_layers_point_one_way() -> None:
    _, edges = collect()
    bad = layer_violations(edges)
    assert not bad, f"{len(bad)} import(s) against the layers:\n" + "\n".join(bad)


def test_core_has_no_import_cycles() -> None:
    known, edges = collect()
    found = cycles(known, edges)
    assert not found, f"{len(found)} import cycle(s) in the core:\n" + "\n".join(describe_cycles(found))


def test_the_graph_sees_the_whole_tree() -> None:
    """Guards against a check that passes because it read nothing (a moved folder)."""
    known, edges = collect()
    for package in ("tandem", "tandem_services", "tandem_pipelines"):
        assert sum(_under(m, package) for m in known) > 5, package
    assert len(edges) > 1000


# --- the checker itself catches what it must ------------------------------------------------


def _tree(tmp: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp


def test_checker_reports_each_kind_of_violation(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "platform/tandem/__init__.py": "",
        "platform/tandem/a.py": "def f():\n    from tandem_services import server\n",
        "platform/tandem/b.py": "from . import c\n",
        "platform/tandem/c.py": "import tandem.b\n",
        "platform/tandem/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tandem.e\n",
        "platform/tandem/e.py": "import tandem.d\n",
        "platform/tandem/generative/__init__.py": "",
        "platform/tandem/generative/m.py": "X = 'tandem.training.peft:load'\n",
        "platform/tandem/training/__init__.py": "",
        "services/tandem_services/__init__.py": "",
        "services/tandem_services/server.py": "import importlib\nimportlib.import_module('tandem_pipelines.x')\n",
        "pipelines/tandem_pipelines/__init__.py": "",
        "app/tandem_app/__init__.py": "import tandem_services, tandem_pipelines, tandem\n",
    })
    known, edges = collect(root)
    bad = layer_violations(edges)
    assert bad == [
        "platform/tandem/a.py:2: tandem.a imports tandem_services.server (the core imports no layer above it)",
        ("platform/tandem/generative/m.py:1: tandem.generative.m imports tandem.training.peft "
         "(generative (serving) never imports training)"),
        ("services/tandem_services/server.py:2: tandem_services.server imports tandem_pipelines.x "
         "(services import only the core)"),
    ]
    # b <-> c is a cycle (relative and absolute imports); d -> e is type-only, so d, e is not.
    assert describe_cycles(cycles(known, edges)) == [
        "platform/tandem/b.py:1: tandem.b imports tandem.c (cycle 1)",
        "platform/tandem/c.py:1: tandem.c imports tandem.b (cycle 1)",
    ]

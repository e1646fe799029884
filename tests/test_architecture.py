"""The house rules of the package layout, read from the source with ``ast`` (docs/architecture.md).

Every module of ``kronos_quant`` (with ``adapters/`` and ``strategies/`` installed as
``kronos_quant.adapters`` and ``kronos_quant.strategies``) is parsed; every import counts, at
module level or inside a function (a lazy import is still a dependency), except those under
``if TYPE_CHECKING:``, which never run. The checks:

* no import cycle (the cycle is printed);
* ``argparse`` only in ``kronos_quant.cli``; nothing outside ``cli`` imports ``cli``;
* only ``cli`` imports the demo (``kronos_quant.demo``);
* no module over 500 lines.

The checker runs on a small fake tree too, so that each rule is seen to fail.
"""
from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "kronos_quant"
FOLDERS = {PACKAGE: ROOT / "kronos_quant", f"{PACKAGE}.adapters": ROOT / "adapters",
           f"{PACKAGE}.strategies": ROOT / "strategies"}
CLI, DEMO = f"{PACKAGE}.cli", f"{PACKAGE}.demo"
MAX_LINES = 500


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool
    shown: str  # the path as the repository spells it (adapters/vectorbt.py)


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (ours) or top-level name (external)
    line: int


def find_modules(folders: Mapping[str, Path]) -> dict[str, Module]:
    """Every ``.py`` file under each folder, named as installed (``folders``: package → dir)."""
    modules: dict[str, Module] = {}
    for package, folder in folders.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([package, *parts])
            shown = path.relative_to(folder.parent).as_posix()
            modules[name] = Module(name, path, is_package, shown)
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, outside ``if TYPE_CHECKING:`` blocks."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _owner(name: str, modules: Mapping[str, Module]) -> str:
    """The longest prefix of a dotted name that is one of our modules."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: Module, modules: Mapping[str, Module]) -> list[Import]:
    """Imports of ``module``: ours resolved to a module name, external ones by top name."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
    package = module.name if module.is_package else module.name.rsplit(".", 1)[0]
    out = []
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub when there is one.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                     for a in node.names]
        for name in dict.fromkeys(names):
            ours = name == PACKAGE or name.startswith(PACKAGE + ".")
            target = _owner(name, modules) if ours else name.split(".")[0]
            out.append(Import(module.name, target, node.lineno))
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(modules: Mapping[str, Module],
                 imports: list[Import]) -> dict[str, set[str]]:
    """module → the modules loading it runs: each target and the packages above it (their
    ``__init__`` runs first), less the packages above the importer (already loaded)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for imp in imports:
        if imp.target not in modules:
            continue
        above_source = set(_ancestors(imp.source))
        for name in [*_ancestors(imp.target), imp.target]:
            if name in modules and name not in above_source and name != imp.source:
                graph[imp.source].add(name)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(folders: Mapping[str, Path]) -> list[str]:
    """Every broken rule, one line each (empty: the layout holds)."""
    modules = find_modules(folders)
    imports = [imp for m in modules.values() for imp in imports_of(m, modules)]
    problems = []
    for imp in imports:
        where = f"{modules[imp.source].shown}:{imp.line}"
        if imp.target == "argparse" and not _inside(imp.source, CLI):
            problems.append(f"argparse outside cli/: {where}")
        if _inside(imp.target, CLI) and not _inside(imp.source, CLI):
            problems.append(f"{imp.target} imported outside cli/: {where}")
        if (_inside(imp.target, DEMO) and not _inside(imp.source, DEMO)
                and not _inside(imp.source, CLI)):
            problems.append(f"the demo ({imp.target}) imported by the library: {where}")
    for module in modules.values():
        lines = len(module.path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            problems.append(f"{module.name} has {lines} lines (> {MAX_LINES})")
    cycle = find_cycle(import_graph(modules, imports))
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    return problems


# --- the package -----------------------------------------------------------------------------

def test_the_package_keeps_the_layout():
    problems = violations(FOLDERS)
    assert not problems, "\n".join(problems)


def test_the_walk_sees_every_layer():
    modules = find_modules(FOLDERS)
    expected = {PACKAGE, CLI, f"{CLI}.__main__", f"{CLI}.options", DEMO, f"{DEMO}.steps",
                f"{PACKAGE}.assets", f"{PACKAGE}.runtime", f"{PACKAGE}.backtest",
                f"{PACKAGE}.signals.store", f"{PACKAGE}.adapters.vectorbt",
                f"{PACKAGE}.strategies.live"}
    assert expected <= set(modules)
    imports = [imp for m in modules.values() for imp in imports_of(m, modules)]
    edges = {(i.source, i.target) for i in imports}
    # a lazy import inside a function, and one through a mapped folder, are both seen
    assert (f"{PACKAGE}.backtest", f"{PACKAGE}.adapters.vectorbt") in edges
    assert (f"{PACKAGE}.strategies.live", f"{PACKAGE}.forecast") in edges
    assert (f"{CLI}.signals", f"{PACKAGE}.runtime") in edges


# --- the checker, on a fake tree -------------------------------------------------------------

def _tree(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {PACKAGE: root / "kronos_quant", f"{PACKAGE}.adapters": root / "adapters",
            f"{PACKAGE}.strategies": root / "strategies"}


CLEAN = {
    "kronos_quant/__init__.py": "from .core import f\n",
    "kronos_quant/core.py": "def f():\n    return 1\n",
    "kronos_quant/cli/__init__.py": "import argparse\nfrom .. import demo\n",
    "kronos_quant/demo/__init__.py": "from ..core import f\nfrom ..adapters import thing\n",
    "adapters/__init__.py": "from ..core import f as thing\n",
    "strategies/__init__.py": "",
}


def test_a_clean_fake_tree_passes(tmp_path):
    assert violations(_tree(tmp_path, CLEAN)) == []


def test_each_rule_fails_on_a_fake_tree(tmp_path):
    bad = dict(CLEAN)
    bad["kronos_quant/core.py"] = ("import argparse\n\n\ndef f():\n"
                                   "    from .cli import main  # lazy, still counted\n"
                                   "    return 1\n")
    bad["strategies/live.py"] = "from ..demo import steps\n"
    bad["kronos_quant/long.py"] = "x = 1\n" * (MAX_LINES + 1)
    problems = violations(_tree(tmp_path, bad))
    assert any(p == "argparse outside cli/: kronos_quant/core.py:1" for p in problems), problems
    assert "kronos_quant.cli imported outside cli/: kronos_quant/core.py:5" in problems
    assert ("the demo (kronos_quant.demo) imported by the library: strategies/live.py:1"
            in problems)
    assert f"kronos_quant.long has {MAX_LINES + 1} lines (> {MAX_LINES})" in problems
    # core -> cli -> core through the package __init__: a cycle, printed
    cycle = [p for p in problems if p.startswith("import cycle: ")]
    assert cycle and "kronos_quant.core" in cycle[0] and "kronos_quant.cli" in cycle[0], problems


def test_a_lazy_cycle_is_found_and_printed(tmp_path):
    files = dict(CLEAN)
    files["kronos_quant/a.py"] = "from .b import g\n"
    files["kronos_quant/b.py"] = "def g():\n    from .a import h\n    return h\n"
    problems = violations(_tree(tmp_path, files))
    assert problems == ["import cycle: kronos_quant.a -> kronos_quant.b -> kronos_quant.a"]


def test_type_checking_imports_do_not_count(tmp_path):
    files = dict(CLEAN)
    files["kronos_quant/a.py"] = "from .b import g\n"
    files["kronos_quant/b.py"] = ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                                  "    from .a import h\n\n\ndef g():\n    return 1\n")
    assert violations(_tree(tmp_path, files)) == []


def test_a_package_init_counts_when_a_submodule_is_imported(tmp_path):
    files = dict(CLEAN)
    files["kronos_quant/pkg/__init__.py"] = "from ..a import x\n"
    files["kronos_quant/pkg/leaf.py"] = "y = 2\n"
    files["kronos_quant/a.py"] = "x = 1\n\n\ndef g():\n    from .pkg.leaf import y\n    return y\n"
    problems = violations(_tree(tmp_path, files))
    assert problems == ["import cycle: kronos_quant.a -> kronos_quant.pkg -> kronos_quant.a"]

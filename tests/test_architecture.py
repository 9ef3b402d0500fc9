"""The package's shape, checked by machine (issue 11: visible layers).

An AST scan of every ``klest/**/*.py`` (all imports: module level, function level and inside
``if TYPE_CHECKING:``) builds the graph of klest modules and finds no cycle; no submodule imports
the root package; a function-level import of a klest module says why (``# deferred: ...``, only
for modules whose point is a heavy optional dependency). The layer order itself is
import-linter's contract in pyproject.toml (``make test`` runs ``lint-imports``). Also: ``import
klest`` stays light, every package says what it holds, modules stay short, and the old flat
module paths (``klest.plots``, ``from klest import tables``) still work, with a warning.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

import klest
from klest import _moved

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "klest"
# the "~500 lines" per module, with a little slack
MAX_LINES = 520
HEAVY = ("matplotlib", "dask", "distributed", "torch")
DEFERRED = re.compile(r"#.*\bdeferred:")


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    path: Path
    line: int
    function_level: bool
    type_checking: bool


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``package_dir`` (named after it)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement with (function_level, type_checking)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool, bool]] = []

    def visit(node: ast.AST, function: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, function, type_checking))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, function, True)
            for child in node.orelse:
                visit(child, function, type_checking)
        else:
            inner = function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for child in ast.iter_child_nodes(node):
                visit(child, inner, type_checking)

    visit(tree, False, False)
    return found


def scan(package_dir: Path) -> tuple[dict[str, Path], list[Edge]]:
    """The modules of the package at ``package_dir`` and every import edge between them.

    ``from pkg.x import y`` is an edge to ``pkg.x.y`` when that is a module, else to ``pkg.x``
    (its __init__); ``import pkg.x.y`` is an edge to ``pkg.x.y``; ``import pkg`` to ``pkg``.
    """
    root = package_dir.name
    modules = module_names(package_dir)
    edges = []
    for importer, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, function, type_checking in _import_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the importer's package, level - 1 up
                    package = importer if is_package else importer.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in dict.fromkeys(targets):
                if target == root or target.startswith(root + "."):
                    edges.append(Edge(importer, target, path, node.lineno, function, type_checking))
    return modules, edges


def find_cycles(edges: list[Edge]) -> list[list[str]]:
    """One shortest cycle per strongly connected component of the graph (Tarjan), sorted."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                strongconnect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    cycles = []
    for component in components:
        start = min(component)
        paths, seen = [[start]], {start}
        while paths:  # breadth first, inside the component, back to start
            path = paths.pop(0)
            nexts = sorted(graph[path[-1]] & component)
            if start in nexts:
                cycles.append([*path, start])
                break
            for nxt in nexts:
                if nxt not in seen:
                    seen.add(nxt)
                    paths.append([*path, nxt])
    return sorted(cycles)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def undeclared_deferrals(edges: list[Edge]) -> list[str]:
    """Function-level imports of a package module without a ``# deferred:`` comment."""
    bad = []
    for edge in edges:
        if edge.function_level:
            lines = edge.path.read_text().splitlines()
            nearby = lines[max(edge.line - 2, 0) : edge.line]
            if not any(DEFERRED.search(line) for line in nearby):
                bad.append(f"{_shown(edge.path)}:{edge.line} imports {edge.imported}")
    return bad


MODULES, EDGES = scan(PACKAGE)


def test_the_scan_sees_the_whole_package() -> None:
    assert {"klest", "klest.cli", "klest.engine.runner", "klest.report.plots"} <= MODULES.keys()
    assert any(e.importer == "klest" and e.imported == "klest.estimators" for e in EDGES)


def test_no_import_cycle_between_klest_modules() -> None:
    cycles = find_cycles(EDGES)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_submodule_imports_the_root_package() -> None:
    # `from klest import estimators` is an edge to klest.estimators; `from klest import
    # __version__` or `import klest` inside klest/ is an edge to the root (and all it loads)
    bad = [
        f"{_shown(e.path)}:{e.line}"
        for e in EDGES
        if e.imported == "klest" and e.importer != "klest"
    ]
    assert not bad, f"import the module that defines the name, not the root package: {bad}"


def test_function_level_imports_of_klest_modules_say_why() -> None:
    bad = undeclared_deferrals(EDGES)
    assert not bad, "function-level klest imports without '# deferred: <why>':\n" + "\n".join(bad)


def _write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_the_scan_finds_a_cycle_hidden_in_a_function_or_type_checking(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "a.py": "def f():\n    from pkg import b\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
            "c.py": "from . import a\nfrom pkg import __version__\n",
            "d.py": "def g():\n    # deferred: loads matplotlib\n    import pkg.c\n",
        },
    )
    _, edges = scan(package)
    assert find_cycles(edges) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert [e.importer for e in edges if e.imported == "pkg"] == ["pkg.c"]
    assert [s.split(":")[0] for s in undeclared_deferrals(edges)] == [str(package / "a.py")]
    _, acyclic = scan(_write_package(tmp_path / "fixed", {"a.py": "import pkg.b\n", "b.py": ""}))
    assert find_cycles(acyclic) == []


def test_import_klest_loads_no_heavy_dependency_and_no_old_path() -> None:
    code = "import json, sys, klest; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(json.loads(out.stdout))
    assert not {name for name in loaded if name.split(".")[0] in HEAVY}
    assert not loaded & _moved.MOVED.keys(), "the old-path finder imported something"


def test_every_package_says_what_lives_there() -> None:
    missing = [
        str(path.relative_to(ROOT))
        for path in MODULES.values()
        if path.name == "__init__.py" and not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert not missing


def test_modules_stay_short() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in MODULES.values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over ~500 lines (limit {MAX_LINES}): {long}"


# ---- the old flat module paths ------------------------------------------------------------


def _forget(monkeypatch: pytest.MonkeyPatch, old: str) -> None:
    """Make ``old`` unimported again (the new module stays loaded)."""
    monkeypatch.delitem(sys.modules, old, raising=False)
    if old.removeprefix("klest.") in vars(klest):  # (hasattr would import it)
        monkeypatch.delattr(klest, old.removeprefix("klest."))


@pytest.mark.parametrize(("old", "new"), sorted(_moved.MOVED.items()))
def test_an_old_module_path_is_the_new_module_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, old: str, new: str
) -> None:
    _forget(monkeypatch, old)
    with pytest.warns(DeprecationWarning, match=f"^{re.escape(old)} moved to {re.escape(new)}"):
        module = importlib.import_module(old)
    assert module is sys.modules[new] is sys.modules[old]
    assert module.__name__ == module.__spec__.name == new  # the new module's identity is kept


def test_old_paths_in_user_code(monkeypatch: pytest.MonkeyPatch) -> None:
    for old in ("klest.plots", "klest.tables", "klest.results", "klest.store"):
        _forget(monkeypatch, old)
    namespace: dict[str, object] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(
            "from klest.plots import PAPER_RC\n"
            "from klest import tables\n"
            "import klest.results\n"
            "store = klest.store\n",
            namespace,
        )
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert [m.split()[0] for m in messages] == [
        "klest.plots",
        "klest.tables",
        "klest.results",
        "klest.store",
    ]
    assert all(w.filename == "<string>" for w in caught)  # points at the user's line
    from klest.engine import results
    from klest.report import plots, tables
    from klest.studies import store

    assert namespace["PAPER_RC"] is plots.PAPER_RC and namespace["tables"] is tables
    assert klest.results is results and namespace["store"] is store


def test_a_submodule_of_a_moved_package_is_not_loaded_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for old in ("klest.closed_forms", "klest.closed_forms.normal"):
        _forget(monkeypatch, old)
    new = importlib.import_module("klest.divergence.closed_forms.normal")
    with pytest.warns(DeprecationWarning, match="^klest.closed_forms moved"):
        from klest.closed_forms import normal
    assert normal is new
    with pytest.warns(
        DeprecationWarning, match="^klest.closed_forms.normal moved to " + new.__name__
    ):
        assert importlib.import_module("klest.closed_forms.normal") is new


def test_unknown_names_still_fail() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = klest.nothing_here
    for missing in ("klest.nothing_here", "klest.closed_forms.nothing_here"):
        with pytest.raises(ModuleNotFoundError, match=f"No module named '{missing}'"):
            importlib.import_module(missing)
    assert _moved.new_name("klest.cli") is None
    assert (
        _moved.new_name("klest.closed_forms.discrete") == "klest.divergence.closed_forms.discrete"
    )


def test_the_packages_that_replaced_modules_keep_their_public_names() -> None:
    from klest import divergence, engine, exact, integrate, native

    for package, names in [
        (divergence, ["kl", "kl_result", "register_kl", "KLResult", "NoKLMethodError"]),
        (exact, ["exact_moments", "ExactMoments", "exact_frame", "NoExactMethodError"]),
        (engine, ["simulate", "available_cpus", "usable_workers", "SimulationResult"]),
        (integrate, ["expect", "Expectation"]),
        (native, ["accumulate", "merge", "fill_normal", "TILE"]),
    ]:
        assert all(hasattr(package, name) for name in names), package.__name__

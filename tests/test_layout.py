"""The shape of the code, checked from the source with ``ast`` (nothing is imported).

The packages form four rooms with arrows pointing one way (README, "How it is built"):
``orchestrator.cli`` -> ``orchestrator.execute`` -> ``orchestrator.results`` -> ``exporter``,
and ``orchestrator.views`` -> ``orchestrator.results``.  Imports inside functions count as
much as those at the top: a loop hidden in a function body is still a loop.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from exporter.status import STATUSES
from exporter.taxonomy import CATEGORY_NAMES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("exporter", "orchestrator")


def _modules() -> dict[str, Path]:
    """Every module of the two packages: dotted name -> file."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


TREES = _trees()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """Every module of ours (or a third-party top-level name) that ``module`` imports,
    anywhere in its body, ``TYPE_CHECKING`` blocks included."""
    found: set[str] = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            # "from pkg import mod" imports pkg.mod when that is a module of ours.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        else:
            continue
        for name in names:
            found.add(_ours(name) or name.split(".")[0])
    found.discard(module)
    return found


def _ours(name: str) -> str | None:
    """The longest module of ours that ``name`` is or lies in."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    return {m: {i for i in imports_of(m) if i in MODULES} for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# A package __init__ imports nothing of its own rooms: being imported as a parent must not
# drag a room in (``import orchestrator.results.runs`` runs ``orchestrator/__init__.py``).
def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_planted_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_exporter_never_imports_the_orchestrator_or_ray():
    offenders = {m: sorted(i for i in imports_of(m) if i == "ray" or _in(i, "orchestrator"))
                 for m in MODULES if _in(m, "exporter")}
    assert {m: v for m, v in offenders.items() if v} == {}


# (room, rooms it may not import): the arrows point one way.
FORBIDDEN = [
    ("orchestrator.views", ("orchestrator.execute", "orchestrator.cli", "ray")),
    ("orchestrator.results", ("orchestrator.execute", "orchestrator.views", "orchestrator.cli",
                              "ray")),
    ("orchestrator.execute", ("orchestrator.cli", "orchestrator.views")),
]


@pytest.mark.parametrize("room,forbidden", FORBIDDEN, ids=[r for r, _ in FORBIDDEN])
def test_arrows_point_one_way(room, forbidden):
    offenders = {m: sorted(i for i in imports_of(m) if any(_in(i, f) for f in forbidden))
                 for m in MODULES if _in(m, room)}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_only_the_execute_rooms_ray_folder_imports_ray():
    # Ray is imported where actors and the cluster live, and nowhere else (the CLI reaches
    # it through execute; the Jobs SDK lives beside the cluster code).
    users = sorted(m for m in MODULES if "ray" in imports_of(m))
    assert users and all(_in(m, "orchestrator.execute.ray") for m in users), users


def test_every_module_belongs_to_a_room():
    rooms = ("orchestrator.cli", "orchestrator.execute", "orchestrator.results",
             "orchestrator.views")
    loose = [m for m in MODULES if _in(m, "orchestrator")
             and m not in ("orchestrator", "orchestrator.__main__")
             and not any(_in(m, r) for r in rooms)]
    assert loose == []


def _exit_code_mapping(tree: ast.Module) -> list[str]:
    """Places that turn an outcome into a process exit code."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "exit_code" and \
                isinstance(node.ctx, ast.Load):
            found.append(f"line {node.lineno}: reads .exit_code")
        elif isinstance(node, ast.Call):
            func = node.func
            name = (func.attr if isinstance(func, ast.Attribute) else
                    func.id if isinstance(func, ast.Name) else "")
            owner = func.value.id if isinstance(func, ast.Attribute) and \
                isinstance(func.value, ast.Name) else ""
            if (owner, name) == ("sys", "exit") or name == "SystemExit":
                found.append(f"line {node.lineno}: {owner + '.' if owner else ''}{name}()")
        elif isinstance(node, ast.Name) and re.fullmatch(r"EXIT_[A-Z_]+", node.id):
            found.append(f"line {node.lineno}: {node.id}")
    return found


def test_only_the_cli_maps_outcomes_to_exit_codes():
    offenders = {m: _exit_code_mapping(TREES[m]) for m in MODULES
                 if not _in(m, "orchestrator.cli") and m != "orchestrator.__main__"}
    assert {m: v for m, v in offenders.items() if v} == {}
    # __main__ only hands main()'s code to the interpreter.
    main = [n for n in ast.walk(TREES["orchestrator.__main__"]) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and n.func.attr == "exit"]
    assert len(main) == 1 and ast.unparse(main[0]) == "sys.exit(main())"


def test_the_exit_code_finder_sees_a_mapping():
    tree = ast.parse("import sys\ntry:\n    f()\nexcept E as e:\n    sys.exit(e.exit_code)\n")
    assert len(_exit_code_mapping(tree)) == 2


def _string_constants(tree: ast.Module) -> list[tuple[int, str]]:
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_status_names_are_spelled_only_in_the_status_table():
    offenders = {m: [f"line {line}: {value!r}" for line, value in _string_constants(TREES[m])
                     if value in STATUSES]
                 for m in MODULES if m != "exporter.status"}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_category_names_are_spelled_only_in_the_exporter():
    # The orchestrator names categories through the taxonomy's constants and table.
    offenders = {m: [f"line {line}: {value!r}" for line, value in _string_constants(TREES[m])
                     if value in CATEGORY_NAMES]
                 for m in MODULES if _in(m, "orchestrator")}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_the_literal_finder_sees_a_status():
    assert _string_constants(ast.parse("x = 'PASS'"))[0][1] in STATUSES


# -- the README's map ------------------------------------------------------------------------

def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## How it is built\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## How it is built' section"
    return match.group(1)


def _readme_paths() -> set[str]:
    """Paths the section names: written out whole, or as a table row's folder (the last one
    given, for a row that leaves it empty) and the modules listed in the row."""
    section = _readme_section()
    named = set(re.findall(r"\b((?:exporter|orchestrator|tests|bench|docs)/[\w/.-]*\w)", section))
    folder = None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") \
            else []
        if len(cells) < 2:
            continue
        given = re.fullmatch(r"`((?:exporter|orchestrator)[\w/]*/)`", cells[0])
        folder = given.group(1) if given else folder if not cells[0] else None
        if folder:
            named |= {folder + m for m in re.findall(r"`([\w]+(?:\.py|/))`", cells[1])}
    return named


def test_every_module_the_readme_names_exists():
    named = _readme_paths()
    assert len(named) >= 30, named
    missing = sorted(p for p in named if not os.path.exists(ROOT / p))
    assert missing == []


def test_the_readme_names_every_module():
    named = {p.rstrip("/") for p in _readme_paths()}
    files = sorted(str(p.relative_to(ROOT)) for m, p in MODULES.items()
                   if p.name not in ("__init__.py", "__main__.py")
                   and not _in(m, "exporter.families"))
    assert [f for f in files if f not in named] == []

"""The shape of the source tree: the rooms and the doors between them.

docs/design.md draws the map; these tests keep the code from drifting away
from it.  They read the source with ``ast`` and import nothing of it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "greenline"

# The public paths users and gevent ports import today.
PUBLIC_MODULES = ["socket", "ssl", "select", "selectors", "subprocess", "queue", "event", "lock",
                  "pool", "local", "timeout", "monkey", "aio"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package(module: str) -> str:
    """The package a module belongs to: ``greenline.servers.stream`` ->
    ``greenline.servers``; a package's own ``__init__`` belongs to itself."""
    if MODULES[module].name == "__init__.py":
        return module
    return module.rsplit(".", 1)[0]


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package(module).split(".")
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, top_level_only: bool) -> list[tuple[str, str | None, int]]:
    """(imported module, name imported from it or None, line) for each import
    of a greenline module; only those run at import time if asked (not in a
    function, not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(MODULES[module].read_text())
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner_top = top
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner_top = False
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner_top = False
            if isinstance(child, ast.If) and "__main__" in ast.unparse(child.test):
                inner_top = False
            if top or not top_level_only:
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        if alias.name.startswith("greenline"):
                            found.append((alias.name, None, child.lineno))
                elif isinstance(child, ast.ImportFrom):
                    target = _resolve(module, child)
                    if target.startswith("greenline"):
                        for alias in child.names:
                            sub = f"{target}.{alias.name}"
                            if sub in MODULES:
                                found.append((sub, None, child.lineno))
                            else:
                                found.append((target, alias.name, child.lineno))
            visit(child, inner_top)

    visit(tree, True)
    return found


def test_few_modules_sit_directly_in_the_package():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 14, top


def test_each_subpackage_says_what_it_is_and_what_it_may_import():
    packages = [p for p in SRC.iterdir() if (p / "__init__.py").exists()]
    assert len(packages) >= 3
    for pkg in packages:
        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text()))
        assert doc, f"{pkg.name} has no docstring"
        assert "May import" in doc or "may import" in doc, f"{pkg.name}'s docstring does not say what it may import"


def test_every_module_opens_with_a_docstring():
    missing = [m for m, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing


def test_no_import_cycle_at_module_level():
    graph = {m: {target for target, _, _ in _imports(m, top_level_only=True) if target in MODULES and target != m}
             for m in MODULES}
    # Importing a submodule runs its parents' __init__ first; those edges are
    # not cycles of ours, so only explicit imports count.
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                walk(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


# Modules that stand in for a stdlib module keep its private names (the
# green ``_thread`` has ``_set_sentinel``, ``_ThreadHandle``...): those are
# the stdlib's interface (of one Python version or another), not our
# private state.
STDLIB_MIRRORS = {
    "greenline.monkey.green_thread": {"_set_sentinel", "_ThreadHandle", "_make_thread_handle",
                                      "_get_main_thread_ident", "_shutdown", "_count", "_local"},
    "greenline.socket": {"_GLOBAL_DEFAULT_TIMEOUT"},
}


def _mirrored(target: str, name: str) -> bool:
    return name in STDLIB_MIRRORS.get(target, ())


def test_no_module_imports_another_modules_private_names():
    offences = []
    for m in MODULES:
        for target, name, line in _imports(m, top_level_only=False):
            if target not in MODULES or target == m or (name is not None and _mirrored(target, name)):
                continue
            if name is not None and _is_private(name):
                offences.append(f"{m}:{line} imports {target}.{name}")
        # ... nor reads one through a module it imported (``hub._state``).
        tree = ast.parse(MODULES[m].read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(m, node)
                for alias in node.names:
                    if f"{target}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != m
                    and not _mirrored(aliases[node.value.id], node.attr)):
                offences.append(f"{m}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    assert not offences, "\n".join(offences)


def test_the_library_never_imports_the_command_line_tools():
    offences = [f"{m}:{line} imports {target}"
                for m in MODULES if not m.startswith("greenline.tools") and m != "greenline.__main__"
                for target, _, line in _imports(m, top_level_only=False)
                if target.startswith("greenline.tools")]
    assert not offences, "\n".join(offences)


def test_the_runtime_imports_nothing_outside_it():
    offences = [f"{m}:{line} imports {target}"
                for m in MODULES if m.startswith("greenline._core")
                for target, _, line in _imports(m, top_level_only=False)
                if not target.startswith("greenline._core")]
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_module_paths_still_import(name):
    importlib.import_module(f"greenline.{name}")


def test_everything_in_dunder_all_is_there():
    import greenline

    missing = [name for name in greenline.__all__ if not hasattr(greenline, name)]
    assert not missing

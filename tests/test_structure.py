"""The package's shape, read from its source (nothing is imported): no import cycle between npse's
modules, no private name (``_x``) taken from another module, no function over 80 lines
(CONTRIBUTING.md). Imports inside functions count; ``if TYPE_CHECKING:`` blocks do not.
The exercise stubs are the student's files and are left out."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "npse"
MAX_FUNCTION_LINES = 80


def _modules() -> dict:
    """{dotted name: (path, is a package's __init__)} of every module of npse."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "stubs" in parts:
            continue
        is_init = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_init else parts)] = (path, is_init)
    return found


MODULES = _modules()


def _absolute(module: str, is_init: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_init else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _type_checking_nodes(tree) -> set:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def _imports(module: str):
    """``(imported module, name or None)`` for every npse import in ``module``."""
    path, is_init = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_init, node.level, node.module)
            if source.split(".")[0] != "npse":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    yield submodule, None
                elif source in MODULES:
                    yield source, alias.name


def _graph() -> dict:
    return {m: {dest for dest, _ in _imports(m) if dest != m} for m in MODULES}


def _cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (iterative Tarjan)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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


def test_the_checker_sees_the_package():
    # A checker that found no module would pass everything.
    assert {"npse.cli", "npse.train", "npse.nn.conv2d", "npse.fast.registry"} <= set(MODULES)
    assert "npse.config" in _graph()["npse.train"]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert _cycles(_graph()) == []


def test_no_private_name_is_imported_from_another_module():
    taken = [f"{m} imports {source}.{name}" for m in MODULES for source, name in _imports(m)
             if name and name.startswith("_") and not name.startswith("__") and source != m]
    assert taken == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_is_longer_than_80_lines(module):
    tree = ast.parse(MODULES[module][0].read_text(encoding="utf-8"))
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []

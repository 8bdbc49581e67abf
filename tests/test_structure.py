"""The package's shape: no function over 60 lines, no import cycle, and lower layers never import
higher ones (model < data < infer/eval < train/share < cli/demo)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from tests.conftest import ROOT

SRC = ROOT / "src" / "masam"
# Modules at the package's top that import nothing above them: layer 0.
LAYERS = {
    "model": 1, "data": 2, "infer": 3, "eval": 3, "train": 4, "share": 4, "interactive": 4, "cli": 5, "demo": 5,
    "__main__": 5,
}  # fmt: skip


def _load_tool():
    spec = importlib.util.spec_from_file_location("check_function_length", ROOT / "tools" / "check_function_length.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module_name(path: Path) -> str:
    parts = ["masam", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The masam modules ``path`` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    modules = {module_name(p) for p in SRC.rglob("*.py")}
    return {t for t in found if t in modules and t != name}


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
            yield from (n for c in child.orelse for n in _runtime_nodes(c))
            continue
        yield child
        yield from _runtime_nodes(child)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 5  # masam/__init__ exports the top


def test_no_function_in_the_package_is_longer_than_60_lines(capsys):
    tool = _load_tool()
    assert tool.main([str(SRC), "--max", "60"]) == 0, capsys.readouterr().out


def test_the_length_check_finds_a_long_function(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 60 + "    return x\n")
    assert _load_tool().long_functions(long, 60) == [(1, "f", 62)]


def test_no_import_cycle_and_no_import_upwards():
    graph = {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}
    upwards = sorted((a, b) for a, targets in graph.items() for b in targets if layer(b) > layer(a))
    assert not upwards
    assert find_cycle(graph) is None


def test_the_import_checks_see_cycles_and_layers():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    checkpoint = imports_of(SRC / "model" / "checkpoint.py")
    assert {"masam.model.build", "masam.errors", "masam.spec"} <= checkpoint
    assert "masam.model.build" not in imports_of(SRC / "model" / "masam.py")  # for annotations only
    assert layer("masam.spec") < layer("masam.model.build") < layer("masam.data.io") < layer("masam.infer.run")
    assert layer("masam.infer.run") < layer("masam.train.trainer") < layer("masam.cli")

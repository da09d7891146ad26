"""dbgvm/core has no import cycle: every import counts, those under TYPE_CHECKING too (a
cycle there still means two modules that cannot be understood one without the other)."""
from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "dbgvm" / "core"


def core_imports(path: Path) -> set[str]:
    """The dbgvm.core modules ``path`` imports (by module name inside the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)   # from . import x
            elif node.level == 0 and node.module and node.module.startswith("dbgvm.core."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[2] for alias in node.names
                         if alias.name.startswith("dbgvm.core."))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in CORE.glob("*.py")}
    return {name: core_imports(path) & modules.keys() - {name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_dbgvm_core_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in dbgvm/core: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_emulation_modules_do_not_import_the_machine():
    graph = import_graph()
    for name in ("privileged", "delivery", "guest_registers", "debug", "memory", "decoder",
                 "paging", "port_io", "instruction_hooks", "scheduler", "traps", "syscalls",
                 "loader"):
        assert "machine" not in graph[name], name

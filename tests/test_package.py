"""The package's structure: imports run one way (no circle), and only the entry point imports the command line."""

import ast
from pathlib import Path

import fastnst

PACKAGE = Path(fastnst.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """Module -> the fastnst modules it imports, at the top or inside functions."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "fastnst":
                deps |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastnst."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fastnst.")}
        graph[path.stem] = deps - {path.stem}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]):
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state and (circle := visit(dep, path + [dep])):
                return circle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module, [module])):
            return circle
    return None


def test_find_circle_sees_a_circle():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_imports_have_no_circle():
    graph = import_graph()
    assert {"cli", "training", "inference", "modelfile"} <= set(graph)
    assert find_circle(graph) is None


def test_only_the_entry_point_imports_the_command_line():
    assert sorted(m for m, deps in import_graph().items() if "cli" in deps) == ["__main__"]

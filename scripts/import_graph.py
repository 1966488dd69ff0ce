"""Print the package's import graph, as read from its import statements.

    python3 scripts/import_graph.py [SRC]            # SRC defaults to src/cnnlab
    python3 scripts/import_graph.py --longest 15     # then the longest functions

Each line is `module (lines) -> imported, imported, ...` (cnnlab modules only, every
import statement that runs counted, also those inside functions; not those under
`if TYPE_CHECKING:`), then the cycles, if any.
The layer test (tests/test_layers.py) reads the same graph.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, src: Path) -> str:
    """src/cnnlab/nn/spec.py -> cnnlab.nn.spec; a package's __init__ is the package."""
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:`: an import there names a
    type for the checker and is never run, so it makes no dependency."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and getattr(test, "id", "") == "TYPE_CHECKING":
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def imports_of(path: Path, src: Path, modules: set[str]) -> set[str]:
    """The cnnlab modules `path` imports (`from cnnlab.x import y` counts y when y is
    itself a module, else cnnlab.x)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found - {module_name(path, src)}


def import_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the cnnlab modules it imports, for every .py file under `src`."""
    files = sorted(src.rglob("*.py"))
    modules = {module_name(p, src) for p in files}
    return {module_name(p, src): imports_of(p, src, modules) for p in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (each as a path that returns to its start), via DFS."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def longest_functions(src: Path, count: int) -> list[tuple[int, str]]:
    """The `count` longest functions under `src`: (lines, module:name)."""
    found = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                found.append((lines, f"{module_name(path, src)}:{node.name}"))
    return sorted(found, reverse=True)[:count]


def main(argv: list[str]) -> int:
    longest = 0
    if "--longest" in argv:
        at = argv.index("--longest")
        longest = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2 :]
    src = Path(argv[0]) if argv else Path(__file__).parents[1] / "src" / "cnnlab"
    graph = import_graph(src)
    files = {module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    for module, targets in graph.items():
        lines = len(files[module].read_text(encoding="utf-8").splitlines())
        print(f"{module} ({lines}) -> {', '.join(sorted(targets)) or '(none)'}")
    loops = cycles(graph)
    print(
        f"\n{len(graph)} modules, {sum(map(len, graph.values()))} import edges, "
        f"{len(loops)} cycle(s)"
    )
    for loop in loops:
        print("  cycle: " + " -> ".join(loop))
    if longest:
        print(f"\nThe {longest} longest functions (lines):")
        for lines, name in longest_functions(src, longest):
            print(f"  {lines:4d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The package's layers, read from its import statements: one-way, no cycles, no
private names borrowed across modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "cnnlab"
sys.path.insert(0, str(ROOT / "scripts"))
from import_graph import cycles, import_graph, module_name  # noqa: E402

# Lowest first: a module may import its own layer and the layers below it.
LAYERS = (
    ("cnnlab._version", "cnnlab.errors", "cnnlab.util"),
    ("cnnlab.nn", "cnnlab.data"),
    ("cnnlab.training",),
    ("cnnlab.studies",),
    ("cnnlab.reporting",),
    ("cnnlab.search",),  # Optuna search; finalists through the study report
    ("cnnlab.interop",),  # Keras import/export, ONNX, TorchScript, loggers
    ("cnnlab.api", "cnnlab"),  # the package re-exports the API
    ("cnnlab.cli", "cnnlab.__main__"),
)


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(
            module == p or module.startswith(p + ".") for p in prefixes if p != "cnnlab"
        ):
            return index
    assert module == "cnnlab", f"{module} is in no layer: add it to LAYERS"
    return LAYERS.index(("cnnlab.api", "cnnlab"))


def test_every_module_has_a_layer_and_imports_only_downwards() -> None:
    graph = import_graph(SRC)
    assert len(graph) > 30  # the whole package was read
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph(SRC)) == []


def test_cycle_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_private_name_is_imported_from_another_module() -> None:
    borrowed = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "cnnlab"
            ):
                for alias in node.names:
                    if alias.name.startswith("_") and alias.name != "__version__":
                        borrowed.append(
                            f"{module_name(path, SRC)}: {node.module}.{alias.name}"
                        )
    assert borrowed == []


def test_cli_reaches_studies_only_through_the_api() -> None:
    graph = import_graph(SRC)
    cli = [m for m in graph if m == "cnnlab.cli" or m.startswith("cnnlab.cli.")]
    assert len(cli) > 3  # the package and its command modules
    studies = {t for m in cli for t in graph[m] if t.startswith("cnnlab.studies")}
    assert studies <= {"cnnlab.studies.runner"}  # the executor names, for --help

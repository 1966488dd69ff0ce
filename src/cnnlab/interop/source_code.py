"""Keras code read as syntax: a .py file or a notebook's code cells parsed with `ast`,
and the names the code binds followed to constants. Nothing is executed or imported.

A `Scope` holds what the code has bound so far, in file order: imports (local name ->
dotted path, `D` -> `keras.layers.Dense`) and names (-> a constant, or `Unknown` with
the reason only running the code would tell its value).
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.util.fsio import read_bounded

KERAS_ROOTS = ("keras", "tensorflow", "tf_keras", "tf")
# Cell magics whose body is still Python; any other (%%bash, %%html...) is skipped.
_PYTHON_CELL_MAGICS = ("time", "timeit", "capture", "prun")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_MAX_EXPONENT = 64  # `2 ** 10 ** 10` would run for ever: constants stay small
_MAX_REPEAT = 10_000  # (1,) * n and 'a' * n
_MAX_BITS = 4096  # integers past this are no layer size
_MAX_LENGTH = 10_000  # items of a string or tuple built by + or *: no layer needs more
MAX_SOURCE_BYTES = 64 * 2**20  # a notebook with its figures is a few MB
# Python code read (a .py file, or a notebook's code cells together): a Keras
# script is some KB; each MB parses to about 250 MB of syntax tree.
MAX_CODE_BYTES = 4 * 2**20


class Unresolved(Exception):
    """A value that only running the code would give; the message says why."""


@dataclass(frozen=True)
class Unknown:
    """A name bound to something computed at run time."""

    reason: str


@dataclass(frozen=True)
class Cell:
    """One unit of code: a notebook code cell (numbered from 1) or a whole .py file."""

    tree: ast.Module
    number: int | None  # the cell's place among all the notebook's cells
    heading: str  # the nearest markdown heading above the cell, '' if none


def short(node: ast.AST, limit: int = 40) -> str:
    """The node's source text on one line, cut to `limit` characters."""
    try:
        text = " ".join(ast.unparse(node).split())
    except RecursionError:
        return "<an expression nested too deeply>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_cells(path: Path) -> tuple[list[Cell], list[str]]:
    """The parsed code of a .py file or .ipynb notebook, and cells that do not parse."""
    notebook = path.suffix.lower() == ".ipynb"
    text = _read_text(path, MAX_SOURCE_BYTES if notebook else MAX_CODE_BYTES)
    if not notebook:
        tree = _parse(text, path)
        if isinstance(tree, tuple):
            raise CnnlabError(
                f"{path}:{tree[0]}: {tree[1]}. Fix the syntax, or give the notebook "
                "(.ipynb) it came from."
            )
        return [Cell(tree, None, "")], []
    cells, problems, heading = [], [], ""
    found = _notebook_cells(path, text)
    code = sum(len(source) for _, kind, source in found if kind == "code")
    if code > MAX_CODE_BYTES:
        raise CnnlabError(
            f"{path}: holds {code:,} characters of code, over the limit of "
            f"{MAX_CODE_BYTES:,} for Keras code. Check that it is the right notebook."
        )
    for number, kind, source in found:
        if kind == "markdown":
            heading = _last_heading(source) or heading
        elif kind == "code" and (code := _python_of(source)) is not None:
            tree = _parse(code, path)
            if isinstance(tree, tuple):
                line, why = tree
                problems.append(f"{path}:cell {number}:line {line}: {why}; skipped.")
            else:
                cells.append(Cell(tree, number, heading))
    return cells, problems


def _parse(code: str, path: Path) -> ast.Module | tuple[int, str]:
    """The module's syntax tree, or (line, 'not valid Python (why)')."""
    try:
        return ast.parse(code, str(path))
    except SyntaxError as err:
        return err.lineno or 1, f"not valid Python ({err.msg})"
    except (ValueError, RecursionError, MemoryError) as err:  # NUL bytes, deep nesting
        return 1, f"not valid Python ({type(err).__name__}: {str(err)[:80]})"


def _read_text(path: Path, limit: int) -> str:
    """The file's text: a regular file of at most `limit` bytes (a FIFO or a
    device such as /dev/urandom is refused, never read)."""
    what = "a Keras code file"
    try:
        return read_bounded(path, limit, what).decode("utf-8")
    except UnicodeDecodeError as err:
        raise CnnlabError(f"{path}: not a UTF-8 text file (byte {err.start}).") from err
    except OSError as err:
        raise CnnlabError(f"{path}: cannot read the file ({err.strerror}).") from err


def _notebook_cells(path: Path, text: str) -> list[tuple[int, str, str]]:
    """(number, cell type, source) of each cell of a notebook (nbformat 4, or 3)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:  # ValueError: 4,300+ digit numbers
        where = f" (line {err.lineno}: {err.msg})" if hasattr(err, "lineno") else ""
        raise CnnlabError(
            f"{path}: not a Jupyter notebook: the file is not JSON{where}. Give an "
            ".ipynb file saved by Jupyter, or the code as a .py file."
        ) from err
    cells = doc.get("cells") if isinstance(doc, dict) else None
    if cells is None and isinstance(doc, dict):  # nbformat 3: cells in worksheets
        sheets = doc.get("worksheets") or [{}]
        cells = sheets[0].get("cells") if isinstance(sheets[0], dict) else None
    if not isinstance(cells, list):
        raise CnnlabError(
            f"{path}: not a Jupyter notebook (no list of 'cells'). Give an .ipynb "
            "file saved by Jupyter, or the code as a .py file."
        )
    out = []
    for number, cell in enumerate(cells, 1):
        if isinstance(cell, dict):
            source = cell.get("source", cell.get("input", ""))
            source = "".join(source) if isinstance(source, list) else source
            out.append((number, cell.get("cell_type"), str(source)))
    return out


def _last_heading(markdown: str) -> str:
    found = [m.group(1) for m in map(_HEADING.match, markdown.splitlines()) if m]
    return found[-1] if found else ""


def _python_of(source: str) -> str | None:
    """The cell's Python: IPython `%magic` and `!shell` lines blanked (lines keep
    their numbers); None for a cell magic of another language."""
    lines = source.splitlines()
    if lines and lines[0].startswith("%%"):
        if lines[0][2:].split(" ")[0] not in _PYTHON_CELL_MAGICS:
            return None
    magic = re.compile(r"^\s*(%|!(?!=))")
    return "\n".join("" if magic.match(line) else line for line in lines)


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


@dataclass
class Scope:
    """Imports and constants bound so far, in the order the code binds them."""

    names: dict[str, Any] = field(default_factory=dict)  # constant or Unknown
    imports: dict[str, str] = field(default_factory=dict)  # name -> dotted path

    def bind_import(self, node: ast.Import | ast.ImportFrom) -> None:
        """Record what an import statement binds."""
        for alias in node.names:
            if isinstance(node, ast.Import):
                local = alias.asname or alias.name.split(".")[0]
                target = alias.name if alias.asname else local
            elif alias.name == "*":
                continue  # star imports leave names unbound: read as bare Keras names
            else:
                local = alias.asname or alias.name
                module = "." * node.level + (node.module or "")
                target = f"{module}.{alias.name}"
            self.names.pop(local, None)
            self.imports[local] = target

    def bind(self, name: str, value: Any) -> None:
        """Bind a plain name to a constant or an Unknown."""
        self.imports.pop(name, None)
        self.names[name] = value

    def assign(self, target: ast.expr, node: ast.expr, where: str) -> None:
        """Bind the names of an assignment target (tuples unpacked) to their values."""
        if isinstance(target, ast.Name):
            self.bind(target.id, self.try_value(node, target.id, where))
        elif isinstance(target, ast.Tuple | ast.List):
            items = node.elts if isinstance(node, ast.Tuple | ast.List) else None
            if items is not None and len(items) == len(target.elts):
                for sub, item in zip(target.elts, items, strict=True):
                    self.assign(sub, item, where)
                return
            for name in _stored_names(target):
                reason = f"`{name}` is unpacked from `{short(node)}` ({where})"
                self.bind(name, Unknown(f"{reason}, known only at run time"))

    def try_value(self, node: ast.expr, name: str, where: str) -> Any:
        """The constant `node` gives, or an Unknown saying where `name` got it."""
        try:
            return self.value(node)
        except Unresolved:
            return Unknown(
                f"`{name}` is set from `{short(node)}` ({where}), known only at run "
                "time"
            )

    def value(self, node: ast.expr) -> Any:
        """The constant an expression gives: literals, names of constants, tuples,
        arithmetic and indexing of those. Anything else raises Unresolved."""
        try:
            return self._eval(node)
        except RecursionError as err:
            raise Unresolved("the expression is nested too deeply") from err

    def _eval(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.Tuple | ast.List):
            return tuple(self._eval(e) for e in node.elts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self._eval(node.operand)
            if isinstance(operand, int | float) and not isinstance(operand, bool):
                return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _arith(node, self._eval(node.left), self._eval(node.right))
        if isinstance(node, ast.Subscript):
            return _index(node, self._eval(node.value), self._subscript(node.slice))
        raise Unresolved(f"`{short(node)}` is computed at run time")

    def _name(self, name: str) -> Any:
        if name in self.names:
            found = self.names[name]
            if isinstance(found, Unknown):
                raise Unresolved(found.reason)
            return found
        if name in self.imports:
            raise Unresolved(f"`{name}` is an imported object, not a constant")
        raise Unresolved(f"`{name}` is not defined above this line")

    def _subscript(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Slice):
            parts = (node.lower, node.upper, node.step)
            return slice(*(None if p is None else self._eval(p) for p in parts))
        return self._eval(node)

    def qualname(self, node: ast.expr) -> str | None:
        """The dotted path a name or attribute chain refers to (`layers.Dense` ->
        `keras.layers.Dense`); a bare unbound name as itself; None for a variable."""
        if isinstance(node, ast.Name):
            if node.id in self.imports:
                return self.imports[node.id]
            return None if node.id in self.names else node.id
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None


def keras_name(qualname: str | None) -> str | None:
    """The class or function name of a Keras object (`keras.layers.Conv2D` ->
    `Conv2D`); a bare name (imported with * or not at all) is taken as Keras's."""
    if qualname is None:
        return None
    parts = qualname.split(".")
    return parts[-1] if len(parts) == 1 or parts[0] in KERAS_ROOTS else None


def _stored_names(target: ast.expr) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def stored_names(nodes: list[ast.stmt]) -> set[str]:
    """Every plain name the statements assign (for loops and conditions)."""
    return {
        n.id
        for stmt in nodes
        for n in ast.walk(stmt)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _arith(node: ast.BinOp, left: Any, right: Any) -> Any:
    """Arithmetic on constants, within bounds that keep it instant."""
    numbers = _number(left) and _number(right)
    if numbers and _too_large(node.op, left, right):
        raise Unresolved(f"`{short(node)}` is too large a constant")
    if isinstance(node.op, ast.Mult) and not numbers:
        count, items = (left, right) if _number(left) else (right, left)
        if not isinstance(count, int) or abs(count) > _MAX_REPEAT:
            raise Unresolved(f"`{short(node)}` is not a small constant")
        _check_length(node, _length(items) * abs(count))
    elif not numbers and not (
        isinstance(node.op, ast.Add) and type(left) is type(right)
    ):
        raise Unresolved(f"`{short(node)}` is not arithmetic on constants")
    elif not numbers:
        _check_length(node, _length(left) + _length(right))
    try:
        return _BINARY[type(node.op)](left, right)
    except (TypeError, ValueError, ArithmeticError) as err:
        raise Unresolved(f"`{short(node)}` fails ({err})") from err


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | tuple | list) else 0


def _check_length(node: ast.BinOp, length: int) -> None:
    """Refuse to build a string or tuple longer than _MAX_LENGTH items."""
    if length > _MAX_LENGTH:
        raise Unresolved(
            f"`{short(node)}` would be {length:,} items long, over the "
            f"{_MAX_LENGTH:,} cnnlab builds from code"
        )


def _too_large(op: ast.operator, left: Any, right: Any) -> bool:
    """Whether `left op right` would pass _MAX_BITS (or take long to compute)."""
    if isinstance(op, ast.Pow):
        if abs(right) > _MAX_EXPONENT:
            return True
        if isinstance(left, float):  # a float overflows to an error, fast
            return False
        return abs(left).bit_length() * abs(right) > _MAX_BITS
    if isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
        return left.bit_length() + right.bit_length() > _MAX_BITS
    return False


def _index(node: ast.Subscript, value: Any, key: Any) -> Any:
    if isinstance(value, tuple | str) and isinstance(key, int | slice):
        try:
            return value[key]
        except (IndexError, TypeError, ValueError) as err:
            raise Unresolved(f"`{short(node)}` fails ({err})") from err
    raise Unresolved(f"`{short(node)}` is computed at run time")

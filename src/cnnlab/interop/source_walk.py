"""Walk Keras code in execution order and collect its Sequential models as built.

Recognised: `m = Sequential()` followed by `m.add(layer)` calls (across cells, in
order; assigning `m` again starts a new model), `Sequential([layer, ...])`,
`keras.Input(...)`/`InputLayer` as a first layer, and `m.compile(...)`/`m.fit(...)`
for the training protocol. Statements are followed as Python would run them, with
two rules for what only running could decide: `if K.image_data_format() ==
'channels_first'` takes the channels_last branch (cnnlab's order); any other
condition that is not constant is walked both ways, and a name the branches set
differently is unknown. Loops and function bodies are read once: names set in a loop
are unknown, layers added in one are refused, and a function's parameters are
unknown (a model built in a function takes the function's name).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import SpecError
from cnnlab.interop.source_code import (
    Cell,
    Scope,
    Unknown,
    Unresolved,
    keras_name,
    short,
    stored_names,
)
from cnnlab.interop.source_layers import Untranslatable, input_shape, layer_doc
from cnnlab.nn.spec import parse_layer
from cnnlab.training.config import OPTIMIZER_DEFAULTS

_FIT_ORDER = ("x", "y", "batch_size", "epochs", "verbose", "callbacks")
_FIT_DEFAULTS = {"epochs": 1, "batch_size": 32}  # Keras's, when fit() omits them
_FORMATS = {"channels_last": True, "tf": True, "channels_first": False, "th": False}
_FUNCTIONAL = ("Model", "Functional")
_FORMAT_QUERIES = ("image_data_format", "image_dim_ordering")
_KERAS1_FIT = {"nb_epoch": "epochs"}


@dataclass
class Build:
    """One Sequential model as the code builds it."""

    var: str  # the variable (or function) that holds it
    where: str  # location of the Sequential(...) call
    heading: str  # the nearest notebook heading above it
    given_name: str | None  # Sequential(name='...')
    layers: list[dict[str, Any]] = field(default_factory=list)
    input_shape: Any = None
    problems: list[str] = field(default_factory=list)  # each blocks the import
    train: dict[str, Any] = field(default_factory=dict)  # from its fit/compile


class Walker:
    """Reads cells in order; `builds` and `problems` hold what it found."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scope = Scope()
        self.builds: list[Build] = []
        self.problems: list[str] = []  # located notes that block no model
        self._live: dict[str, Build] = {}  # variable -> the model it holds now
        self._cell: Cell | None = None
        self._function: str | None = None

    def walk_cells(self, cells: list[Cell]) -> None:
        """Walk every cell's statements, in order, in one shared scope."""
        for cell in cells:
            self._cell = cell
            self._walk(cell.tree.body)

    def where(self, node: ast.AST) -> str:
        """'file:line', or 'file:cell N:line M' in a notebook."""
        line = getattr(node, "lineno", 1)
        if self._cell is None or self._cell.number is None:
            return f"{self.path}:{line}"
        return f"{self.path}:cell {self._cell.number}:line {line}"

    def _walk(self, stmts: list[ast.stmt], loop: bool = False) -> None:
        for stmt in stmts:
            self._statement(stmt, loop)

    def _statement(self, stmt: ast.stmt, loop: bool) -> None:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            self.scope.bind_import(stmt)
            for alias in stmt.names:
                self._live.pop(alias.asname or alias.name.split(".")[0], None)
        elif isinstance(stmt, ast.Assign):
            self._assign(stmt.targets, stmt.value, stmt, loop)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            self._assign([stmt.target], stmt.value, stmt, loop)
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            name = stmt.target.id
            total = ast.BinOp(ast.Name(name, ast.Load()), stmt.op, stmt.value)
            self.scope.bind(name, self.scope.try_value(total, name, self.where(stmt)))
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            self._method(stmt.value, loop)
        elif isinstance(stmt, ast.If):
            self._branch(stmt, loop)
        elif isinstance(stmt, ast.For | ast.AsyncFor | ast.While):
            self._loop(stmt)
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            self._walk(stmt.body, loop)
        elif isinstance(stmt, ast.Try | ast.TryStar):
            self._walk(stmt.body + stmt.orelse + stmt.finalbody, loop)
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            self._define(stmt)
        elif isinstance(stmt, ast.ClassDef):
            self.scope.bind(stmt.name, Unknown(f"`{stmt.name}` is a class"))
        elif isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Call):
            if self._function and self._kind(stmt.value.func) == "Sequential":
                self._start(self._function, stmt.value, loop)

    def _kind(self, func: ast.expr) -> str | None:
        return keras_name(self.scope.qualname(func))

    def _assign(
        self, targets: list[ast.expr], value: ast.expr, stmt: ast.stmt, loop: bool
    ) -> None:
        kind = self._kind(value.func) if isinstance(value, ast.Call) else None
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        for name in stored_names(targets):  # the variables no longer hold a model
            self._live.pop(name, None)
        if kind == "Sequential" and names:
            assert isinstance(value, ast.Call)
            build = self._start(self._function or names[0], value, loop)
            for name in names:
                self._live[name] = build
                self.scope.bind(name, Unknown(f"`{name}` is a Keras model"))
            return
        if kind in _FUNCTIONAL:
            self.problems.append(
                f"{self.where(stmt)}: `{short(value)}` is a functional-API model; "
                "cnnlab imports Sequential models only. Rewrite it as "
                "Sequential([...]) of its layers."
            )
        elif isinstance(value, ast.Call):
            self._method(value, loop)  # history = model.fit(...)
        for target in targets:
            self.scope.assign(target, value, self.where(stmt))

    def _start(self, var: str, call: ast.Call, loop: bool) -> Build:
        """A new model from a `Sequential(...)` call, with the layers it lists."""
        args = {k.arg: k.value for k in call.keywords if k.arg}
        args.update(zip(("layers", "name"), call.args, strict=False))
        name = args.get("name")
        given = name.value if isinstance(name, ast.Constant) else None
        given = given if isinstance(given, str) else None  # name=5: Keras refuses it
        heading = self._cell.heading if self._cell else ""
        build = Build(var, self.where(call), heading, given)
        self.builds.append(build)
        if loop:
            build.problems.append(
                f"{build.where}: the model is built in a loop; write it out once."
            )
        listed = args.get("layers")
        if isinstance(listed, ast.List | ast.Tuple):
            for item in listed.elts:
                self._add(build, item)
        elif listed is not None and not (
            isinstance(listed, ast.Constant) and listed.value is None
        ):
            build.problems.append(
                f"{self.where(listed)}: the layer list `{short(listed)}` is known only "
                "at run time; write the layers in Sequential([...])."
            )
        return build

    def _method(self, call: ast.Call, loop: bool) -> None:
        """`m.add(...)`, `m.fit(...)` or `m.compile(...)` on a model being built."""
        func = call.func
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
            return
        build = self._live.get(func.value.id)
        if build is None:
            return
        if func.attr == "add" and loop:
            build.problems.append(
                f"{self.where(call)}: layers are added in a loop; write each "
                "model.add(...) out."
            )
        elif func.attr == "add" and len(call.args) == 1:
            self._add(build, call.args[0])
        elif func.attr == "fit":
            self._fit(build, call)
        elif func.attr == "compile":
            self._compile(build, call)

    def _add(self, build: Build, node: ast.expr) -> None:
        """Translate one layer (a Keras layer call) into the model, or say why not."""
        where = self.where(node)
        kind = self._kind(node.func) if isinstance(node, ast.Call) else None
        if not isinstance(node, ast.Call) or kind is None:
            build.problems.append(
                f"{where}: `{short(node)}` is not a Keras layer call (a layer held in "
                "a variable or made by a function is known only at run time); write "
                "the layer call itself, e.g. model.add(Dense(10))."
            )
            return
        try:
            if kind in ("Input", "InputLayer"):
                if build.layers or build.input_shape is not None:
                    raise Untranslatable("an input layer must come first")
                build.input_shape = input_shape(node, self.scope)
                return
            doc, shape = layer_doc(kind, node, self.scope)
            parse_layer(doc, source=where, index=len(build.layers))
        except Untranslatable as err:
            build.problems.append(f"{where}: `{short(node)}`: {err}.")
            return
        except SpecError as err:
            build.problems.append(f"{err}")
            return
        if shape is not None and not build.layers and build.input_shape is None:
            build.input_shape = shape  # later layers' input_shape: ignored, as Keras
        build.layers.append(doc)

    def _fit(self, build: Build, call: ast.Call) -> None:
        """epochs, batch_size and validation of a `fit` call (Keras's defaults if
        omitted)."""
        args = dict(zip(_FIT_ORDER, call.args, strict=False))
        for keyword in call.keywords:  # Keras 1 spelled epochs nb_epoch
            if keyword.arg:
                args[_KERAS1_FIT.get(keyword.arg, keyword.arg)] = keyword.value
        for key, default in _FIT_DEFAULTS.items():
            build.train[key] = default
            if key not in args:
                continue
            try:
                build.train[key] = self.scope.value(args[key])
            except Unresolved as err:
                self.problems.append(
                    f"{self.where(args[key])}: {key}={short(args[key])}: {err}; the "
                    f"study uses Keras's default {key}={default}."
                )
        data = args.get("validation_data")
        on_test = data is not None and any(
            "test" in n.id.lower() for n in ast.walk(data) if isinstance(n, ast.Name)
        )
        build.train["validation"] = "test" if on_test else "holdout"

    def _compile(self, build: Build, call: ast.Call) -> None:
        """The optimizer (and its lr, if constant) of a `compile` call."""
        node = next((k.value for k in call.keywords if k.arg == "optimizer"), None)
        node = node if node is not None or not call.args else call.args[0]
        if node is None:
            build.train["optimizer"] = "rmsprop"  # Keras's compile() default
            return
        inner = node.func if isinstance(node, ast.Call) else node
        if isinstance(inner, ast.Constant):
            name = str(inner.value)
        else:
            name = self._kind(inner) or short(inner)
        if name.lower() not in OPTIMIZER_DEFAULTS:
            self.problems.append(
                f"{self.where(node)}: optimizer {short(node)} is not one cnnlab has "
                f"({', '.join(OPTIMIZER_DEFAULTS)}); the study uses adam."
            )
            return
        build.train["optimizer"] = name.lower()
        for keyword in node.keywords if isinstance(node, ast.Call) else []:
            if keyword.arg in ("lr", "learning_rate"):
                try:
                    build.train["lr"] = float(self.scope.value(keyword.value))
                    continue
                except (Unresolved, TypeError, ValueError):
                    pass
            self.problems.append(
                f"{self.where(keyword)}: {short(keyword)} is not a study setting "
                f"cnnlab reads; the study uses {name}'s defaults for it."
            )

    def _branch(self, stmt: ast.If, loop: bool) -> None:
        truth = self._condition(stmt.test)
        if truth is not None:
            self._walk(stmt.body if truth else stmt.orelse, loop)
            return
        # Only names the branches mention can change: save and restore those, not
        # the whole scope (a copy per `if` made a long file's walk quadratic).
        touched = identifiers(stmt.body + stmt.orelse)
        before = _saved(self.scope.names, touched)
        self._walk(stmt.body, loop)
        after_body = _saved(self.scope.names, touched)
        _restore(self.scope.names, before, touched)
        self._walk(stmt.orelse, loop)
        for name in stored_names(stmt.body + stmt.orelse):
            if after_body.get(name) != self.scope.names.get(name):
                test = f"the condition `{short(stmt.test)}` ({self.where(stmt)})"
                self.scope.bind(name, Unknown(f"`{name}` depends on {test}"))

    def _condition(self, test: ast.expr) -> bool | None:
        """The branch the code takes, where it is known without running it."""
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            sides = (test.left, test.comparators[0])
            call = next((s for s in sides if isinstance(s, ast.Call)), None)
            text = next((s.value for s in sides if isinstance(s, ast.Constant)), None)
            asks = call is not None and self._kind(call.func) in _FORMAT_QUERIES
            if asks and text in _FORMATS and isinstance(test.ops[0], ast.Eq):
                return _FORMATS[text]  # True when the test asks for channels_last
            if asks and text in _FORMATS and isinstance(test.ops[0], ast.NotEq):
                return not _FORMATS[text]
        try:
            return bool(self.scope.value(test))
        except Unresolved:
            return None

    def _loop(self, stmt: ast.For | ast.AsyncFor | ast.While) -> None:
        self._walk(stmt.body + stmt.orelse, loop=True)
        target = [stmt.target] if isinstance(stmt, ast.For | ast.AsyncFor) else []
        for name in stored_names(stmt.body + stmt.orelse) | stored_names(target):
            where = self.where(stmt)
            self.scope.bind(name, Unknown(f"`{name}` is set in the loop at {where}"))

    def _define(self, stmt: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """Read a function body once, its parameters unknown, its names its own."""
        touched = identifiers([stmt])
        tables = (self.scope.names, self.scope.imports, self._live)
        saved = [_saved(table, touched) for table in tables]
        a = stmt.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
        for p in filter(None, params):
            reason = f"`{p.arg}` is a parameter of {stmt.name}(), known when called"
            self.scope.bind(p.arg, Unknown(reason))
        outer, self._function = self._function, stmt.name
        self._walk(stmt.body)
        self._function = outer
        for table, kept in zip(tables, saved, strict=True):
            _restore(table, kept, touched)
        self.scope.bind(stmt.name, Unknown(f"`{stmt.name}` is a function"))


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def identifiers(nodes: list[ast.stmt]) -> set[str]:
    """Every name the statements could bind or unbind: variables, imported names,
    functions, classes and parameters (a superset of what a walk changes)."""
    found: set[str] = set()
    for stmt in nodes:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name):
                found.add(node.id)
            elif isinstance(node, ast.alias):
                found.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, _DEFINITIONS):
                found.add(node.name)
            elif isinstance(node, ast.arg):
                found.add(node.arg)
            elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar):
                found.update(filter(None, [node.name]))
            elif isinstance(node, ast.Global | ast.Nonlocal):
                found.update(node.names)
    return found


def _saved(table: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    """The entries of `table` under `keys` (absent keys left out)."""
    return {k: table[k] for k in keys if k in table}


def _restore(table: dict[str, Any], saved: dict[str, Any], keys: set[str]) -> None:
    """Put `table`'s entries under `keys` back to `saved` (removing the others)."""
    for key in keys:
        if key in saved:
            table[key] = saved[key]
        else:
            table.pop(key, None)

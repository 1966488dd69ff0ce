"""What cnnlab sends to a terminal: user text with its control characters shown,
not sent, output streams that survive a reader that went away, and tables that
fit the console's width."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

# C0 and C1 controls and DEL: ESC starts terminal commands (colours, cursor moves,
# window titles), BEL rings, CR overwrites the line. Tab and newline are kept.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def shown(text: str, *, one_line: bool = False) -> str:
    """`text` for a terminal: each control character replaced by its visible
    escape ('\\x1b', '\\x07'), so a name from a file cannot drive the terminal.
    `one_line`: newlines too ('\\n'), for a line that must stay one line (an
    error, a prediction) whatever a file name holds."""
    pattern = _CONTROL_OR_NEWLINE if one_line else _CONTROL
    return pattern.sub(lambda m: repr(m.group())[1:-1], text)


class PipeSafe:
    """A text stream that, once its reader has gone (`cnnlab train | head -1`),
    drops further output instead of raising BrokenPipeError into the command.

    A closed pipe must not stop a training run: the run folder records everything
    the output would have shown.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_pipe = False

    def _guard(self, call: str, *args: Any) -> Any:
        if self.closed_pipe:
            return len(args[0]) if call == "write" else None
        try:
            return getattr(self._stream, call)(*args)
        except BrokenPipeError:
            self.closed_pipe = True
            try:  # at exit Python flushes the stream again: point it at nothing
                os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
            except (OSError, ValueError):
                pass
            return len(args[0]) if call == "write" else None

    def write(self, text: str) -> int:
        return self._guard("write", text)

    def flush(self) -> None:
        self._guard("flush")

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


def print_table(console: Any, table: Any) -> None:
    """A rich table, or, on a console too narrow for its headers (COLUMNS=20),
    each row as 'header: value' lines, which stay readable at any width."""
    columns = table.columns
    needed = sum(len(str(c.header)) + 3 for c in columns) + 1
    if console.width >= needed:
        console.print(table)
        return
    from rich.text import Text

    def text(value: Any) -> Text:  # table strings are markup, as the table shows them
        return Text.from_markup(value) if isinstance(value, str) else Text(str(value))

    if table.title:
        console.print(text(table.title), highlight=False)
    for row in zip(*(c.cells for c in columns), strict=True):
        console.print()
        for column, cell in zip(columns, row, strict=True):
            line = Text.assemble(text(column.header), ": ", text(cell))
            console.print(line, highlight=False)


# A log file or pipe without COLUMNS: wide enough for a report table on one line.
PIPE_WIDTH = 160


def output_console() -> Any:
    """A rich console on stdout: the terminal's width, COLUMNS when set, and
    PIPE_WIDTH for a log file or pipe (no 80-column squeeze there)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console = Console(width=PIPE_WIDTH)
    return console


@dataclass(frozen=True)
class Col:
    """A column of a table that fits the console: `kind` is "name" (a label:
    left, wraps only if it must), "number" (right, never split inside a value) or
    "text" (sentences and paths: left, wraps freely). On a narrow console the
    columns with the highest `drop` are left out first; 0 is never left out."""

    header: str
    kind: str = "number"
    drop: int = 0
    fold: int = 0  # the narrowest a name or text column folds to; 0: the default


# Rich draws a table with one space of padding on each side of a cell and a rule
# between cells and at both ends: 3 characters per column, plus 1.
_RULES = 3
_NAME_MIN = 16  # a name column folds no narrower than this (or its header)
_TEXT_MIN = 12  # nor a sentence or path column


def fit_columns(
    columns: Sequence[Col], rows: Sequence[Sequence[str]], width: int
) -> tuple[list[int], list[int]] | None:
    """Which columns to show and how wide, so that the table fits in `width`;
    None when even the columns never left out do not fit."""
    natural = [_natural(c, [r[i] for r in rows]) for i, c in enumerate(columns)]
    least = [_least(c, [r[i] for r in rows]) for i, c in enumerate(columns)]
    keep = list(range(len(columns)))

    def room(kept: list[int], widths: Sequence[int]) -> int:
        return width - sum(widths[i] for i in kept) - _RULES * len(kept) - 1

    while room(keep, least) < 0:
        droppable = [i for i in keep if columns[i].drop > 0]
        if not droppable:
            return None
        keep.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    widths = list(natural)
    excess = -room(keep, widths)
    # narrow the widest shrinkable column one step at a time: sentences and names
    # first, then number headers (which wrap between words)
    for kinds in (("text", "name"), ("number",)):
        while excess > 0:
            shrink = [
                i for i in keep if columns[i].kind in kinds and widths[i] > least[i]
            ]
            if not shrink:
                break
            i = max(shrink, key=lambda i: widths[i] - least[i])
            widths[i] -= 1
            excess -= 1
    return keep, [widths[i] for i in keep]


def _natural(col: Col, cells: Sequence[str]) -> int:
    return max([len(col.header), *(_longest_line(c) for c in cells)])


def _least(col: Col, cells: Sequence[str]) -> int:
    words = max((len(w) for w in col.header.split()), default=1)
    if col.kind == "number":
        return max([words, *(len(c) for c in cells)])
    floor = col.fold or (_NAME_MIN if col.kind == "name" else _TEXT_MIN)
    return min(_natural(col, cells), max(words, floor))


def _longest_line(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def print_fitted(
    console: Any,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str]],
    title: str = "",
) -> list[str]:
    """A table of plain strings (control characters are shown, markup is not
    read) fitted to the console's width; returns the headers it left out. Too
    narrow even for the columns never left out: each row as 'header: value'."""
    from rich.table import Table
    from rich.text import Text

    fitted = fit_columns(columns, rows, console.width)
    if fitted is None:
        _print_rows(console, columns, rows, title)
        return []
    keep, widths = fitted
    table = Table(title=Text(shown(title)) if title else None, title_justify="left")
    for i, w in zip(keep, widths, strict=True):
        col = columns[i]
        justify = "right" if col.kind == "number" else "left"
        table.add_column(
            Text(shown(col.header)), justify=justify, width=w, overflow="fold"
        )
    for row in rows:
        table.add_row(*(Text(shown(row[i])) for i in keep))
    console.print(table)
    return [c.header for i, c in enumerate(columns) if i not in keep]


def _print_rows(
    console: Any, columns: Sequence[Col], rows: Sequence[Sequence[str]], title: str
) -> None:
    from rich.text import Text

    if title:
        console.print(Text(shown(title)))
    for row in rows:
        console.print()
        for col, cell in zip(columns, row, strict=True):
            console.print(Text(f"{shown(col.header)}: {shown(cell)}"))

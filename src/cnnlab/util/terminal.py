"""What cnnlab sends to a terminal: user text with its control characters shown,
not sent, and output streams that survive a reader that went away."""

from __future__ import annotations

import os
import re
from typing import Any, TextIO

# C0 and C1 controls and DEL: ESC starts terminal commands (colours, cursor moves,
# window titles), BEL rings, CR overwrites the line. Tab and newline are kept.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """`text` for a terminal: each control character replaced by its visible
    escape ('\\x1b', '\\x07'), so a name from a file cannot drive the terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


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

"""A `Document` in the terminal: the sections meant for it, each table fitted to
the console's width (columns wrap, or the least telling are left out and named).

Like the file renderers, this adds no words to the report; every string passes
through `shown`, so a name from a store cannot drive the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text

from cnnlab.reporting.document import Audience, Document, Paragraph, Style, Table
from cnnlab.util.terminal import Col, print_fitted, shown

_STYLES = {Style.WARNING: "bold yellow", Style.NOTE: "italic"}


def print_document(doc: Document, console: Any) -> None:
    """The document's terminal blocks, section by section, within the width."""
    for block in doc.intro:
        _print_block(block, console)
    for section in doc.sections:
        if section.audience is Audience.FILES:
            continue
        blocks = [b for b in section.blocks if b.audience is not Audience.FILES]
        if not blocks:
            continue
        console.print()
        console.print(Text(shown(section.heading), style="bold underline"))
        for block in blocks:
            _print_block(block, console)


def _print_block(block: Any, console: Any) -> None:
    if block.audience is Audience.FILES:
        return
    if isinstance(block, Table):
        print_table(block, console)
    elif isinstance(block, Paragraph):
        text = Text("- " if block.style is Style.ITEM else "")
        if block.lead:
            text.append(shown(block.lead) + " ", style="bold")
        text.append(shown(block.text), style=_STYLES.get(block.style, ""))
        console.print(text)


def print_table(t: Table, console: Any) -> None:
    """The table's terminal columns under their short headings; those left out
    for the width are named on one line after it."""
    shown_at = [i for i, c in enumerate(t.columns) if c.terminal]
    cols = [
        Col(t.columns[i].terminal_header, t.columns[i].kind.value, t.columns[i].drop)
        for i in shown_at
    ]
    rows = [[row[i] for i in shown_at] for row in t.rows]
    dropped = print_fitted(console, cols, rows, t.caption)
    if dropped:
        console.print(
            Text(
                f"(left out at {console.width} columns: "
                f"{', '.join(map(shown, dropped))})",
                style="dim",
            )
        )


_TRIAL_COLUMNS = (
    Col("study", "name", fold=10),
    Col("architecture", "name", fold=10),
    Col("seed"),
    Col("status", "name"),
    Col("epochs", drop=1),
    Col("precision", drop=1),
    Col("test acc %"),
    Col("run", "text"),  # the whole path, wrapped: a reader copies it
)


def print_trials(console: Any, store: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """`cnnlab runs`: one line per trial of the store, run paths shown whole."""
    cells = []
    for r in rows:
        acc = "-" if r["test_acc"] is None else f"{100 * r['test_acc']:.2f}"
        cells.append(
            [
                str(r["study"]),
                str(r["label"]),
                str(r["seed"]),
                str(r["status"]),
                str(r["epochs"]),
                str(r.get("precision") or "fp32"),  # older rows: float32
                acc,
                str(r["run_path"]),
            ]
        )
    print_fitted(console, _TRIAL_COLUMNS, cells, f"Trials in {store}")

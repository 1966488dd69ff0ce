"""A report as a document: ordered sections of paragraphs, tables, figures and code.

A report is built once as a `Document` (its headings, sentences, tables and figures,
all in their final wording) and then rendered by `cnnlab.reporting.render`
(Markdown, HTML, CSV) and `cnnlab.reporting.console` (the terminal). The renderers
add no prose and escape every string for their format; the document holds plain
text.

Where a block appears is part of the document too: `Audience.FILES` blocks (the
methods paragraph, figures) stay out of the terminal summary, `Audience.TERMINAL`
ones (a table's one-line caption) out of the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class Audience(Enum):
    """Where a block is shown."""

    ALL = "all"
    FILES = "files"  # report.md, report.html, report.csv
    TERMINAL = "terminal"  # the summary printed after a study, and `cnnlab report`


class Style(Enum):
    """How a paragraph stands out; each renderer shows the style its own way."""

    PLAIN = "plain"
    WARNING = "warning"  # the protocol's warning: bold, boxed
    ITEM = "item"  # one of a list of findings (verdicts): a bullet in Markdown
    NOTE = "note"  # an aside: italic


class ColumnKind(Enum):
    """What a column holds, which decides alignment, wrapping and dropping."""

    NAME = "name"  # a label or name: left, wraps only if it must
    NUMBER = "number"  # numbers with units: right, never wraps inside a value
    TEXT = "text"  # sentences, lists or paths: left, wraps freely


class FigureKind(Enum):
    """Where a figure belongs in a report."""

    TRAINING = "training"  # curves, validation overlays, accuracy against cost
    ERRORS = "errors"  # confusion matrices, galleries of mistakes, hard images
    SEARCH = "search"  # optimisation history, importances, parallel coordinates


@dataclass(frozen=True)
class Paragraph:
    text: str
    lead: str = ""  # shown strong before the text ("mlp: overfitting.")
    style: Style = Style.PLAIN
    audience: Audience = Audience.ALL


@dataclass(frozen=True)
class Column:
    header: str
    kind: ColumnKind = ColumnKind.NUMBER
    short: str = ""  # the terminal's header, when shorter than `header`
    terminal: bool = True  # shown in the terminal at all
    drop: int = 0  # 0: always shown; 1, 2, ...: left out first (highest) when narrow

    @property
    def terminal_header(self) -> str:
        return self.short or self.header


@dataclass(frozen=True)
class Table:
    name: str  # a stable key: the CSV's table name, the HTML table's class
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""  # the terminal's title line
    audience: Audience = Audience.ALL

    @property
    def headers(self) -> list[str]:
        return [c.header for c in self.columns]


@dataclass(frozen=True)
class Figure:
    name: str
    path: Path
    kind: FigureKind
    audience: Audience = Audience.FILES


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""
    audience: Audience = Audience.FILES


Block = Paragraph | Table | Figure | Code


@dataclass(frozen=True)
class Section:
    heading: str
    blocks: tuple[Block, ...]
    audience: Audience = Audience.ALL


@dataclass(frozen=True)
class Document:
    title: str  # the page's first heading
    intro: tuple[Paragraph, ...]  # before the first section
    sections: tuple[Section, ...]
    page_title: str = ""  # the HTML page's <title>; `title` if empty

    def tables(self) -> list[Table]:
        """Every table of the files, in order (the CSV renderer's input)."""
        return [
            b
            for s in self.sections
            if s.audience is not Audience.TERMINAL
            for b in s.blocks
            if isinstance(b, Table) and b.audience is not Audience.TERMINAL
        ]


def table(
    name: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    caption: str = "",
    audience: Audience = Audience.ALL,
) -> Table:
    """A table with its rows as tuples of strings."""
    return Table(name, tuple(columns), tuple(tuple(r) for r in rows), caption, audience)


@dataclass
class Builder:
    """Sections added in order; a section with no blocks is left out."""

    sections: list[Section] = field(default_factory=list)

    def add(
        self, heading: str, *blocks: Block | None, audience: Audience = Audience.ALL
    ) -> None:
        kept = tuple(b for b in blocks if b is not None)
        if kept:
            self.sections.append(Section(heading, kept, audience))
